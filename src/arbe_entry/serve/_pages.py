"""The server-rendered pages: threads, the new-thread form, environments, login."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from arbe_core.errors import ArbeError
from arbe_core.models import SecretAudience
from arbe_entry.app import Arbe
from arbe_entry.cli.env import env_dict
from arbe_entry.cli.thread import dispatch_dict, entry_dict, thread_dict
from arbe_entry.serve._api import DEFAULT_RUNTIME, call, create_env
from arbe_entry.serve._auth import SESSION_COOKIE, check_csrf, set_session_cookie
from arbe_entry.serve._body import split_names
from arbe_entry.serve._errors import RequestError, status_of
from arbe_entry.serve._render import render

logger = logging.getLogger("arbe.serve")

#: The model offered first in the new-thread form: it needs no provider key.
SUGGESTED_MODELS = ("builtin/shell", "openrouter/anthropic/claude-haiku-4.5")


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _local_path(target: str | None, default: str) -> str:
    """Return `target` if it is a path on this server, else `default`.

    Only such paths are followed after a form, so a crafted link cannot send
    the user to another site.
    """
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return default


async def _form(request: Request) -> FormData:
    form = await request.form()
    check_csrf(request, form)
    return form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# --- Threads -----------------------------------------------------------------


async def index(request: Request) -> Response:
    return _see_other("/threads")


async def thread_list(request: Request) -> Response:
    def work(arbe: Arbe) -> list[dict[str, object]]:
        threads = arbe.threads.list(100)
        return [thread_dict(t, arbe.threads.dispatch(t.id)) for t in threads]

    threads = await call(request, work)
    return render(request, "threads.html", {"threads": threads})


def _new_thread_context(arbe: Arbe, selected: str | None) -> dict[str, Any]:
    active = arbe.environments.active()
    envs = [env_dict(e, active) for e in arbe.environments.list()]
    bindable = [
        s.name for s in arbe.secrets.list() if s.audience is SecretAudience.ENVIRONMENT
    ]
    return {
        "envs": envs,
        "selected": selected if selected is not None else (active or ""),
        "runtimes": arbe.runtimes.names(),
        "default_runtime": DEFAULT_RUNTIME,
        "bindable": bindable,
        "models": SUGGESTED_MODELS,
        "env_form": {"name": "", "runtime": "", "repo": "", "secrets": []},
        "env_error": None,
        "draft": {"model": "", "parent_ref": "", "text": ""},
        "error": None,
        "created": None,
    }


async def new_thread(request: Request) -> Response:
    selected = request.query_params.get("env")
    context = await call(request, lambda arbe: _new_thread_context(arbe, selected))
    context["created"] = request.query_params.get("created")
    return render(request, "thread_new.html", context)


async def create_thread(request: Request) -> Response:
    """Create a thread from the form, post its first entry and start a worker."""
    form = await _form(request)
    env = _text(form, "env") or None
    model = _text(form, "model") or None
    parent_ref = _text(form, "parent_ref") or None
    raw_text = form.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    start = request.app.state.start_worker

    def work(arbe: Arbe) -> str:
        if not text.strip():
            raise RequestError(
                "The message is empty; write what the bot should do.", status=422
            )
        thread = arbe.threads.create(parent_ref, env=env, model=model)
        arbe.threads.post(thread.id, text)
        start(arbe)
        return thread.id

    try:
        thread_id = await call(request, work)
    except ArbeError as exc:
        logger.info("creating a thread in env %r failed: %s", env, exc.message)
        context = await call(request, lambda arbe: _new_thread_context(arbe, env))
        context["error"] = exc.message
        context["path"] = "/threads/new"
        context["draft"] = {
            "model": model or "",
            "parent_ref": parent_ref or "",
            "text": text,
        }
        return render(request, "thread_new.html", context, status_of(exc))
    return _see_other(f"/threads/{quote(thread_id)}")


async def thread_page(request: Request) -> Response:
    thread_id = request.path_params["thread_id"]

    def work(arbe: Arbe) -> dict[str, Any]:
        thread = arbe.threads.get(thread_id)
        dispatch = arbe.threads.dispatch(thread_id)
        entries = arbe.threads.entries(thread_id, 0, 10_000)
        return {
            "thread": thread_dict(thread, dispatch),
            "dispatch": dispatch_dict(dispatch) if dispatch else None,
            "entries": [entry_dict(e) for e in entries],
        }

    return render(request, "thread.html", await call(request, work))


async def post_entry(request: Request) -> Response:
    """Append a follow-up entry from the thread page's form."""
    thread_id = request.path_params["thread_id"]
    form = await _form(request)
    raw_text = form.get("text")
    text = raw_text if isinstance(raw_text, str) else ""
    start = request.app.state.start_worker

    def work(arbe: Arbe) -> None:
        arbe.threads.post(thread_id, text)
        start(arbe)

    await call(request, work)
    return _see_other(f"/threads/{quote(thread_id)}")


