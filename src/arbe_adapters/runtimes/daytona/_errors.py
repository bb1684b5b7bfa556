"""Translation of Daytona SDK exceptions into arbe errors, in one place.

`daytona_errors` is the only code that turns an SDK exception into an
`ArbeError`, and every call into the SDK runs inside it. The SDK reports HTTP
failures as `DaytonaError` subclasses that carry `status_code` and the
response `headers`, and transport failures as `DaytonaConnectionError`, or as
a plain `DaytonaError` whose cause chain contains the urllib3 error.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC

import attrs
import httpx
import pydantic
import urllib3.exceptions
from daytona.common import errors as sdk
from daytona_api_client.exceptions import OpenApiException
from daytona_api_client_async.exceptions import (
    OpenApiException as AsyncOpenApiException,
)
from daytona_toolbox_api_client.exceptions import OpenApiException as ToolboxException
from daytona_toolbox_api_client_async.exceptions import (
    OpenApiException as AsyncToolboxException,
)

from arbe_core.errors import (
    ArbeError,
    Conflict,
    CredentialRejected,
    InvalidInput,
    NotFound,
    OperationTimedOut,
    RateLimited,
    SandboxNotFound,
    Transient,
    Unavailable,
)

__all__ = [
    "CREDENTIAL",
    "RUNTIME",
    "DeadlineExceeded",
    "daytona_errors",
    "is_exec_timeout",
    "retry_after",
]

RUNTIME = "daytona"
CREDENTIAL = "DAYTONA_API_KEY"

_OPENAPI_ERRORS = (
    OpenApiException,
    AsyncOpenApiException,
    ToolboxException,
    AsyncToolboxException,
)
#: Exceptions that mean the request or its reply was lost on the way.
_TRANSPORT_ERRORS = (
    urllib3.exceptions.HTTPError,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
    socket.gaierror,
)

#: Errors from git and file tools in the sandbox. They share HTTP statuses
#: with API errors but are not about the API key or the sandbox itself.
_SANDBOX_TOOL_ERRORS = (sdk.DaytonaGitAuthFailedError, sdk.DaytonaFileAccessDeniedError)


class DeadlineExceeded(Exception):
    """An SDK call that arbe ran in a thread did not finish before its deadline."""


@attrs.frozen
class _Call:
    """The operation, sandbox and state reader of a failed call, for messages."""

    operation: str
    sandbox_id: str | None
    state: Callable[[], str | None] | None

    def sandbox_text(self) -> str:
        return f" sandbox {self.sandbox_id!r}" if self.sandbox_id else ""

    def last_state(self) -> str | None:
        return self.state() if self.state is not None else None


@contextmanager
def daytona_errors(
    operation: str,
    sandbox_id: str | None = None,
    state: Callable[[], str | None] | None = None,
) -> Iterator[None]:
    """Translate SDK exceptions raised in the block into arbe errors.

    Args:
        operation: The verb for the message, such as `start` or `look up`.
        sandbox_id: The sandbox id or name the call was about, if any.
        state: Returns the sandbox's last known Daytona state, for messages
            about conflicts and timeouts.

    Raises:
        ArbeError: for every SDK, generated-client, transport or reply
            validation exception, and for `DeadlineExceeded`, chained with
            `raise ... from`. Other exceptions (bugs) pass through unchanged.
    """
    try:
        yield
    except ArbeError:
        raise
    except Exception as exc:
        mapped = _translate(exc, _Call(operation, sandbox_id, state))
        if mapped is None:
            raise
        raise mapped from exc


def retry_after(error: BaseException) -> float | None:
    """Return the seconds requested by the `Retry-After` header behind `error`."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return error.retry_after
    if error.__cause__ is None:
        return None
    return _header_retry_after(error.__cause__)


def is_exec_timeout(error: BaseException) -> bool:
    """Tell whether the sandbox or the HTTP client gave up on a command."""
    return isinstance(error, sdk.DaytonaTimeoutError)


