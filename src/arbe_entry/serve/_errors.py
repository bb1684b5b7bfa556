"""Map arbe's errors and HTTP errors to responses: JSON for the API, HTML for pages."""

from __future__ import annotations

import json
import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from arbe_core.errors import (
    ArbeError,
    Conflict,
    CredentialMissing,
    CredentialRejected,
    CryptoError,
    InvalidInput,
    NotFound,
    OperationTimedOut,
    RateLimited,
    SchemaTooNew,
    Transient,
    Unavailable,
    Unsupported,
)

logger = logging.getLogger("arbe.serve")

#: HTTP status per error family; the first class that matches wins, so
#: subclasses come before their parents.
_STATUS: tuple[tuple[type[ArbeError], int], ...] = (
    (NotFound, 404),
    (InvalidInput, 422),
    (Conflict, 409),
    (Unsupported, 422),
    # The fix for both is on the caller's side: set the secret, or a valid one.
    (CredentialMissing, 409),
    (CredentialRejected, 409),
    (RateLimited, 503),
    (OperationTimedOut, 504),
    (Transient, 503),
    (Unavailable, 503),
    (CryptoError, 503),
    (SchemaTooNew, 503),
)


class RequestError(ArbeError):
    """A request that cannot be read: bad JSON, wrong content type, bad form."""

    code = "bad_request"

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.code = _HTTP_CODES.get(status, "bad_request")


def status_of(exc: ArbeError) -> int:
    """Return the HTTP status of the response to `exc`."""
    if isinstance(exc, RequestError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(exc: ArbeError) -> Response:
    """Return the JSON error object that `--json` prints, with its status."""
    status = status_of(exc)
    headers = {}
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if status >= 500:
        logger.error("request failed with %s: %s", type(exc).__name__, exc.message)
    body = json.dumps(exc.to_dict(), ensure_ascii=False)
    return Response(
        body, status_code=status, headers=headers, media_type="application/json"
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def http_error_object(status: int, message: str) -> dict[str, object]:
    """Return an error object in the shape of `ArbeError.to_dict` for an HTTP error."""
    return {
        "error": _HTTP_CODES.get(status, "http_error"),
        "type": "HTTPException",
        "message": message,
    }


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Return Starlette's own errors (no route, wrong method) as JSON under /api."""
    assert isinstance(exc, HTTPException)
    message = _sentence(exc.detail)
    if request.url.path.startswith("/api/"):
        body = json.dumps(http_error_object(exc.status_code, message))
        return Response(
            body,
            status_code=exc.status_code,
            headers=exc.headers,
            media_type="application/json",
        )
    from arbe_entry.serve._render import render_error

    return render_error(request, exc.status_code, message)


def _sentence(detail: str) -> str:
    text = detail.strip() or "Error"
    return text if text.endswith(".") else text + "."
