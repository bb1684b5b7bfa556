"""Build the ASGI app of `arbe serve`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from arbe_core.errors import ArbeError
from arbe_entry.app import Arbe
from arbe_entry.cli.house import API_TOKEN_SETTING
from arbe_entry.config import Settings
from arbe_entry.serve import _api, _pages
from arbe_entry.serve._auth import LOOPBACK_HOSTS, Guard, Sessions
from arbe_entry.serve._errors import error_response, handle_http_exception, status_of

logger = logging.getLogger("arbe.serve")

STATIC = Path(__file__).parent / "static"

#: A function that starts a worker for the house when none runs, and returns
#: whether it started one.
WorkerStarter = Callable[[Arbe], bool]


class HouseOpener:
    """Open the server's house afresh for each request.

    Storage, the sealer and the plugins are shared. Services and runtimes are
    built per request, so a credential set through the API is used by the
    next request that builds the runtime.
    """

    def __init__(self, settings: Settings) -> None:
        self._base = Arbe(settings)
        self.house = self._base.house
        self.plugins = self._base.plugins

    def __call__(self) -> Arbe:
        deps = self._base.deps
        return Arbe(
            self._base.settings,
            storage=deps.storage,
            sealer=deps.sealer,
            clock=deps.clock,
            ids=deps.ids,
            plugins=self.plugins,
        )

    def token_hash(self) -> str | None:
        """Return the stored API token hash, or None when no token was created."""
        with self._base.deps.storage.unit_of_work(write=False) as uow:
            return uow.houses.get_setting(API_TOKEN_SETTING) or None

    def close(self) -> None:
        """Release the shared storage."""
        self._base.close()


def create_app(
    settings: Settings,
    *,
    require_token: bool = False,
    allowed_hosts: frozenset[str] | None = LOOPBACK_HOSTS,
    start_worker: WorkerStarter | None = None,
) -> Starlette:
    """Build the app that serves one house's API and pages.

    Args:
        settings: the home and house to serve, as the CLI resolves them.
        require_token: ask every request (but the login form, static files and
            the OpenAPI document) for the API token or a login session.
        allowed_hosts: the host names a request's `Host` header may carry, or
            None for any. The default admits only loopback names, which a
            server bound to a loopback address needs against DNS rebinding.
        start_worker: starts a background worker after an entry is posted;
            `arbe_entry.spawn.ensure_worker` when None.

    Raises:
        HouseNotFound: the settings name a house that does not exist.
    """
    if start_worker is None:
        from arbe_entry.spawn import ensure_worker

        start_worker = ensure_worker

    opener = HouseOpener(settings)
    sessions = Sessions(opener.token_hash) if require_token else None
    app = Starlette(
        routes=[
            *_api.routes(),
            *_pages.routes(),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(Guard, sessions=sessions, allowed_hosts=allowed_hosts)],
        exception_handlers={
            ArbeError: _handle_arbe_error,
            HTTPException: handle_http_exception,
        },
        lifespan=_closing(opener),
    )
    app.state.opener = opener
    app.state.sessions = sessions
    app.state.start_worker = start_worker
    app.state.house_name = opener.house.name
    return app


def _closing(
    opener: HouseOpener,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            opener.close()

    return lifespan


async def _handle_arbe_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ArbeError)
    if status_of(exc) < 500:
        # error_response logs server errors itself, at ERROR.
        logger.info(
            "%s %s failed with %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc.message,
        )
    if request.url.path.startswith("/api/"):
        return error_response(exc)
    from arbe_entry.serve._render import render_error

    return render_error(request, status_of(exc), exc.message)