def _header_retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    if not isinstance(headers, Mapping):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            return _parse_retry_after(str(value))
    return None


def _parse_retry_after(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())


def _translate(exc: Exception, call: _Call) -> ArbeError | None:
    if isinstance(exc, DeadlineExceeded):
        return _timed_out(call)
    if isinstance(exc, sdk.DaytonaError):
        return _from_daytona(exc, call)
    if isinstance(exc, _OPENAPI_ERRORS):
        status = getattr(exc, "status", None)
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return _from_status(status, str(reason), exc, call)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return _unreachable(str(exc), call)
    if isinstance(exc, pydantic.ValidationError):
        return _unreadable(call)
    return None


def _from_daytona(exc: sdk.DaytonaError, call: _Call) -> ArbeError:
    message = exc.message
    if isinstance(exc, _SANDBOX_TOOL_ERRORS):
        return InvalidInput(_failed(call, message))
    if isinstance(exc, sdk.DaytonaConnectionError):
        return _unreachable(message, call)
    if isinstance(exc, sdk.DaytonaQueueTimeoutError | sdk.DaytonaSpotEvictedError):
        return Transient(_failed(call, message) + " Try again later.")
    if isinstance(exc, sdk.DaytonaTimeoutError) and exc.status_code is None:
        return _timed_out(call)
    if exc.status_code is not None:
        return _from_status(exc.status_code, message, exc, call)
    if _caused_by(exc, _TRANSPORT_ERRORS):
        return _unreachable(message, call)
    if _caused_by(exc, (pydantic.ValidationError,)):
        return _unreadable(call)
    return Unavailable(_failed(call, message))


def _from_status(
    status: int | None, message: str, exc: Exception, call: _Call
) -> ArbeError:
    if status in (401, 403):
        return CredentialRejected(CREDENTIAL, "Daytona")
    if status in (404, 410):
        if call.sandbox_id is not None:
            return SandboxNotFound(call.sandbox_id, RUNTIME)
        return NotFound(_failed(call, message))
    if status == 409:
        return _conflict(message, call)
    if status == 429:
        return RateLimited(
            f"Daytona rate-limited the request to {call.operation}{call.sandbox_text()}. "
            "Wait and try again.",
            _header_retry_after(exc),
        )
    if status in (400, 422):
        return InvalidInput(_failed(call, message))
    if status is not None and (status in (408, 504) or status >= 500):
        return Transient(_failed(call, f"HTTP {status}: {message}") + " Try again.")
    return Unavailable(_failed(call, message))


def _failed(call: _Call, reason: str) -> str:
    return f"Daytona failed to {call.operation}{call.sandbox_text()}: {reason}"


def _conflict(message: str, call: _Call) -> Conflict:
    state = call.last_state()
    state_text = f" while it is {state}" if state else ""
    return Conflict(
        f"Daytona rejected the request to {call.operation}{call.sandbox_text()}"
        f"{state_text}: {message}. Wait for the sandbox to settle and try again."
    )


def _timed_out(call: _Call) -> OperationTimedOut:
    state = call.last_state()
    state_text = f"; its last state was {state!r}" if state else ""
    return OperationTimedOut(
        f"Timed out waiting for Daytona to {call.operation}{call.sandbox_text()}"
        f"{state_text}. Check it with `arbe sandbox list --runtime {RUNTIME}`.",
        state,
    )


def _unreachable(reason: str, call: _Call) -> Transient:
    return Transient(
        f"Could not reach the Daytona API to {call.operation}{call.sandbox_text()}: "
        f"{reason}. Check DAYTONA_API_URL and the network."
    )


def _unreadable(call: _Call) -> Unavailable:
    return Unavailable(
        f"The Daytona SDK could not read the API's reply to {call.operation}"
        f"{call.sandbox_text()}; the API and this SDK version may not match."
    )


def _caused_by(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
