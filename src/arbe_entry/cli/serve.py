"""`arbe serve`: the house over HTTP, as a JSON API and web pages.

Starlette and uvicorn are imported inside the command, so other commands
start as fast without them.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Annotated

import typer

from arbe_core.errors import ArbeError, InvalidInput, Unavailable
from arbe_entry.app import Arbe
from arbe_entry.cli._common import arbe, note, warn
from arbe_entry.cli.house import API_TOKEN_SETTING

#: Seconds open connections (event streams) get to finish when the server stops.
SHUTDOWN_GRACE_S = 3


def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            help="The address to listen on. Any address but a loopback one "
            "requires an API token (`arbe house token create`)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(min=0, max=65535, help="The TCP port; 0 picks a free one."),
    ] = 8717,
    require_token: Annotated[
        bool,
        typer.Option(
            "--require-token",
            help="Ask for the API token on a loopback address too.",
        ),
    ] = False,
) -> None:
    """Serve the house: a JSON API (/openapi.json) and pages for threads.

    Open /threads/new in a browser to create an environment and start a
    thread; entries appear as the bots write them.
    """
    try:
        import uvicorn

        from arbe_entry.serve import create_app
        from arbe_entry.serve._auth import LOOPBACK_HOSTS, is_loopback
    except ImportError as exc:
        msg = (
            f"`arbe serve` needs the serve extra ({exc.name} is not installed); "
            "install it with `pip install 'arbe[serve]'`."
        )
        raise ArbeError(msg) from exc

    opened = arbe(ctx)
    loopback = is_loopback(host)
    needs_token = require_token or not loopback
    if needs_token:
        _check_token_exists(opened, host)

    app = create_app(
        opened.settings,
        require_token=needs_token,
        allowed_hosts=LOOPBACK_HOSTS if loopback else None,
    )
    listener = _listen(host, port)
    bound_port = listener.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    _configure_logging()
    if not loopback:
        warn(
            "serving without TLS; put a TLS proxy in front so the token and "
            "session cookie are not sent in clear text."
        )
    note(
        f"Serving house {app.state.house_name} at http://{shown_host}:{bound_port}/ "
        "(Ctrl-C stops)."
    )
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        server_header=False,
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[listener])


def _check_token_exists(opened: Arbe, host: str) -> None:
    with opened.deps.storage.unit_of_work(write=False) as uow:
        stored = uow.houses.get_setting(API_TOKEN_SETTING)
    if not stored:
        msg = (
            f"Serving on {host!r} requires an API token, and this arbe home has "
            "none. Create one with `arbe house token create`, or serve on "
            "127.0.0.1."
        )
        raise InvalidInput(msg)


def _listen(host: str, port: int) -> socket.socket:
    """Bind a listening socket, so a busy port fails before the server starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        msg = f"Invalid --host {host!r}: {exc.strerror}."
        raise InvalidInput(msg) from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(128)
    except OSError as exc:
        listener.close()
        msg = (
            f"Cannot listen on {host} port {port}: {exc.strerror}. "
            "Pick another port with --port."
        )
        raise Unavailable(msg) from None
    return listener


def _configure_logging() -> None:
    """Send the server's log (requests, errors, arbe's INFO lines) to stderr."""
    root = logging.getLogger()
    if root.handlers:
        return
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
