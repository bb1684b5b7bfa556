"""The Daytona SDK client as arbe builds it, and the retry and deadline helpers."""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import attrs
from daytona import Daytona, DaytonaConfig, Sandbox
from daytona.internal.urllib3_retry import RemoteDisconnectedRetry

from arbe_adapters.runtimes.daytona._errors import (
    CREDENTIAL,
    DeadlineExceeded,
    daytona_errors,
    retry_after,
)
from arbe_core.errors import ArbeError, CredentialMissing, OperationTimedOut, Transient
from arbe_core.runtime import RuntimeContext

__all__ = ["Caller", "RetryPolicy", "Timeouts", "build_client", "run_bounded"]

logger = logging.getLogger("arbe.runtime.daytona")

T = TypeVar("T")


class _UntracedDaytona(Daytona):
    """The SDK client with OpenTelemetry export kept off.

    The SDK turns tracing on when any of its switches is on, including
    `DAYTONA_OTEL_ENABLED=true` in the process environment or in a `.env`
    file in the working directory, and `otel_enabled=False` does not override
    them. Tracing would send spans to an OTLP endpoint (localhost:4318 by
    default).
    """

    def _init_otel(self, sdk_version: str) -> None:
        logger.debug("Daytona SDK tracing stays off (SDK %s)", sdk_version)


def build_client(context: RuntimeContext) -> Daytona:
    """Build an SDK client for the house's key, API URL and target.

    The client learns state changes by polling instead of holding a
    Socket.IO connection, and it exports no traces. Its HTTP pools make no
    retries of their own beyond resending a request that got no reply byte,
    so `Caller.call` is the one retry policy.

    Raises:
        CredentialMissing: the house has no `DAYTONA_API_KEY`.
    """
    if not context.credential:
        raise CredentialMissing(CREDENTIAL, "The daytona runtime")

    config = DaytonaConfig(
        api_key=context.credential,
        api_url=context.config("DAYTONA_API_URL"),
        target=context.config("DAYTONA_TARGET"),
        use_deprecated_polling=True,
        otel_enabled=False,
    )
    # The SDK warns on every client that polling mode is deprecated. A filter
    # for that message alone, because `catch_warnings` is not thread-safe.
    warnings.filterwarnings(
        "ignore", message="Polling-only mode", category=DeprecationWarning
    )
    client = _UntracedDaytona(config)

    # urllib3 by default retries GET, PUT and DELETE three times after a lost
    # connection, and after a 429 or 503 sleeps for the Retry-After value
    # (up to 6 hours). The toolbox pool keeps the SDK's resend of a request
    # that got no reply byte (a stale pooled connection), minus the sleeping.
    # No pool exists yet, so the settings reach every pool the client opens.
    _set_pool_retries(client, "_api_client", False)
    toolbox_retries = RemoteDisconnectedRetry(
        total=3, raise_on_status=False, respect_retry_after_header=False
    )
    _set_pool_retries(client, "_toolbox_api_client", toolbox_retries)
    return client


def _set_pool_retries(client: Daytona, attribute: str, retries: object) -> None:
    # NOTE: these are private attributes of the SDK (checked with 0.226.1);
    # a unit test fails when they move.
    api_client: Any = getattr(client, attribute)
    api_client.rest_client.pool_manager.connection_pool_kw["retries"] = retries


@attrs.frozen
class RetryPolicy:
    """The retry policy for Daytona calls that failed for a transient reason.

    Retry n (from 1) waits the server's `Retry-After` when it sent one, else
    `base_delay * 2**(n-1)` seconds with jitter, at most `max_delay`. No retry
    is made past `attempts` calls or when its wait would end more than
    `total_cap` seconds after the first call began.
    """

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    total_cap: float = 30.0

    def delay(self, retry: int, requested: float | None) -> float:
        """Return the seconds to wait before retry number `retry`."""
        if requested is not None:
            return requested
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return backoff * random.uniform(0.5, 1.0)


