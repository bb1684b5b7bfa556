"""A fake Sprites API on 127.0.0.1 that the real `sprites-py` SDK can talk to.

One aiohttp server on an ephemeral port, run in a background thread, serves
REST (`/v1/sprites` create, get, list with `prefix` and continuation tokens,
delete with 204) and the exec websocket (`/v1/sprites/{name}/exec`). Both
share the port, because sprites-py 0.7.2 derives the websocket URL from the
REST base URL. The websocket speaks the SDK's binary framing: the first byte of a
frame is 0x01 stdout, 0x02 stderr or 0x03 exit (one code byte) from the
server, and 0x00 stdin or 0x04 stdin EOF from the client.

Commands run for real: argv from the `cmd` parameters (the executable from
`path`), the environment from the `env` parameters (which replace the
default environment, as the Sprites exec docs state), in a temporary directory per
sprite. That directory is used as the sprite's `/`: an absolute `dir` such as
`/home/sprite/work` runs in `<root>/home/sprite/work`, and `$HOME` is
`<root>/home/sprite`. A command that names an absolute path sees this
machine's file system, so tests use relative paths. A sprite is `cold` when
created, `running` during an exec and `warm` afterwards.

Every command gets `GIT_ALLOW_PROTOCOL=file`, even with `env` parameters, so
git in a test never reaches the network. `map_url` rewrites clone URLs to
local repositories through the `GIT_CONFIG_GLOBAL` file of the default
environment.

Fixtures: `fake_sprites` yields a started `FakeSprites` with the token
`sk-test-123`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from aiohttp import WSMsgType, web

TOKEN = "sk-test-123"
ORGANIZATION = "org-fake"
HOME = "/home/sprite"
#: The Sprites API caps list pages at 50.
MAX_PAGE = 50
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
#: Seconds the fake keeps reading output after the command exits, for output
#: still held by a background process that inherited the pipes.
_DRAIN_S = 0.5
STDOUT, STDERR, EXIT, STDIN, STDIN_EOF = 1, 2, 3, 0, 4

Target = Literal["rest", "exec", "all"]
ExecFault = Literal["close_before_exit", "hang"]


@dataclass
class Fault:
    """A switchable HTTP failure for the next `times` matching requests."""

    status: int
    target: Target = "all"
    times: int = 1
    #: Seconds sent as `Retry-After` and as `retry_after_seconds` in the body.
    retry_after: int | None = None

    def matches(self, kind: str) -> bool:
        return self.times > 0 and self.target in ("all", kind)


@dataclass
class LoggedRequest:
    """One request as the fake saw it; `kind` is `rest` or `exec`."""

    kind: str
    method: str
    path: str
    query: list[tuple[str, str]]
    authorization: str | None
    status: int = 0


@dataclass
class FakeSprite:
    """A sprite's record and the directory used as its `/`."""

    id: str
    name: str
    root: Path
    labels: list[str]
    status: str = "cold"
    running: int = 0
    created_at: str = field(default_factory=lambda: _now())

    @property
    def home(self) -> Path:
        """The directory used as `/home/sprite`."""
        return self.root / HOME.lstrip("/")


