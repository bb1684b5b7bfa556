"""Translate sprites-py exceptions into arbe errors, in one place.

sprites-py 0.7.2 raises these (all subclasses of `SpriteError`):

- REST: `AuthenticationError` for 401, `NotFoundError` for 404, a plain
  `SpriteError("Failed <operation> (status <code>): <body>")` for any other
  non-2xx response (429 included, with no Retry-After), and `NetworkError` for
  transport failures.
- The exec websocket handshake: `APIError` with `status_code` and, for 429,
  `retry_after_seconds` from the JSON body or the Retry-After header.
- `TimeoutError`, `ExecError` and the `FilesystemError` family, which arbe's
  calls do not expect but still map.

Only not found means gone: every other failure maps to an error that leaves
the sandbox and its bindings alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from sprites.exceptions import (
    APIError,
    AuthenticationError,
    ExecError,
    NetworkError,
    NotFoundError,
    SpriteError,
)
from sprites.exceptions import TimeoutError as SpriteTimeoutError

from arbe_core.errors import (
    ArbeError,
    CredentialRejected,
    InvalidInput,
    OperationTimedOut,
    RateLimited,
    SandboxNotFound,
    SandboxUnreachable,
    Transient,
    Unavailable,
)

__all__ = ["CREDENTIAL_NAME", "RUNTIME", "CallContext", "sprite_errors", "translate"]

RUNTIME: Final = "sprite"
CREDENTIAL_NAME: Final = "SPRITES_TOKEN"
_SERVICE: Final = "Sprites"
#: The status in sprites-py 0.7.2's message for a REST failure other than 401
#: and 404.
_STATUS_MESSAGE: Final = re.compile(r"\(status (\d{3})\)(?::\s*(.*))?\Z", re.DOTALL)
_MAX_DETAIL: Final = 300


class CallContext:
    """The operation, sprite and API URL of a call, and the token to mask."""

    __slots__ = ("base_url", "operation", "sprite", "token")

    def __init__(
        self, operation: str, sprite: str | None, token: str | None, base_url: str
    ) -> None:
        self.operation = operation
        self.sprite = sprite
        self.token = token
        self.base_url = base_url

    @property
    def target(self) -> str:
        """Describe the call for a message, such as `get on sprite 'x'`."""
        if self.sprite is None:
            return self.operation
        return f"{self.operation} on sprite {self.sprite!r}"

    def scrub(self, text: str) -> str:
        """Return SDK text with the token masked, cut to a readable length."""
        if self.token:
            text = text.replace(self.token, "***")
        text = " ".join(text.split())
        if len(text) > _MAX_DETAIL:
            text = text[:_MAX_DETAIL] + "..."
        return text


@contextmanager
def sprite_errors(context: CallContext) -> Iterator[None]:
    """Raise the arbe error for any sprites-py exception raised in the block.

    A malformed reply (not JSON, or a sprite without a `name`) raises
    `Unavailable` too. Keep the block to SDK calls, because a `KeyError` of
    arbe's own code would be reported as a malformed reply.
    """
    try:
        yield
    except SpriteError as exc:
        raise translate(exc, context) from exc
    except (json.JSONDecodeError, KeyError) as exc:
        message = (
            f"The Sprites API at {context.base_url} sent a malformed reply to "
            f"{context.target} ({type(exc).__name__}). Check SPRITES_API_URL."
        )
        raise Unavailable(message) from exc


def translate(exc: SpriteError, context: CallContext) -> ArbeError:
    """Return the arbe error for one sprites-py exception."""
    if isinstance(exc, AuthenticationError):
        return CredentialRejected(CREDENTIAL_NAME, _SERVICE)
    if isinstance(exc, NotFoundError):
        return _from_status(404, "", None, context)
    if isinstance(exc, APIError) and exc.status_code is not None:
        detail = context.scrub(str(exc))
        return _from_status(exc.status_code, detail, _api_retry_after(exc), context)
    if isinstance(exc, NetworkError):
        return SandboxUnreachable(
            f"Cannot reach the Sprites API at {context.base_url} for "
            f"{context.target}: {context.scrub(str(exc))}. Check the network "
            f"and SPRITES_API_URL."
        )
    if isinstance(exc, SpriteTimeoutError):
        return OperationTimedOut(
            f"Sprites did not finish {context.target} in time: "
            f"{context.scrub(str(exc))}. Try again."
        )
    if isinstance(exc, ExecError):
        return Unavailable(
            f"A command for {context.target} exited with status {exc.exit_code()}."
        )
    return _from_text(exc, context)


def _from_text(exc: SpriteError, context: CallContext) -> ArbeError:
    """Map a plain `SpriteError`, reading the status from its message."""
    text = str(exc)
    match = _STATUS_MESSAGE.search(text)
    if match is None:
        return Unavailable(
            f"Sprites failed {context.target}: {context.scrub(text)}. "
            f"Run `arbe sandbox diagnose` for details."
        )
    body = match.group(2) or ""
    retry_after = _body_retry_after(body)
    return _from_status(int(match.group(1)), context.scrub(body), retry_after, context)


def _from_status(
    status: int, detail: str, retry_after: float | None, context: CallContext
) -> ArbeError:
    suffix = f": {detail}" if detail else ""
    if status == 404 and context.sprite is not None:
        return SandboxNotFound(context.sprite, RUNTIME)
    if status in (401, 403):
        return CredentialRejected(CREDENTIAL_NAME, _SERVICE)
    if status == 429:
        wait = f"retry after {retry_after:g} s" if retry_after else "retry later"
        return RateLimited(
            f"Sprites rate-limited {context.target} (HTTP 429); {wait}.",
            retry_after=retry_after,
        )
    if status in (400, 409, 422):
        return InvalidInput(
            f"Sprites rejected {context.target} (HTTP {status}){suffix}."
        )
    if status == 408 or status >= 500:
        return Transient(
            f"Sprites failed {context.target} with HTTP {status}{suffix}. "
            f"Try again later."
        )
    return Unavailable(
        f"Sprites returned HTTP {status} for {context.target}{suffix}. "
        f"Check SPRITES_API_URL (now {context.base_url})."
    )


def _api_retry_after(exc: APIError) -> float | None:
    seconds = exc.get_retry_after_seconds()
    return float(seconds) if seconds is not None else None


def _body_retry_after(body: str) -> float | None:
    """Read `retry_after_seconds` from a REST error body, if it has one.

    NOTE: sprites-py 0.7.2 drops the headers of a failed REST call, so a
    Retry-After header is lost. The websocket's 429 body carries
    `retry_after_seconds`, and this assumes REST 429 bodies do too.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get("retry_after_seconds") if isinstance(data, dict) else None
    if isinstance(value, int | float) and value > 0:
        return float(value)
    return None