@attrs.frozen
class Timeouts:
    """Deadlines of the runtime's waits, in seconds."""

    create: float = 180.0
    #: Restoring an archived sandbox can take minutes.
    start: float = 300.0
    stop: float = 120.0
    destroy: float = 120.0
    clone: float = 900.0
    #: Between TERM and KILL for a command over its timeout.
    kill_after: float = 5.0
    #: Seconds arbe waits past a deadline that the SDK or the sandbox
    #: enforces, before it stops waiting for the call.
    grace: float = 15.0


@attrs.frozen
class Caller:
    """Runs SDK calls with arbe's error translation, retries and deadlines."""

    retry: RetryPolicy
    timeouts: Timeouts
    sleep: Callable[[float], None] = time.sleep

    def call(
        self,
        fn: Callable[[], T],
        operation: str,
        sandbox: Sandbox | str | None = None,
        retry_on: tuple[type[ArbeError], ...] = (Transient,),
    ) -> T:
        """Call `fn` with SDK errors translated, retrying transient failures.

        `operation` and `sandbox` (an SDK sandbox, or an id or name) name the
        call in messages. For an SDK sandbox, conflicts and timeouts also
        name its last state. Only errors of the `retry_on` types are retried,
        and a timed-out wait (`OperationTimedOut`) never is.

        Raises:
            ArbeError: the translated error of the last attempt.
        """
        sandbox_id = sandbox.id if isinstance(sandbox, Sandbox) else sandbox
        state = _state_reader(sandbox) if isinstance(sandbox, Sandbox) else None
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                with daytona_errors(operation, sandbox_id, state):
                    return fn()
            except ArbeError as error:
                delay = self._retry_delay(error, retry_on, attempt, started)
                if delay is None:
                    raise
                logger.warning(
                    "Retrying Daytona call to %s%s in %.2f s (attempt %d of %d): %s",
                    operation,
                    f" sandbox {sandbox_id}" if sandbox_id else "",
                    delay,
                    attempt + 1,
                    self.retry.attempts,
                    error,
                )
                self.sleep(delay)
                attempt += 1

    def within(self, deadline: float, fn: Callable[[float], T]) -> T:
        """Call `fn(seconds_left)` in a thread, for an SDK call that waits.

        `fn` passes the seconds left to the SDK as its `timeout`, and arbe
        stops waiting `timeouts.grace` seconds after that.

        Raises:
            DeadlineExceeded: the deadline passed, before or during the call.
        """
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline passed {-left:.1f} s ago")
        return run_bounded(lambda: fn(left), left + self.timeouts.grace)

    def _retry_delay(
        self,
        error: ArbeError,
        retry_on: tuple[type[ArbeError], ...],
        attempt: int,
        started: float,
    ) -> float | None:
        if not isinstance(error, retry_on) or isinstance(error, OperationTimedOut):
            return None
        if attempt >= self.retry.attempts:
            return None
        delay = self.retry.delay(attempt, retry_after(error))
        if time.monotonic() - started + delay > self.retry.total_cap:
            return None
        return delay


def _state_reader(sandbox: Sandbox) -> Callable[[], str | None]:
    def read() -> str | None:
        state = sandbox.state
        return None if state is None else str(state.value)

    return read


def run_bounded(fn: Callable[[], T], seconds: float) -> T:
    """Run `fn` in a new daemon thread and wait at most `seconds` for it.

    On the main thread the SDK bounds its waits with SIGALRM, which replaces
    the caller's handler and cancels its alarm. On any other thread it uses
    a timer. Running SDK calls here keeps arbe off SIGALRM, and it gives each
    call a deadline of its own, which also covers a slow reply.

    Raises:
        DeadlineExceeded: `fn` is still running; it goes on in its thread
            until the SDK's own timeouts end it.
    """
    future: Future[T] = Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name="arbe-daytona-call", daemon=True).start()
    try:
        return future.result(timeout=max(seconds, 0.0))
    except TimeoutError:
        if future.done():
            raise
        raise DeadlineExceeded(f"no result after {seconds:.1f} s") from None
