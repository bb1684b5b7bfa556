"""Access checks of the server: host and origin checks, the API token, sessions, CSRF.

- Host: on a loopback address, only requests whose `Host` header names a
  loopback host are served, so a web page whose domain was re-pointed at
  127.0.0.1 (DNS rebinding) cannot read the API.
- Origin: a state-changing request that carries an `Origin` header from
  another site is rejected.
- Token: when required, a request needs `Authorization: Bearer TOKEN` or a
  session cookie from the login form. The home stores only the token's
  SHA-256 (see `arbe house token create`).
- CSRF: every form carries the value of the `arbe_csrf` cookie (a double-submit
  token), and the cookie is `SameSite=Strict`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from starlette.datastructures import FormData, Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arbe_entry.cli.house import hash_api_token
from arbe_entry.serve._errors import RequestError, http_error_object

logger = logging.getLogger("arbe.serve")

SESSION_COOKIE = "arbe_session"
CSRF_COOKIE = "arbe_csrf"
CSRF_FIELD = "csrf_token"
#: Seconds a login session lasts.
SESSION_TTL_S = 12 * 3600

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths served without a token: the login form, static files, the API schema.
_PUBLIC_PREFIXES = ("/login", "/static/", "/openapi.json")

#: The Content-Security-Policy of every response: scripts, styles and
#: connections from this server only, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def is_loopback(host: str) -> bool:
    """Tell whether `host` (a name or an address) is a loopback host."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """Return the host part of a `Host` header, without port or brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class Sessions:
    """Check API tokens and sign login sessions against the token in the home.

    A session cookie is `EXPIRES.MAC`, where the MAC covers the expiry and the
    stored token hash under a key made when the server starts. Creating a new
    token therefore ends every session, and so does restarting the server.
    """

    def __init__(self, stored_hash: Callable[[], str | None]) -> None:
        self._stored_hash = stored_hash
        self._key = secrets.token_bytes(32)

    def check_token(self, token: str) -> bool:
        """Tell whether `token` is the home's API token."""
        stored = self._stored_hash()
        if not stored or not token:
            return False
        return hmac.compare_digest(hash_api_token(token), stored)

    def new_session(self) -> str:
        """Return a session cookie value valid for `SESSION_TTL_S` seconds."""
        expires = int(time.time()) + SESSION_TTL_S
        return f"{expires}.{self._mac(expires, self._stored_hash() or '')}"

    def check_session(self, value: str) -> bool:
        """Tell whether a session cookie value is unexpired and signed for this token."""
        expires_text, _, mac = value.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            return False
        stored = self._stored_hash()
        if not stored:
            return False
        return hmac.compare_digest(mac, self._mac(int(expires_text), stored))

    def _mac(self, expires: int, stored: str) -> str:
        message = f"{expires}.{stored}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


class Guard:
    """ASGI middleware that applies the host, origin and token checks.

    It also adds the security headers to every response.
    """

    def __init__(
        self,
        app: ASGIApp,
        sessions: Sessions | None,
        allowed_hosts: frozenset[str] | None,
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request = Request(scope)
        rejection = await self._reject(request)
        if rejection is not None:
            await rejection(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "same-origin")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _reject(self, request: Request) -> Response | None:
        host = host_of(request.headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            logger.warning("rejected a request for host %r", host[:100])
            return _denied(request, 400, f"Invalid Host header {host[:100]!r}.")

        if request.method not in _SAFE_METHODS and not _same_origin(request.headers):
            return _denied(
                request,
                403,
                "Cross-site request rejected: the Origin is not this server.",
            )

        if self.sessions is None:
            return None
        if await _authenticated(request, self.sessions):
            # Pages show "Log out" only to a signed-in browser.
            request.scope.setdefault("state", {})["signed_in"] = True
            return None
        if request.url.path.startswith(_PUBLIC_PREFIXES):
            return None
        if request.url.path.startswith("/api/"):
            return _unauthorized()
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)


async def _authenticated(request: Request, sessions: Sessions) -> bool:
    from starlette.concurrency import run_in_threadpool

    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return await run_in_threadpool(sessions.check_token, token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return await run_in_threadpool(sessions.check_session, cookie)
    return False


def _same_origin(headers: Headers) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return (
        bool(parts.netloc) and parts.netloc.lower() == headers.get("host", "").lower()
    )


def _unauthorized() -> Response:
    message = (
        "Missing or invalid API token: send `Authorization: Bearer TOKEN`; "
        "create a token with `arbe house token create`."
    )
    return Response(
        json.dumps(http_error_object(401, message)),
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="arbe"'},
        media_type="application/json",
    )


def _denied(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
        "accept", ""
    ):
        body = json.dumps(http_error_object(status, message))
        return Response(body, status_code=status, media_type="application/json")
    return Response(message, status_code=status, media_type="text/plain")


def csrf_token(request: Request) -> str:
    """Return the CSRF token for forms: the cookie's value, or a new one.

    A new value is kept on `request.state` so `set_csrf_cookie` sends it.
    """
    token = request.cookies.get(CSRF_COOKIE)
    if token and len(token) >= 32:
        return token
    existing = getattr(request.state, "new_csrf", None)
    if isinstance(existing, str):
        return existing
    request.state.new_csrf = secrets.token_urlsafe(32)
    return str(request.state.new_csrf)


def set_csrf_cookie(request: Request, response: Response) -> None:
    """Send the CSRF cookie if `csrf_token` made a new one for this request."""
    token = getattr(request.state, "new_csrf", None)
    if isinstance(token, str):
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", path="/"
        )


def check_csrf(request: Request, form: FormData) -> None:
    """Raise a 403 `RequestError` unless the form's token matches the cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    field = form.get(CSRF_FIELD)
    if (
        not cookie
        or not isinstance(field, str)
        or not hmac.compare_digest(cookie, field)
    ):
        raise RequestError(
            "The form's CSRF token is missing or does not match; reload the page "
            "and submit it again.",
            status=403,
        )


def set_session_cookie(response: Response, value: str) -> None:
    """Send the login session cookie."""
    # NOTE: the cookie is not marked Secure because the server itself speaks
    # plain HTTP, so a browser may send it unencrypted unless a TLS proxy is used.
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        path="/",
    )
