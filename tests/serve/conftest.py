"""Fixtures for `arbe serve`: a fresh home, a local repo, live servers on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arbe_entry.app import Arbe
from arbe_entry.config import Settings
from tests.helpers import ARBE_SCRIPT, arbe_env

#: A loopback address with nothing listening (the discard port). A runtime that
#: a test did not point at a fake fails at once and sends nothing off the machine.
CLOSED_URL = "http://127.0.0.1:9"
#: Seconds a server may take to start.
START_TIMEOUT_S = 30


@pytest.fixture
def serve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point `ARBE_HOME` at a new home and keep every remote service on loopback.

    Workers started by the server inherit this environment.
    """
    home = tmp_path / "home"
    monkeypatch.setenv("ARBE_HOME", str(home))
    monkeypatch.setenv("ARBE_PLUGINS", "")
    monkeypatch.setenv("DAYTONA_API_URL", CLOSED_URL + "/api")
    monkeypatch.setenv("SPRITES_API_URL", CLOSED_URL)
    monkeypatch.setenv("OPENROUTER_BASE_URL", CLOSED_URL + "/v1")
    monkeypatch.setenv("OPENAI_BASE_URL", CLOSED_URL + "/v1")
    for name in (
        "ARBE_HOUSE",
        "ARBE_MASTER_KEY",
        "ARBE_DATABASE_URL",
        "OPENROUTER_API_KEY",
        "OPENAI_API_KEY",
        "DAYTONA_API_KEY",
        "SPRITES_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def local_repo(tmp_path: Path) -> Path:
    """Return a git repository with one commit and a README."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("readme-of-the-test-repo\n")
    git = ["git", "-c", "user.name=arbe", "-c", "user.email=arbe@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    return repo


@pytest.fixture
def house(serve_home: Path) -> Iterator[Arbe]:
    """Open the home's default house, for setting up state beside the server."""
    opened = Arbe(Settings.from_env())
    opened.house  # noqa: B018 - creates the default house
    yield opened
    opened.close()


class LiveServer:
    """A uvicorn server in a thread of this process, on 127.0.0.1."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_config=None, timeout_graceful_shutdown=1, lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._listener]}, daemon=True
        )

    def start(self) -> None:
        """Start serving and wait until the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread."""
        self._server.should_exit = True
        self._thread.join(10)
        self._listener.close()


@pytest.fixture
def live_app(serve_home: Path) -> Iterator[Callable[..., LiveServer]]:
    """Return a function that serves `create_app(**options)` on 127.0.0.1."""
    from arbe_entry.serve import create_app

    servers: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        options.setdefault("start_worker", lambda arbe: False)
        server = LiveServer(create_app(Settings.from_env(), **options))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def api(live_app: Callable[..., LiveServer]) -> Iterator[httpx.Client]:
    """Return an HTTP client of a live server that starts no workers."""
    server = live_app()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


class ServeProcess:
    """The real `arbe serve` command, run as a child process on 127.0.0.1."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = ""
        self._process = subprocess.Popen(
            [str(ARBE_SCRIPT), "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=arbe_env(env),
            text=True,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self._process.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = self._process.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if found:
                threading.Thread(target=self._drain, daemon=True).start()
                return found.group(1)
        self.stop()
        raise RuntimeError("arbe serve did not start:\n" + "".join(lines))

    def _drain(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self.log += line

    def stop(self) -> None:
        """Stop the server with SIGTERM, as Ctrl-C would."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)


@pytest.fixture
def serve_process(serve_home: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Return a function that starts `arbe serve` with extra arguments."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        process = ServeProcess(*args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def chromium_path() -> str | None:
    """Return Debian's Chromium, or None when it is not installed."""
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium")
