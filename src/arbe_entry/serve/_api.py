"""The JSON API: secrets, environments, sandboxes, threads and entries.

Responses have the same shapes as the CLI's `--json` output, built by the
same functions, and errors are the CLI's JSON error objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from arbe_core.errors import CredentialMissing, InvalidInput, RuntimeNotFound
from arbe_core.models import Environment, SecretAudience
from arbe_core.names import check_secret_name, check_slug
from arbe_entry.app import Arbe
from arbe_entry.cli._common import to_jsonable
from arbe_entry.cli.env import env_dict
from arbe_entry.cli.secret import _secret_dict as secret_dict
from arbe_entry.cli.thread import dispatch_dict, entry_dict, thread_dict
from arbe_entry.serve._body import Fields, query_flag, query_int, read_json

T = TypeVar("T")

#: The runtime of a new environment when the request names none.
DEFAULT_RUNTIME = "daytona"


def json_response(data: Any, status: int = 200) -> Response:
    """Return `data` as a JSON response (models and times made plain first)."""
    body = json.dumps(to_jsonable(data), ensure_ascii=False)
    return Response(body, status_code=status, media_type="application/json")


async def call(request: Request, work: Callable[[Arbe], T]) -> T:
    """Run `work` on the server's house, opened for this request, in a worker thread.

    Service calls block on storage and on runtimes, so they stay off the
    event loop.
    """
    opener = request.app.state.opener
    return await run_in_threadpool(lambda: work(opener()))


# --- House and secrets -------------------------------------------------------


async def get_house(request: Request) -> Response:
    house = await call(request, lambda arbe: arbe.house)
    return json_response(house)


async def list_secrets(request: Request) -> Response:
    secrets = await call(request, lambda arbe: arbe.secrets.list())
    return json_response([secret_dict(s) for s in secrets])


async def get_secret(request: Request) -> Response:
    name = request.path_params["name"]
    secret = await call(request, lambda arbe: arbe.secrets.view(name))
    return json_response(secret_dict(secret))


async def put_secret(request: Request) -> Response:
    """Create or rotate a secret; the value is written and never returned."""
    name = request.path_params["name"]
    check_secret_name(name)
    fields = Fields(await read_json(request))
    value = fields.text("value", required=True)
    audience_text = fields.text("audience")
    shared = fields.flag("shared")
    fields.done()
    assert value is not None
    audience = _audience(audience_text)

    secret = await call(
        request,
        lambda arbe: arbe.secrets.set(name, value, audience=audience, shared=shared),
    )
    return json_response(secret_dict(secret), 201 if secret.version == 1 else 200)


def _audience(text: str | None) -> SecretAudience | None:
    if text is None:
        return None
    try:
        return SecretAudience(text)
    except ValueError:
        raise InvalidInput(
            f"Invalid audience {text!r}: use environment or capability."
        ) from None


async def delete_secret(request: Request) -> Response:
    name = request.path_params["name"]
    secret = await call(request, lambda arbe: arbe.secrets.delete(name))
    return json_response({**secret_dict(secret), "deleted": True})


# --- Environments ------------------------------------------------------------


async def list_environments(request: Request) -> Response:
    def work(arbe: Arbe) -> list[dict[str, object]]:
        active = arbe.environments.active()
        return [env_dict(e, active) for e in arbe.environments.list()]

    return json_response(await call(request, work))


async def get_environment(request: Request) -> Response:
    name = request.path_params["name"]

    def work(arbe: Arbe) -> dict[str, object]:
        env = arbe.environments.get(name)
        return env_dict(env, arbe.environments.active())

    return json_response(await call(request, work))


async def create_environment(request: Request) -> Response:
    """Create an environment, provisioning its sandbox unless `sandbox_id` is given."""
    fields = Fields(await read_json(request))
    name = fields.text("name", required=True)
    runtime = fields.text("runtime") or DEFAULT_RUNTIME
    sandbox_id = fields.text("sandbox_id")
    repos = fields.texts("repos")
    required = fields.texts("secrets")
    optional = fields.texts("optional_secrets")
    auto_stop = fields.integer("auto_stop_minutes")
    fields.done()
    assert name is not None

    def work(arbe: Arbe) -> tuple[Environment, list[str], str | None]:
        env, warnings = create_env(
            arbe, name, runtime, sandbox_id, repos, required, optional, auto_stop
        )
        return env, warnings, arbe.environments.active()

    env, warnings, active = await call(request, work)
    return json_response({**env_dict(env, active), "warnings": warnings}, 201)


def create_env(
    arbe: Arbe,
    name: str,
    runtime: str,
    sandbox_id: str | None = None,
    repos: list[str] | None = None,
    secrets: list[str] | None = None,
    optional_secrets: list[str] | None = None,
    auto_stop_minutes: int | None = None,
) -> tuple[Environment, list[str]]:
    """Create an environment as `arbe env create` does, for the API and the pages.

    The runtime's credential is checked first, so a house without it gets a
    clear error and no provisioning is tried.

    Raises:
        CredentialMissing: the runtime needs a secret the house does not have.
        InvalidInput: the runtime is not registered, or a field breaks a rule.
    """
    check_slug(name, "environment")
    check_runtime_credential(arbe, runtime)
    return arbe.environments.create(
        name,
        runtime=runtime,
        sandbox=sandbox_id,
        repos=repos or [],
        secrets=secrets or [],
        optional_secrets=optional_secrets or [],
        auto_stop_minutes=auto_stop_minutes,
    )


def check_runtime_credential(arbe: Arbe, runtime: str) -> None:
    """Raise `CredentialMissing` when `runtime` needs a secret the house lacks."""
    try:
        credential = arbe.runtimes.credential_name(runtime)
    except RuntimeNotFound as exc:
        raise InvalidInput(exc.message) from exc
    if credential is None:
        return
    if all(s.name != credential for s in arbe.secrets.list()):
        raise CredentialMissing(credential, f"The {runtime} runtime")


async def delete_environment(request: Request) -> Response:
    name = request.path_params["name"]
    destroy = query_flag(request, "destroy_sandbox")
    env = await call(
        request, lambda arbe: arbe.environments.delete(name, destroy_sandbox=destroy)
    )
    return json_response(
        {**env_dict(env, None), "deleted": True, "sandbox_destroyed": destroy}
    )


async def diagnose_environment(request: Request) -> Response:
    name = request.path_params["name"]
    checks = await call(request, lambda arbe: arbe.environments.diagnose(name))
    return json_response(
        {
            "env": name,
            "ok": all(c.ok for c in checks),
            "checks": [c.to_dict() for c in checks],
        }
    )


# --- Runtimes and sandboxes --------------------------------------------------


async def list_runtimes(request: Request) -> Response:
    def work(arbe: Arbe) -> list[dict[str, object]]:
        present = {s.name for s in arbe.secrets.list()}
        runtimes: list[dict[str, object]] = []
        for name in arbe.runtimes.names():
            credential = arbe.runtimes.credential_name(name)
            runtimes.append(
                {
                    "name": name,
                    "credential": credential,
                    "credential_set": credential is None or credential in present,
                }
            )
        return runtimes

    return json_response(await call(request, work))


async def list_sandboxes(request: Request) -> Response:
    runtime = request.path_params["runtime"]

    def work(arbe: Arbe) -> list[dict[str, object]]:
        return [s.to_dict() for s in arbe.runtimes.get(runtime).list()]

    return json_response(await call(request, work))


# --- Threads and entries -----------------------------------------------------


async def list_threads(request: Request) -> Response:
    limit = query_int(request, "limit", 50, 1, 10_000)
    threads = await call(request, lambda arbe: arbe.threads.list(limit))
    return json_response([thread_dict(t) for t in threads])


async def create_thread(request: Request) -> Response:
    fields = Fields(await read_json(request))
    parent_ref = fields.text("parent_ref")
    env = fields.text("env")
    model = fields.text("model")
    fields.done()
    thread = await call(
        request, lambda arbe: arbe.threads.create(parent_ref, env=env, model=model)
    )
    return json_response(thread_dict(thread), 201)


async def get_thread(request: Request) -> Response:
    thread_id = request.path_params["thread_id"]

    def work(arbe: Arbe) -> dict[str, object]:
        thread = arbe.threads.get(thread_id)
        return thread_dict(thread, arbe.threads.dispatch(thread_id))

    return json_response(await call(request, work))


async def list_entries(request: Request) -> Response:
    thread_id = request.path_params["thread_id"]
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", 1000, 1, 10_000)
    entries = await call(
        request, lambda arbe: arbe.threads.entries(thread_id, after, limit)
    )
    return json_response([entry_dict(e) for e in entries])


async def post_entry(request: Request) -> Response:
    """Append a user entry and start a worker, as `thread entries create` does."""
    thread_id = request.path_params["thread_id"]
    fields = Fields(await read_json(request))
    text = fields.text("text", required=True)
    start_worker = fields.flag("start_worker")
    fields.done()
    assert text is not None
    start = request.app.state.start_worker

    def work(arbe: Arbe) -> dict[str, object]:
        entry, dispatch = arbe.threads.post(thread_id, text)
        started = start(arbe) if start_worker is not False else False
        return {
            **entry_dict(entry),
            "dispatch": dispatch_dict(dispatch),
            "worker_started": started,
        }

    return json_response(await call(request, work), 201)


def routes() -> list[Route]:
    """Return the API routes; `_openapi.py` describes each of them."""
    from arbe_entry.serve._events import thread_events
    from arbe_entry.serve._openapi import openapi

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/house", get_house, methods=["GET"]),
        Route("/api/secrets", list_secrets, methods=["GET"]),
        Route(
            "/api/secrets/{name}",
            _by_method(GET=get_secret, PUT=put_secret, DELETE=delete_secret),
            methods=["GET", "PUT", "DELETE"],
        ),
        Route(
            "/api/environments",
            _by_method(GET=list_environments, POST=create_environment),
            methods=["GET", "POST"],
        ),
        Route(
            "/api/environments/{name}",
            _by_method(GET=get_environment, DELETE=delete_environment),
            methods=["GET", "DELETE"],
        ),
        Route(
            "/api/environments/{name}/diagnose",
            diagnose_environment,
            methods=["GET"],
        ),
        Route("/api/runtimes", list_runtimes, methods=["GET"]),
        Route("/api/runtimes/{runtime}/sandboxes", list_sandboxes, methods=["GET"]),
        Route(
            "/api/threads",
            _by_method(GET=list_threads, POST=create_thread),
            methods=["GET", "POST"],
        ),
        Route("/api/threads/{thread_id}", get_thread, methods=["GET"]),
        Route(
            "/api/threads/{thread_id}/entries",
            _by_method(GET=list_entries, POST=post_entry),
            methods=["GET", "POST"],
        ),
        Route("/api/threads/{thread_id}/events", thread_events, methods=["GET"]),
    ]


Endpoint = Callable[[Request], Any]


def _by_method(**endpoints: Endpoint) -> Endpoint:
    """Return one endpoint that hands each method to its own function."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        response: Response = await endpoints[method](request)
        return response

    return endpoint
