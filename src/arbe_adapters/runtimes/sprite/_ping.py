"""`ping` with bounded retries: the one sprite call that arbe retries."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from arbe_core.errors import ArbeError, RateLimited, SandboxUnreachable, Transient
from arbe_core.runtime import Health, SandboxInfo, SandboxState

__all__ = ["MAX_PING_WAIT_S", "PING_ATTEMPTS", "ping_with_retries"]

log = logging.getLogger("arbe.runtime.sprite")

PING_ATTEMPTS: Final = 3
#: The wait before the second attempt; it doubles before each later one.
PING_BACKOFF_S: Final = 0.5
#: The longest Retry-After that `ping` waits out; a longer one is raised.
MAX_PING_WAIT_S: Final = 5.0


def ping_with_retries(
    get: Callable[[str], SandboxInfo],
    sandbox_id: str,
    sleep: Callable[[float], None],
) -> Health:
    """Read the sandbox with `get`, retrying network errors, 5xx and 429.

    Reading is safe to repeat, so up to `PING_ATTEMPTS` reads are made. A
    429 waits its Retry-After when that is at most `MAX_PING_WAIT_S`, and
    raises at once when it is longer. An API that stays unreachable gives
    `UNREACHABLE` instead of an error; every other error is raised.
    """
    attempt = 1
    while True:
        started = time.monotonic()
        try:
            info = get(sandbox_id)
        except (Transient, SandboxUnreachable) as exc:
            delay = _retry_delay(exc, attempt)
            if delay is None:
                return _final_failure(exc, started)
            log.warning(
                "ping of sprite %s failed (%s); attempt %d of %d in %.1f s",
                sandbox_id,
                exc.code,
                attempt + 1,
                PING_ATTEMPTS,
                delay,
            )
            sleep(delay)
            attempt += 1
            continue

        latency_ms = (time.monotonic() - started) * 1000
        return Health(info.state, latency_ms, f"sprite status {info.raw_state!r}")


def _retry_delay(exc: ArbeError, attempt: int) -> float | None:
    """Return the seconds to wait before the next attempt, or None to stop."""
    if attempt >= PING_ATTEMPTS:
        return None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return exc.retry_after if exc.retry_after <= MAX_PING_WAIT_S else None
    return float(PING_BACKOFF_S * 2 ** (attempt - 1))


def _final_failure(exc: ArbeError, started: float) -> Health:
    if not isinstance(exc, SandboxUnreachable):
        raise exc
    latency_ms = (time.monotonic() - started) * 1000
    return Health(SandboxState.UNREACHABLE, latency_ms, exc.message)