# --- Environments ------------------------------------------------------------


async def environment_list(request: Request) -> Response:
    def work(arbe: Arbe) -> list[dict[str, object]]:
        active = arbe.environments.active()
        return [env_dict(e, active) for e in arbe.environments.list()]

    envs = await call(request, work)
    return render(request, "environments.html", {"envs": envs})


async def environment_page(request: Request) -> Response:
    """Show an environment with the result of its diagnose run."""
    name = request.path_params["name"]

    def work(arbe: Arbe) -> dict[str, Any]:
        env = arbe.environments.get(name)
        checks = arbe.environments.diagnose(name)
        return {
            "env": env_dict(env, arbe.environments.active()),
            "checks": [c.to_dict() for c in checks],
            "ok": all(c.ok for c in checks),
        }

    return render(request, "environment.html", await call(request, work))


async def create_environment(request: Request) -> Response:
    """Create an environment from the "+ Create env" form, provisioning its sandbox.

    On success the browser returns to `return_to` (the new-thread form) with
    the new environment selected. On failure the form is shown again, open,
    with the error and the values entered.
    """
    form = await _form(request)
    name = _text(form, "name")
    runtime = _text(form, "runtime") or DEFAULT_RUNTIME
    repo = _text(form, "repo")
    secrets = split_names(
        [v for v in form.getlist("secret") if isinstance(v, str)]
        + [_text(form, "more_secrets")]
    )
    return_to = _local_path(_text(form, "return_to"), "/threads/new")

    def work(arbe: Arbe) -> str:
        env, warnings = create_env(
            arbe, name, runtime, repos=[repo] if repo else [], secrets=secrets
        )
        for warning in warnings:
            logger.info("environment %s: %s", env.name, warning)
        return env.name

    try:
        created = await call(request, work)
    except ArbeError as exc:
        logger.info("creating environment %r failed: %s", name, exc.message)
        context = await call(request, lambda arbe: _new_thread_context(arbe, None))
        context["env_form"] = {
            "name": name,
            "runtime": runtime,
            "repo": repo,
            "secrets": secrets,
        }
        context["env_error"] = exc.message
        context["path"] = "/threads/new"
        return render(request, "thread_new.html", context, status_of(exc))
    separator = "&" if "?" in return_to else "?"
    target = f"{return_to}{separator}env={quote(created)}&created={quote(created)}"
    return _see_other(target)


# --- Login -------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    next_path = _local_path(request.query_params.get("next"), "/threads")
    return render(request, "login.html", {"next": next_path, "error": None})


async def login(request: Request) -> Response:
    """Check the token from the login form and start a session."""
    sessions = request.app.state.sessions
    form = await _form(request)
    next_path = _local_path(_text(form, "next"), "/threads")
    if sessions is None:
        return _see_other(next_path)
    token = _text(form, "token")
    valid = await run_in_threadpool(sessions.check_token, token)
    if not valid:
        logger.warning("login with an invalid token from %s", _client(request))
        context = {"next": next_path, "error": "That token is not valid."}
        return render(request, "login.html", context, 401)
    response = _see_other(next_path)
    set_session_cookie(response, sessions.new_session())
    return response


async def logout(request: Request) -> Response:
    await _form(request)
    response = _see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "an unknown address"


def routes() -> list[Route]:
    """Return the page routes."""
    return [
        Route("/", index, methods=["GET"]),
        Route("/threads", thread_list, methods=["GET"]),
        Route("/threads", create_thread, methods=["POST"]),
        Route("/threads/new", new_thread, methods=["GET"]),
        Route("/threads/{thread_id}", thread_page, methods=["GET"]),
        Route("/threads/{thread_id}/entries", post_entry, methods=["POST"]),
        Route("/environments", environment_list, methods=["GET"]),
        Route("/environments", create_environment, methods=["POST"]),
        Route("/environments/{name}", environment_page, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
