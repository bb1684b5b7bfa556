"""Classification, retry decisions and messages for failed chat-completions calls.

Every message names the model ref and the fix. None contains the key: the
client scrubs server text before it reaches these functions.
"""

from __future__ import annotations

import http
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import final

import attrs

from arbe_adapters.llm._wire import WireError
from arbe_core.errors import (
    ArbeError,
    CredentialMissing,
    CredentialRejected,
    InvalidInput,
    RateLimited,
    Transient,
    Unavailable,
)

__all__ = ["Failure", "Target", "give_up", "parse_retry_after", "status_failure"]

#: Maximum length, in characters, of a server message quoted in an error.
_DETAIL_LIMIT = 300


@final
@attrs.frozen
class Target:
    """The model and server a call goes to, as error messages name them."""

    provider: str
    model: str
    #: The server, such as `OpenRouter`, written to start a sentence.
    service: str
    key_name: str
    #: Whether a key is sent. A 401 without one means the key is missing.
    has_key: bool
    base_url_name: str
    #: The base URL without any user name or password in it.
    base_url: str

    @property
    def ref(self) -> str:
        """The model ref as users write it, such as `openrouter/anthropic/…`."""
        return f"{self.provider}/{self.model}"


class Failure(Exception):
    """One failed attempt: either the final error, or a reason to retry.

    `kind` is `final` (raise `error`), or one of the retryable kinds:
    `rate_limit`, `server`, `transport` or `stream`.
    """

    def __init__(
        self,
        status: str,
        kind: str,
        reason: str,
        *,
        error: ArbeError | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status)
        #: The HTTP status or failure label, for the log line.
        self.status = status
        self.kind = kind
        self.reason = reason
        self.error = error
        self.retry_after = retry_after


def status_failure(
    target: Target, status: int, wire: WireError, retry_after: float | None
) -> Failure:
    """Classify an HTTP status, or an error event equivalent to one.

    429, 408 and 5xx are retryable, and so is a 402 that OpenRouter sends when
    too many requests of the account are in flight at once (its
    `metadata.limit_source` is `openrouter_in_flight_budget`).
    """
    detail = _detail(status, wire.message)
    in_flight = wire.metadata.get("limit_source") == "openrouter_in_flight_budget"
    if status == 429 or (status == 402 and in_flight):
        return Failure(str(status), "rate_limit", detail, retry_after=retry_after)
    if status == 408 or status >= 500:
        return Failure(str(status), "server", detail, retry_after=retry_after)
    error = _final_error(target, status, wire, detail)
    return Failure(str(status), "final", detail, error=error)


def _final_error(
    target: Target, status: int, wire: WireError, detail: str
) -> ArbeError:
    ref = target.ref
    if status == 401 and not target.has_key:
        needed_by = f"Model {ref!r} on {_lower_first(target.service)}"
        return CredentialMissing(target.key_name, needed_by)
    if status == 401:
        return CredentialRejected(target.key_name, f"{target.service} (model {ref!r})")
    if status == 402:
        return Unavailable(
            f"{target.service} refused model {ref!r} for lack of credits "
            f"({detail}). Add credits to the account of {target.key_name}, or "
            f"use a cheaper model."
        )
    if status == 403:
        return InvalidInput(
            f"{target.service} refused the request to model {ref!r} ({detail}). "
            f"Either moderation flagged the input or the key may not use this "
            f"model; change the input, or the key's limits."
        )
    if status == 404 and "tool" in wire.message.lower():
        return InvalidInput(
            f"Model {ref!r} has no endpoint on {_lower_first(target.service)} "
            f"that supports "
            f"tool calls ({detail}). Use a model with tool support "
            f"(`arbe agent create NAME --model REF`), or a thread without an "
            f"environment, where no tools are offered."
        )
    if status == 404:
        return InvalidInput(
            f"Model {ref!r} was not found on {_lower_first(target.service)} "
            f"({detail}). Check "
            f"the model id, and set a valid one with `--model {target.provider}/MODEL`."
        )
    if wire.error_type == "context_length_exceeded":
        return InvalidInput(
            f"Model {ref!r} rejected the request as longer than its context "
            f"({detail}). Start a new thread, or use a model with a longer context."
        )
    return InvalidInput(
        f"{target.service} rejected the request to model {ref!r} ({detail}). "
        f"Check the model ref, and {target.base_url_name} ({target.base_url})."
    )


def give_up(
    target: Target,
    failure: Failure,
    attempts: int,
    next_delay: float | None,
    budget: float,
) -> Transient:
    """Build the error raised when the retries of a call run out.

    Args:
        target: the model and server of the call.
        failure: the last retryable failure.
        attempts: how many attempts were made.
        next_delay: the wait, in seconds, that would have passed the budget,
            or None when the attempts ran out.
        budget: the retry budget, in seconds.

    Returns:
        `RateLimited` after a rate limit, else `Transient`.
    """
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if failure.kind == "rate_limit":
        msg = (
            f"{target.service} rate-limited model {target.ref!r} ({failure.reason}) "
            f"after {tries}. Wait a minute and try again, or use another model."
        )
    elif failure.kind == "transport":
        msg = (
            f"Could not reach {_lower_first(target.service)} for model "
            f"{target.ref!r} ({failure.reason}) after {tries}. Check the network "
            f"and {target.base_url_name} ({target.base_url})."
        )
    else:
        msg = (
            f"{target.service} failed to answer model {target.ref!r} "
            f"({failure.reason}) after {tries}. Try again later, or use another "
            f"model."
        )
    if next_delay is not None:
        msg += (
            f" The next retry would have waited {next_delay:.1f} s, past the "
            f"retry budget of {budget:g} s."
        )
    if failure.kind == "rate_limit":
        return RateLimited(msg, failure.retry_after)
    return Transient(msg)


def parse_retry_after(value: str | None) -> float | None:
    """Parse `Retry-After`, in seconds or as an HTTP date, into seconds.

    Returns None when the header is absent or invalid.
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _detail(status: int, message: str) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    text = " ".join(message.split())
    if len(text) > _DETAIL_LIMIT:
        text = text[:_DETAIL_LIMIT] + "…"
    return f"{status} {phrase}: {text}" if text else f"{status} {phrase}"


def _lower_first(text: str) -> str:
    # "The OpenAI-compatible server at …" reads "the …" mid-sentence, but a
    # name such as "OpenRouter" keeps its capital.
    return "the" + text[3:] if text.startswith("The ") else text
