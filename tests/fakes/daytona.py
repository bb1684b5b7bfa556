"""A fake Daytona API on 127.0.0.1 that the real `daytona` SDK can talk to.

One aiohttp server on an ephemeral port runs in a background thread. It
serves the control-plane endpoints under `/api` and the toolbox endpoints
under `/toolbox`, with the replies the SDK 0.226.1 expects: 200 with a full
Sandbox JSON for create, get, start, stop and delete, `{"items",
"nextCursor"}` for list, and `{"exitCode", "result"}` for `process/execute`.

Commands run for real with bash in a temporary directory per sandbox, which
is also `$HOME` there. Since tests have no network, `map_url` rewrites clone
URLs to local repositories through a `GIT_CONFIG_GLOBAL` file.

The fixture `fake_daytona` yields a started `FakeDaytona`. A CLI test points
arbe at it with `monkeypatch.setenv("DAYTONA_API_URL", fake.api_url)` (or
`fake.env()` for a subprocess), stores `fake.api_key` as the house secret
`DAYTONA_API_KEY`, and calls `fake.map_url("https://github.com/", URL)` with
the `file://` URL of a local folder that holds `org/repo` repositories.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY = "sk-test-123"
ORGANIZATION = "org-fake"
#: Sandbox states whose transition ends after some GETs: state -> next state.
TRANSITIONS = {
    "creating": "started",
    "starting": "started",
    "stopping": "stopped",
    "destroying": "gone",
}


@dataclass
class Fault:
    """A switchable failure for requests whose method and path match."""

    method: str
    #: A regular expression matched against the whole request path.
    path: str
    #: The status to reply with. 200 lets the request through, which with
    #: `delay` makes a slow reply.
    status: int = 500
    times: int = 1
    retry_after: str | None = None
    #: Seconds to wait before the response.
    delay: float = 0.0
    #: Close the connection without a response.
    drop: bool = False
    #: Carry the request out first, then fail the reply.
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (
            self.method in ("*", method) and re.fullmatch(self.path, path) is not None
        )


@dataclass
class LoggedRequest:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str | None
    #: The client's address, as the server's socket saw it.
    peer: str | None
    status: int = 0


@dataclass
class FakeSandbox:
    """A sandbox's record and its directory on this machine."""

    id: str
    name: str
    labels: dict[str, str]
    env: dict[str, str]
    root: Path
    state: str = "creating"
    polls_left: int = 0
    auto_stop: int = 15
    target: str = "us"
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def begin(self, state: str, polls: int) -> None:
        self.state = state
        self.polls_left = polls


