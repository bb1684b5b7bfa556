"""The httpx client behind every chat-completions provider, with retries."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import httpx
from httpx_sse import EventSource

from arbe_adapters.llm._failures import (
    Failure,
    Target,
    give_up,
    parse_retry_after,
    status_failure,
)
from arbe_adapters.llm._wire import ReplyBuilder, WireError, find_error, request_body
from arbe_core.chat import ChatMessage, ChatReply, ProviderContext, ToolSpec
from arbe_core.errors import InvalidInput, Transient

__all__ = ["DEFAULT_TIMEOUT", "ChatCompletionsModel"]

#: Connect, write and pool timeouts, and a longer read timeout because a
#: model may think for minutes before its first token.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)
#: Seconds one `complete` call may take in all, retries and keep-alive
#: comments included, so a provider that never finishes cannot hold a
#: dispatch for longer.
DEFAULT_CALL_DEADLINE_S = 900.0


class ChatCompletionsModel:
    """A `ChatModel` over a streaming chat-completions endpoint.

    Subclasses name the provider, its key and its base-URL setting, and
    implement `_connect`.

    Args:
        context: the model id, the credential and the config lookup.
        max_attempts: attempts per call, the first one included.
        base_delay: seconds before the first retry. Each retry doubles it, up
            to `max_delay`, and waits a random 50 to 100 % of that (jitter).
        max_delay: the maximum backoff in seconds. A longer `Retry-After`
            still wins.
        max_total_wait: seconds of waiting allowed across the retries of one
            call. A wait that would pass it ends the call with the last error.
        timeout: the httpx timeout of each request.
        transport: an httpx transport for the client made per call (tests
            pass `httpx.MockTransport`); it is closed with that client.
        client: an httpx client to send every call through instead; the
            caller owns it and closes it.
        sleep: the function that waits between attempts.
    """

    provider: ClassVar[str]
    key_name: ClassVar[str]
    base_url_name: ClassVar[str]
    #: A base URL shown as an example when the configured one is invalid.
    example_base_url: ClassVar[str]
    logger: ClassVar[logging.Logger]

    def __init__(
        self,
        context: ProviderContext,
        *,
        max_attempts: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 20.0,
        max_total_wait: float = 60.0,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        call_deadline: float = DEFAULT_CALL_DEADLINE_S,
    ) -> None:
        if max_attempts < 1:
            msg = f"max_attempts must be at least 1, got {max_attempts}."
            raise ValueError(msg)
        self.model = context.model
        base_url, self._key = self._connect(context)
        self.base_url = self._check_base_url(base_url)
        self._max_attempts = max_attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._max_total_wait = max_total_wait
        self._timeout = timeout
        self._transport = transport
        self._client = client
        self._sleep = sleep
        self._call_deadline = call_deadline
        self._deadline = time.monotonic() + call_deadline

    @property
    def ref(self) -> str:
        """The model ref as users write it, such as `openrouter/anthropic/…`."""
        return f"{self.provider}/{self.model}"

    @property
    def shown_base_url(self) -> str:
        """The base URL without any user name or password in it."""
        return str(httpx.URL(self.base_url).copy_with(username=None, password=None))

    @property
    def service(self) -> str:
        """The server, as error messages name it at the start of a sentence."""
        raise NotImplementedError

    def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ChatReply:
        """Call the model once, with retries, and return its reply.

        Tool calls are returned whenever the reply has any, whatever its
        finish reason. 429, 408, 5xx, transport errors and a stream cut
        short are retried with exponential backoff, honouring `Retry-After`.

        Raises:
            CredentialMissing: the server wants a key and none is set.
            CredentialRejected: the server rejected the key (401).
            RateLimited: still rate-limited when the retries ran out.
            Transient: still failing when the retries ran out.
            InvalidInput: the request was rejected (400, 403, 404).
            Unavailable: the account is out of credits (402).
        """
        body = request_body(self.model, messages, tools, self._extra_body())
        self._deadline = time.monotonic() + self._call_deadline
        with self._open_client() as client:
            return self._complete_with_retries(client, body)

    # --- Provider specifics --------------------------------------------------

    def _connect(self, context: ProviderContext) -> tuple[str, str | None]:
        """Return the base URL and the key (or None) to send."""
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _extra_body(self) -> dict[str, object]:
        return {}

    # --- Retries -------------------------------------------------------------

    @contextmanager
    def _open_client(self) -> Iterator[httpx.Client]:
        if self._client is not None:
            yield self._client
            return
        with httpx.Client(timeout=self._timeout, transport=self._transport) as client:
            yield client

    def _complete_with_retries(
        self, client: httpx.Client, body: Mapping[str, object]
    ) -> ChatReply:
        waited = 0.0
        attempt = 1
        while True:
            try:
                reply = self._attempt(client, body)
            except Failure as failure:
                delay = self._retry_delay(failure, attempt, waited)
                self._sleep(delay)
                waited += delay
                attempt += 1
                continue
            self._log_call("200", attempt, reply)
            return reply

    def _retry_delay(self, failure: Failure, attempt: int, waited: float) -> float:
        """Return the wait before the next attempt, or raise the final error."""
        if failure.error is not None:
            self._log_call(failure.status, attempt, None)
            raise failure.error from failure.__cause__

        delay = self._backoff(attempt, failure.retry_after)
        past_deadline = time.monotonic() + delay > self._deadline
        over_budget = waited + delay > self._max_total_wait or past_deadline
        if attempt >= self._max_attempts or over_budget:
            self._log_call(failure.status, attempt, None)
            next_delay = delay if attempt < self._max_attempts else None
            target = self._target()
            error = give_up(target, failure, attempt, next_delay, self._max_total_wait)
            raise error from failure.__cause__

        self.logger.warning(
            "%s call: model=%s status=%s; retry %d of %d in %.2f s",
            self.provider,
            self.model,
            failure.status,
            attempt,
            self._max_attempts - 1,
            delay,
        )
        return delay

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        # The exponent is capped so a large `max_attempts` cannot overflow.
        growth = 2.0 ** min(attempt - 1, 60)
        ceiling = min(self._max_delay, self._base_delay * growth)
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _log_call(self, status: str, attempts: int, reply: ChatReply | None) -> None:
        usage = reply.usage if reply is not None else None
        self.logger.info(
            "%s call: model=%s status=%s attempts=%d prompt_tokens=%d "
            "completion_tokens=%d finish_reason=%s",
            self.provider,
            self.model,
            status,
            attempts,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            reply.finish_reason if reply else None,
        )

    # --- One attempt ---------------------------------------------------------

    def _attempt(self, client: httpx.Client, body: Mapping[str, object]) -> ChatReply:
        url = f"{self.base_url}/chat/completions"
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._past_deadline()
        try:
            with client.stream(
                "POST",
                url,
                json=body,
                headers=self._headers(),
                timeout=self._attempt_timeout(remaining),
            ) as response:
                # Keep-alive comments reset the read timeout, so a watchdog
                # closes a response that is still open at the deadline.
                watchdog = threading.Timer(remaining, response.close)
                watchdog.daemon = True
                watchdog.start()
                try:
                    return self._read(response)
                except (httpx.HTTPError, httpx.StreamError) as exc:
                    if time.monotonic() >= self._deadline:
                        raise self._past_deadline() from exc
                    raise
                finally:
                    watchdog.cancel()
        except httpx.RequestError as exc:
            if time.monotonic() >= self._deadline:
                raise self._past_deadline() from exc
            reason = type(exc).__name__
            if str(exc):
                reason += f": {self._scrub(str(exc))}"
            raise Failure("transport", "transport", reason) from exc

    def _attempt_timeout(self, remaining: float) -> httpx.Timeout:
        """Cap each socket read at the time left, so a silent server ends in time."""
        base = httpx.Timeout(self._timeout)
        read = remaining if base.read is None else min(base.read, remaining)
        return httpx.Timeout(
            connect=base.connect, read=read, write=base.write, pool=base.pool
        )

    def _past_deadline(self) -> Failure:
        error = Transient(
            f"Model {self.ref} sent no complete reply within "
            f"{self._call_deadline:.0f} s; try again later or pick another model "
            "with `arbe thread create --model REF`."
        )
        return Failure("deadline", "final", "no complete reply in time", error=error)

    def _read(self, response: httpx.Response) -> ChatReply:
        if not response.is_success:
            response.read()
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wire = self._error_of(response)
            raise status_failure(self._target(), wire.status, wire, retry_after)
        content_type = response.headers.get("Content-Type", "")
        if "text/event-stream" in content_type:
            return self._read_stream(response)

        response.read()
        payload = self._decode(response.text)
        self._raise_on_error(payload)
        if not isinstance(payload.get("choices"), list):
            raise Failure("200", "server", "the response body has no choices")
        builder = ReplyBuilder()
        builder.add_completion(payload)
        return builder.build()

    def _read_stream(self, response: httpx.Response) -> ChatReply:
        builder = ReplyBuilder()
        for event in EventSource(response).iter_sse():
            if event.data == "[DONE]":
                return builder.build()
            if not event.data.strip():
                continue
            chunk = self._decode(event.data)
            self._raise_on_error(chunk)
            builder.add_chunk(chunk)

        # OpenRouter may end a stream after the finish reason without sending
        # `[DONE]`, so only a stream missing both is cut short.
        if builder.finish_reason is None:
            reason = "the response stream ended before a finish reason or [DONE]"
            raise Failure("stream ended", "stream", reason)
        return builder.build()

    def _decode(self, text: str) -> Mapping[str, Any]:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise Failure("200", "server", "the response is not a JSON object")
        return payload

    def _raise_on_error(self, payload: Mapping[str, Any]) -> None:
        wire = find_error(payload)
        if wire is not None:
            scrubbed = WireError(wire.status, self._scrub(wire.message), wire.metadata)
            raise status_failure(self._target(), wire.status, scrubbed, None)

    def _error_of(self, response: httpx.Response) -> WireError:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        wire = find_error(payload) if isinstance(payload, dict) else None
        message = wire.message if wire is not None else response.text
        metadata = wire.metadata if wire is not None else {}
        return WireError(response.status_code, self._scrub(message), metadata)

    # --- Helpers -------------------------------------------------------------

    def _target(self) -> Target:
        return Target(
            provider=self.provider,
            model=self.model,
            service=self.service,
            key_name=self.key_name,
            has_key=bool(self._key),
            base_url_name=self.base_url_name,
            base_url=self.shown_base_url,
        )

    def _scrub(self, text: str) -> str:
        """Replace the key in server-supplied text, in case a server echoes it."""
        return text.replace(self._key, "***") if self._key else text

    def _check_base_url(self, base_url: str) -> str:
        url = httpx.URL(base_url.strip())
        if url.scheme not in ("http", "https") or not url.host:
            display_url = str(url.copy_with(username=None, password=None))
            msg = (
                f"{self.base_url_name} {display_url!r} is not an http or https "
                f"URL. Set it to the API's base URL, such as {self.example_base_url}."
            )
            raise InvalidInput(msg)
        return str(url).rstrip("/")
