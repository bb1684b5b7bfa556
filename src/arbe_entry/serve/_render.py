"""Render the HTML pages from the Jinja2 templates shipped in this package."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from arbe_entry.serve._auth import CSRF_FIELD, csrf_token, set_csrf_cookie

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    """Return the Jinja2 environment; every value is HTML-escaped."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.globals["entry_view"] = entry_view
    return env


def render(
    request: Request, template: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    """Render `template` with the page context every template expects."""
    state = request.app.state
    full = {
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token(request),
        "house": getattr(state, "house_name", ""),
        "logout": getattr(request.state, "signed_in", False),
        "path": request.url.path,
        **context,
    }
    html = environment().get_template(template).render(full)
    response = HTMLResponse(html, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    set_csrf_cookie(request, response)
    return response


def render_error(request: Request, status: int, message: str) -> HTMLResponse:
    """Render the error page with one sentence."""
    return render(request, "error.html", {"status": status, "message": message}, status)


def entry_view(entry: dict[str, Any]) -> tuple[str, str]:
    """Return the heading and text to show for one entry (as `entry_dict` shapes it).

    `static/thread.js` shows entries that arrive later the same way.
    """
    data = entry.get("data") or {}
    seq, author, kind = entry["seq"], entry["author"], entry["kind"]
    tool = str(data.get("name", "tool"))
    if kind == "tool_call":
        arguments = data.get("arguments", entry["body"])
        text = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return f"[{seq}] {author} -> {tool}", text
    if kind == "tool_result":
        return f"[{seq}] {tool} result", str(entry["body"])
    if kind == "status":
        return f"[{seq}] {author} status", str(entry["body"])
    return f"[{seq}] {author}", str(entry["body"])


def _when(value: object) -> str:
    """Format an ISO timestamp as `YYYY-MM-DD HH:MM:SS`."""
    text = str(value or "")
    return text[:19].replace("T", " ")