class FakeDaytona:
    """The fake server: its address, key, state, request log and fault switches.

    Attributes:
        create_polls: GETs a new sandbox stays `creating` for.
        start_polls: GETs a stopped sandbox stays `starting` for.
        restore_polls: GETs an archived sandbox stays `starting` for.
        stop_polls: GETs a sandbox stays `stopping` for.
        page_size: list items per page when the request gives no `limit`.
        stuck_states: states that never end, such as `{"starting"}`.
    """

    def __init__(self, workdir: Path, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.workdir = workdir
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.requests: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self.stuck_states: set[str] = set()
        self.create_polls = 2
        self.start_polls = 1
        self.restore_polls = 4
        self.stop_polls = 1
        self.page_size = 2
        self.gitconfig = workdir / "gitconfig"
        self.gitconfig.write_text("")
        self._url_map: dict[str, str] = {}
        self._lock = threading.RLock()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- Test-side switches --------------------------------------------------

    @property
    def api_url(self) -> str:
        """The URL to give the SDK as `api_url` (`DAYTONA_API_URL`)."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def toolbox_url(self) -> str:
        """The toolbox proxy URL that every sandbox record carries."""
        return f"http://127.0.0.1:{self.port}/toolbox"

    def env(self) -> dict[str, str]:
        """Return the process environment that points arbe at this fake."""
        return {"DAYTONA_API_URL": self.api_url}

    def map_url(self, prefix: str, target: str) -> None:
        """Make `git` in every sandbox fetch `prefix...` from `target...` instead.

        For example `map_url("https://github.com/", "file:///tmp/repos/")`
        clones `https://github.com/org/repo` from `/tmp/repos/org/repo`.
        """
        with self._lock:
            self._url_map[prefix] = target
            lines = [
                f'[url "{replacement}"]\n\tinsteadOf = {original}\n'
                for original, replacement in self._url_map.items()
            ]
        self.gitconfig.write_text("".join(lines))

    def fail(self, method: str, path: str, status: int = 500, **options: Any) -> Fault:
        """Add a fault; `options` are the other `Fault` fields."""
        fault = Fault(method, path, status, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def add_sandbox(
        self, labels: dict[str, str], state: str = "started", name: str | None = None
    ) -> FakeSandbox:
        """Create a sandbox directly, as another client of the account would."""
        with self._lock:
            sandbox = self._new_sandbox(name, labels, {}, 15)
            sandbox.begin(state, 0)
        return sandbox

    def find(self, id_or_name: str) -> FakeSandbox | None:
        """Return the live sandbox with this id or name, or None."""
        with self._lock:
            if id_or_name in self.sandboxes:
                return self.sandboxes[id_or_name]
            for sandbox in self.sandboxes.values():
                if sandbox.name == id_or_name:
                    return sandbox
        return None

    def calls(self, method: str, path: str) -> list[LoggedRequest]:
        """Return the logged requests whose method and whole path match."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == method and re.fullmatch(path, r.path)
            ]

    # --- Lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the server thread and bind an ephemeral port on 127.0.0.1."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def close(self) -> None:
        """Kill running commands, stop the server and end the thread."""
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(
            [
                web.post("/api/sandbox", self._create),
                web.get("/api/sandbox", self._list),
                web.get("/api/sandbox/{key}", self._get),
                web.post("/api/sandbox/{key}/start", self._start),
                web.post("/api/sandbox/{key}/stop", self._stop),
                web.delete("/api/sandbox/{key}", self._delete),
                web.put("/api/sandbox/{key}/labels", self._labels),
                web.get("/api/sandbox/{key}/toolbox-proxy-url", self._proxy_url),
                web.post("/toolbox/{key}/process/execute", self._execute),
                web.get("/toolbox/{key}/work-dir", self._home_dir),
                web.get("/toolbox/{key}/user-home-dir", self._home_dir),
            ]
        )
        # A short shutdown timeout, so a test that left a slow reply pending
        # does not wait for it at teardown.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        for proc in list(self._procs):
            _kill_group(proc)
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Middleware: log, authenticate, inject faults ------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        peer = (
            request.transport.get_extra_info("peername") if request.transport else None
        )
        logged = LoggedRequest(
            request.method,
            request.path,
            {k: request.query.getall(k) for k in request.query},
            body,
            request.headers.get("Authorization"),
            peer[0] if peer else None,
        )
        with self._lock:
            self.requests.append(logged)
            fault = self._take_fault(request.method, request.path)

        response = await self._respond(request, handler, fault)
        logged.status = response.status
        return response

    async def _respond(
        self, request: web.Request, handler: Handler, fault: Fault | None
    ) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid credentials")
        if fault is None:
            return await handler(request)

        await asyncio.sleep(fault.delay)
        if fault.after:
            await handler(request)
        if fault.drop:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault.status == 200:
            return await handler(request)
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        return _error(fault.status, f"Injected fault {fault.status}", headers)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                return fault
        return None

    # --- Control plane -------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            if body.get("name") and self.find(body["name"]) is not None:
                return _error(409, f"Sandbox with name {body['name']} already exists")
            sandbox = self._new_sandbox(
                body.get("name"),
                body.get("labels") or {},
                body.get("env") or {},
                body.get("autoStopInterval", 15),
            )
            sandbox.target = body.get("target") or "us"
            sandbox.begin("creating", self.create_polls)
            return web.json_response(self._record(sandbox))

    async def _get(self, request: web.Request) -> web.Response:
        with self._lock:
            sandbox = self._poll(request.match_info["key"])
            if sandbox is None:
                return _not_found(request.match_info["key"])
            return web.json_response(self._record(sandbox))

    async def _list(self, request: web.Request) -> web.Response:
        label_filter = json.loads(request.query.get("labels", "{}"))
        states = request.query.getall("states", [])
        limit = int(request.query.get("limit", self.page_size))
        offset = int(request.query.get("cursor", "0"))
        with self._lock:
            matching = [
                s
                for s in self.sandboxes.values()
                if all(s.labels.get(k) == v for k, v in label_filter.items())
                and (not states or s.state in states)
            ]
            page = matching[offset : offset + limit]
            items = [self._record(s, list_item=True) for s in page]
        more = offset + limit < len(matching)
        return web.json_response(
            {"items": items, "nextCursor": str(offset + limit) if more else None}
        )

    async def _start(self, request: web.Request) -> web.Response:
        with self._lock:
            sandbox = self.find(request.match_info["key"])
            if sandbox is None:
                return _not_found(request.match_info["key"])
            if sandbox.state in ("stopped", "archived"):
                restoring = sandbox.state == "archived"
                polls = self.restore_polls if restoring else self.start_polls
                sandbox.begin("starting", polls)
            elif sandbox.state not in ("started", "starting"):
                return _error(409, f"Sandbox is in {sandbox.state} state")
            return web.json_response(self._record(sandbox))

    async def _stop(self, request: web.Request) -> web.Response:
        with self._lock:
            sandbox = self.find(request.match_info["key"])
            if sandbox is None:
                return _not_found(request.match_info["key"])
            if sandbox.state == "started":
                sandbox.begin("stopping", self.stop_polls)
            elif sandbox.state not in ("stopped", "stopping", "archived"):
                return _error(409, f"Sandbox is in {sandbox.state} state")
            return web.json_response(self._record(sandbox))

    async def _delete(self, request: web.Request) -> web.Response:
        with self._lock:
            sandbox = self.find(request.match_info["key"])
            if sandbox is None:
                return _not_found(request.match_info["key"])
            sandbox.begin("destroying", 0)
            return web.json_response(self._record(sandbox))

    async def _labels(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            sandbox = self.find(request.match_info["key"])
            if sandbox is None:
                return _not_found(request.match_info["key"])
            sandbox.labels = dict(body["labels"])
            return web.json_response({"labels": sandbox.labels})

    async def _proxy_url(self, request: web.Request) -> web.Response:
        return web.json_response({"url": self.toolbox_url})

    def _new_sandbox(
        self, name: str | None, labels: dict[str, str], env: dict[str, str], stop: int
    ) -> FakeSandbox:
        sandbox_id = str(uuid.uuid4())
        root = self.workdir / "sandboxes" / sandbox_id
        root.mkdir(parents=True)
        sandbox = FakeSandbox(sandbox_id, name or sandbox_id, labels, env, root)
        sandbox.auto_stop = stop
        self.sandboxes[sandbox_id] = sandbox
        return sandbox

    def _poll(self, key: str) -> FakeSandbox | None:
        """Find a sandbox for a GET, moving a transitional state one poll on."""
        sandbox = self.find(key)
        if sandbox is None or sandbox.state in self.stuck_states:
            return sandbox
        if sandbox.state in TRANSITIONS:
            if sandbox.polls_left > 0:
                sandbox.polls_left -= 1
                return sandbox
            sandbox.state = TRANSITIONS[sandbox.state]
        if sandbox.state == "gone":
            del self.sandboxes[sandbox.id]
            return None
        return sandbox

    def _record(self, sandbox: FakeSandbox, list_item: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": sandbox.id,
            "organizationId": ORGANIZATION,
            "name": sandbox.name,
            "user": "daytona",
            "labels": sandbox.labels,
            "public": False,
            "networkBlockAll": False,
            "target": sandbox.target,
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": sandbox.state,
            "autoStopInterval": sandbox.auto_stop,
            "createdAt": sandbox.created_at,
            "updatedAt": datetime.now(UTC).isoformat(),
            "toolboxProxyUrl": self.toolbox_url,
        }
        if not list_item:
            record["env"] = sandbox.env
            record["kvm"] = False
        return record

    # --- Toolbox -------------------------------------------------------------

    async def _home_dir(self, request: web.Request) -> web.Response:
        sandbox = self._started(request.match_info["key"])
        if isinstance(sandbox, web.Response):
            return sandbox
        return web.json_response({"dir": str(sandbox.root)})

    async def _execute(self, request: web.Request) -> web.Response:
        sandbox = self._started(request.match_info["key"])
        if isinstance(sandbox, web.Response):
            return sandbox
        body = await request.json()
        cwd = Path(body.get("cwd") or sandbox.root)
        if not cwd.is_dir():
            return _error(400, f"Working directory {cwd} does not exist")
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            body["command"],
            cwd=cwd,
            env=self._command_env(sandbox, body.get("envs") or {}),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs.add(proc)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), body.get("timeout"))
        except TimeoutError:
            _kill_group(proc)
            return _timeout_error(body["timeout"])
        finally:
            self._procs.discard(proc)
        result = output.decode("utf-8", errors="replace")
        return web.json_response({"exitCode": proc.returncode, "result": result})

    def _started(self, key: str) -> FakeSandbox | web.Response:
        with self._lock:
            sandbox = self.find(key)
        if sandbox is None:
            return _not_found(key)
        if sandbox.state != "started":
            return _error(400, f"Sandbox is not started (state {sandbox.state})")
        return sandbox

    def _command_env(
        self, sandbox: FakeSandbox, envs: dict[str, str]
    ) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(sandbox.root),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_GLOBAL": str(self.gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            **sandbox.env,
            **envs,
        }


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    reason = web.Response(status=status).reason
    body = {"statusCode": status, "message": message, "error": reason}
    return web.json_response(body, status=status, headers=headers)


def _not_found(key: str) -> web.Response:
    return _error(404, f"Sandbox with ID or name {key} not found")


def _timeout_error(seconds: int) -> web.Response:
    body = {
        "statusCode": 408,
        "message": f"command timed out after {seconds} seconds",
        "code": "PROCESS_EXECUTION_TIMEOUT",
        "source": "DAYTONA_DAEMON",
    }
    return web.json_response(body, status=408)


_counter = itertools.count()


@pytest.fixture
def fake_daytona() -> Iterator[FakeDaytona]:
    """Yield a running fake Daytona API with the key `sk-test-123`."""
    with tempfile.TemporaryDirectory(prefix=f"fake-daytona-{next(_counter)}-") as tmp:
        fake = FakeDaytona(Path(tmp))
        fake.start()
        try:
            yield fake
        finally:
            fake.close()