class FakeSprites:
    """The fake server: its address, token, sprites, request log and faults.

    Attributes:
        page_size: the max sprites per list page (the SDK requests 100).
        slim_list: list entries carry only `name`, `org_slug` and
            `updated_at`, as the current API documents; False adds `status`.
    """

    def __init__(self, workdir: Path, token: str = TOKEN) -> None:
        self.token = token
        self.workdir = workdir
        self.sprites: dict[str, FakeSprite] = {}
        self.requests: list[LoggedRequest] = []
        self.faults: list[Fault] = []
        self.exec_faults: list[ExecFault] = []
        self.page_size = MAX_PAGE
        self.slim_list = True
        self.gitconfig = workdir / "gitconfig"
        self.gitconfig.write_text("")
        self._url_map: dict[str, str] = {}
        self._lock = threading.RLock()
        self._groups: set[int] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- Test-side switches --------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as `base_url` (`SPRITES_API_URL`)."""
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Return the settings that point arbe at this fake."""
        return {"SPRITES_API_URL": self.base_url}

    def fail(
        self,
        status: int,
        target: Target = "all",
        times: int = 1,
        retry_after: int | None = None,
    ) -> Fault:
        """Fail the next `times` requests of `target` with HTTP `status`."""
        fault = Fault(status, target, times, retry_after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def break_exec(self, fault: ExecFault, times: int = 1) -> None:
        """Make the next `times` execs fail after the websocket opens.

        `close_before_exit` runs the command, sends its output, then closes
        with code 1011 and no exit frame. `hang` opens the websocket and then
        sends nothing.
        """
        with self._lock:
            self.exec_faults.extend([fault] * times)

    def add_sprite(self, name: str, status: str = "cold") -> FakeSprite:
        """Create a sprite directly, as another client of the account would."""
        with self._lock:
            sprite = self._new_sprite(name, [])
            sprite.status = status
        return sprite

    def map_url(self, prefix: str, target: str) -> None:
        """Make `git` in every sprite fetch `prefix...` from `target...` instead.

        For example `map_url("https://github.com/", "file:///tmp/repos/")`
        clones `https://github.com/org/repo` from `/tmp/repos/org/repo`.
        """
        with self._lock:
            self._url_map[prefix] = target
            lines = [
                f'[url "{to}"]\n\tinsteadOf = {frm}\n'
                for frm, to in self._url_map.items()
            ]
        self.gitconfig.write_text("".join(lines))

    def calls(self, kind: str, method: str = "*") -> list[LoggedRequest]:
        """Return the logged requests of one kind (`rest` or `exec`)."""
        with self._lock:
            return [
                r for r in self.requests if r.kind == kind and method in ("*", r.method)
            ]

    # --- Lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the server thread and bind an ephemeral port on 127.0.0.1."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    def close(self) -> None:
        """Kill every command's process group, stop the server, end the thread."""
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(
            [
                web.post("/v1/sprites", self._create),
                web.get("/v1/sprites", self._list),
                web.get("/v1/sprites/{name}", self._get),
                web.delete("/v1/sprites/{name}", self._delete),
                web.get("/v1/sprites/{name}/exec", self._exec),
            ]
        )
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        for group in list(self._groups):
            _kill_group(group)
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"fake server stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Middleware: log, authenticate, inject faults ------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Any
    ) -> web.StreamResponse:
        kind = "exec" if request.path.endswith("/exec") else "rest"
        logged = LoggedRequest(
            kind,
            request.method,
            request.path,
            list(request.query.items()),
            request.headers.get("Authorization"),
        )
        with self._lock:
            self.requests.append(logged)
            fault = next((f for f in self.faults if f.matches(kind)), None)
            if fault is not None:
                fault.times -= 1

        if request.headers.get("Authorization") != f"Bearer {self.token}":
            response: web.StreamResponse = _error(401, "unauthorized")
        elif fault is not None:
            response = _fault_response(fault)
        else:
            response = await handler(request)
        logged.status = response.status
        return response

    # --- REST ----------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name")
        if not isinstance(name, str) or not _valid_name(name):
            return web.json_response({"errors": ["invalid name"]}, status=400)
        with self._lock:
            if name in self.sprites:
                return _error(400, f"sprite {name} already exists")
            sprite = self._new_sprite(name, list(body.get("labels") or []))
            return web.json_response(self._record(sprite), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        with self._lock:
            sprite = self.sprites.get(request.match_info["name"])
            if sprite is None:
                return _error(404, "sprite not found")
            return web.json_response(self._record(sprite))

    async def _list(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        requested = int(request.query.get("max_results", MAX_PAGE))
        limit = max(1, min(requested, MAX_PAGE, self.page_size))
        offset = int(request.query.get("continuation_token", "0"))
        with self._lock:
            matching = sorted(n for n in self.sprites if n.startswith(prefix))
            page = [self.sprites[n] for n in matching[offset : offset + limit]]
            entries = [self._entry(sprite) for sprite in page]
        more = offset + limit < len(matching)
        return web.json_response(
            {
                "sprites": entries,
                "has_more": more,
                "next_continuation_token": str(offset + limit) if more else None,
            }
        )

    async def _delete(self, request: web.Request) -> web.Response:
        with self._lock:
            sprite = self.sprites.pop(request.match_info["name"], None)
        if sprite is None:
            return _error(404, "sprite not found")
        return web.Response(status=204)

    def _new_sprite(self, name: str, labels: list[str]) -> FakeSprite:
        sprite_id = str(uuid.uuid4())
        sprite = FakeSprite(
            sprite_id, name, self.workdir / "sprites" / sprite_id, labels
        )
        sprite.home.mkdir(parents=True)
        self.sprites[name] = sprite
        return sprite

    def _record(self, sprite: FakeSprite) -> dict[str, Any]:
        return {
            "id": sprite.id,
            "name": sprite.name,
            "organization": ORGANIZATION,
            "status": sprite.status,
            "url": f"{self.base_url}/sprite-url/{sprite.name}",
            "url_settings": {"auth": "sprite"},
            "labels": sprite.labels,
            "created_at": sprite.created_at,
            "updated_at": _now(),
        }

    def _entry(self, sprite: FakeSprite) -> dict[str, Any]:
        entry = {"name": sprite.name, "org_slug": ORGANIZATION, "updated_at": _now()}
        return entry if self.slim_list else {**entry, "status": sprite.status}

    # --- Exec websocket ------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            sprite = self.sprites.get(request.match_info["name"])
            fault = self.exec_faults.pop(0) if self.exec_faults else None
        if sprite is None:
            return _error(404, "sprite not found")

        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            if fault == "hang":
                async for _ in ws:
                    pass
                return ws
            self._begin(sprite)
            try:
                await self._run(ws, sprite, request.query, fault)
            finally:
                self._end(sprite)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _run(
        self,
        ws: web.WebSocketResponse,
        sprite: FakeSprite,
        query: Any,
        fault: ExecFault | None,
    ) -> None:
        argv = query.getall("cmd", [])
        executable = query.get("path") or (argv[0] if argv else "bash")
        cwd = sprite.root / query.get("dir", HOME).lstrip("/")
        env = _parse_env(query.getall("env", [])) or self._default_env(sprite)
        env["GIT_ALLOW_PROTOCOL"] = "file"
        try:
            proc = await asyncio.create_subprocess_exec(
                executable,
                *argv[1:],
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            await ws.send_bytes(bytes([STDERR]) + f"fake-sprites: {exc}\n".encode())
            await ws.send_bytes(bytes([EXIT, 127 if cwd.is_dir() else 1]))
            await ws.close()
            return

        self._groups.add(proc.pid)
        try:
            await self._serve_process(ws, proc, fault)
        finally:
            _kill_group(proc.pid)
            self._groups.discard(proc.pid)

    async def _serve_process(
        self,
        ws: web.WebSocketResponse,
        proc: asyncio.subprocess.Process,
        fault: ExecFault | None,
    ) -> None:
        """Pump output until the command ends, then send the exit frame.

        The command's process group is killed when the client goes away.
        """
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, STDOUT, ws)),
            asyncio.create_task(_pump(proc.stderr, STDERR, ws)),
        ]
        reader = asyncio.create_task(_read_client(ws, proc))
        waiter = asyncio.create_task(proc.wait())
        try:
            await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                return
            await asyncio.wait(pumps, timeout=_DRAIN_S)
            if fault == "close_before_exit":
                await ws.close(code=1011, message=b"fake: closed before exit")
                return
            code = waiter.result()
            # A command killed by signal N exits 128 + N, as a shell reports it.
            code = code if code >= 0 else 128 - code
            await ws.send_bytes(bytes([EXIT, code & 0xFF]))
            await ws.close()
        finally:
            for task in (*pumps, reader, waiter):
                task.cancel()

    def _begin(self, sprite: FakeSprite) -> None:
        with self._lock:
            sprite.running += 1
            sprite.status = "running"

    def _end(self, sprite: FakeSprite) -> None:
        with self._lock:
            sprite.running -= 1
            if sprite.running == 0 and sprite.name in self.sprites:
                sprite.status = "warm"

    def _default_env(self, sprite: FakeSprite) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(sprite.home),
            "USER": "sprite",
            "LANG": "C.UTF-8",
            "GIT_CONFIG_GLOBAL": str(self.gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }


async def _pump(stream: asyncio.StreamReader, stream_id: int, ws: Any) -> None:
    while chunk := await stream.read(4096):
        try:
            await ws.send_bytes(bytes([stream_id]) + chunk)
        except ConnectionError:
            return


async def _read_client(ws: web.WebSocketResponse, proc: Any) -> None:
    """Feed stdin frames to the command; return when the client goes away."""
    async for message in ws:
        if message.type != WSMsgType.BINARY or not message.data:
            continue
        stream_id, payload = message.data[0], message.data[1:]
        with contextlib.suppress(ConnectionError):
            if stream_id == STDIN:
                proc.stdin.write(payload)
                await proc.stdin.drain()
            elif stream_id == STDIN_EOF:
                proc.stdin.close()


def _parse_env(entries: list[str]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _valid_name(name: str) -> bool:
    return len(name) <= 63 and _NAME.fullmatch(name) is not None


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _fault_response(fault: Fault) -> web.Response:
    body: dict[str, Any] = {"error": f"injected_{fault.status}"}
    headers = {}
    if fault.retry_after is not None:
        body["retry_after_seconds"] = fault.retry_after
        headers["Retry-After"] = str(fault.retry_after)
    if fault.status == 429:
        body["message"] = "Too many requests"
    return web.json_response(body, status=fault.status, headers=headers)


@pytest.fixture
def fake_sprites(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSprites]:
    """Yield a running fake Sprites API with the token `sk-test-123`.

    `SPRITES_CLIENT_SIGNALS=0` keeps sprites-py from probing the machine for
    its client-signal headers.
    """
    monkeypatch.setenv("SPRITES_CLIENT_SIGNALS", "0")
    with tempfile.TemporaryDirectory(prefix="fake-sprites-") as tmp:
        fake = FakeSprites(Path(tmp))
        fake.start()
        try:
            yield fake
        finally:
            fake.close()
