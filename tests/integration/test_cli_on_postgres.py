"""The CLI, unchanged, on a PostgreSQL house selected by `ARBE_DATABASE_URL`.

Every command runs as the real console script against a fresh schema. Each
test also checks that the rows landed in PostgreSQL and that no SQLite file
was made in the home.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest

from arbe_entry.app import Arbe
from arbe_entry.config import Settings
from tests.helpers import run_arbe

#: A made-up master key shared by every process of the test.
MASTER_KEY = base64.b64encode(bytes(range(32))).decode("ascii")
TOKEN_V1 = "ghp_test_0123456789abcdef"
TOKEN_V2 = "ghp_test_fedcba9876543210"
REDACTED = "***GITHUB_TOKEN***"
#: Seconds a detached worker has to exit on its own before the test kills it.
WORKER_EXIT_S = 15


def detached_workers(home: Path) -> list[int]:
    """Return the ids of live `arbe worker` processes whose ARBE_HOME is `home`.

    `entries create` starts these in a session of their own, so the test
    finds them through /proc, by the home that only this test uses.
    """
    marker = f"ARBE_HOME={home}".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmdline and marker in environ:
            found.append(int(proc.name))
    return found


def stop_detached_workers(home: Path) -> None:
    """Wait for the home's detached workers to exit, and SIGKILL any left."""
    deadline = time.monotonic() + WORKER_EXIT_S
    while detached_workers(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in detached_workers(home):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def postgres_cli(
    postgres_url: str, arbe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Point every `arbe` run of the test at the test's schema, and yield its URL.

    Detached workers are stopped before the schema is dropped.
    """
    monkeypatch.setenv("ARBE_DATABASE_URL", postgres_url)
    monkeypatch.setenv("ARBE_MASTER_KEY", MASTER_KEY)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)
    try:
        yield postgres_url
    finally:
        stop_detached_workers(arbe_home)


@pytest.fixture(scope="module")
def repo(contract_repo: str) -> Path:
    """A local git repository whose one commit adds README.md."""
    return Path(urlparse(contract_repo).path)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def json_of(*args: str, input: str | None = None) -> Any:
    """Run `arbe ARGS --json`, check that it exited 0 and return its document."""
    return json.loads(ok(run_arbe(*args, "--json", input=input)).stdout)


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """Return the rows of `query` run on the test's schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def set_token() -> None:
    json_of("secret", "set", "GITHUB_TOKEN", "--shared", input=TOKEN_V1)


class TestCliOnPostgres:
    def test_house_commands(self, postgres_cli: str, arbe_home: Path) -> None:
        created = json_of("house", "create", "acme")
        other = json_of("house", "create", "other")
        listed = json_of("house", "list")
        used = ok(run_arbe("house", "use", "other"))
        viewed = json_of("house", "view")
        named = json_of("house", "view", "acme")

        assert created["name"] == "acme"
        assert created["id"].startswith("hse_")
        assert [(h["name"], h["default"]) for h in listed] == [
            ("acme", True),
            ("other", False),
        ]
        assert used.stdout == "Default house is now other.\n"
        assert viewed["id"] == other["id"]
        assert named["id"] == created["id"]
        assert rows(postgres_cli, "SELECT name FROM houses ORDER BY name") == [
            ("acme",),
            ("other",),
        ]
        assert not (arbe_home / "arbe.db").exists()

    def test_secret_commands(self, postgres_cli: str, arbe_home: Path) -> None:
        first = json_of("secret", "set", "GITHUB_TOKEN", "--shared", input=TOKEN_V1)
        second = json_of("secret", "set", "GITHUB_TOKEN", input=TOKEN_V2)
        listed = json_of("secret", "list")
        viewed = json_of("secret", "view", "GITHUB_TOKEN")
        history = json_of("secret", "history", "GITHUB_TOKEN")
        rolled = json_of("secret", "rollback", "GITHUB_TOKEN", "1")
        opened = Arbe(
            Settings(home=arbe_home, database_url=postgres_cli, master_key=MASTER_KEY)
        )
        try:
            resolved = opened.secrets.resolve("GITHUB_TOKEN")
        finally:
            opened.close()
        sealed = rows(postgres_cli, "SELECT sealed FROM secret_versions")
        deleted = json_of("secret", "delete", "GITHUB_TOKEN")
        after = json_of("secret", "list")

        assert (first["version"], first["shared"]) == (1, True)
        assert (second["version"], second["shared"]) == (2, True)
        assert [(s["name"], s["version"]) for s in listed] == [("GITHUB_TOKEN", 2)]
        assert viewed["audience"] == "environment"
        assert [(v["version"], v["current"]) for v in history] == [
            (2, True),
            (1, False),
        ]
        assert (rolled["version"], rolled["rolled_back_to"]) == (3, 1)
        assert resolved is not None
        assert resolved[0] == TOKEN_V1
        assert len(sealed) == 3
        assert [TOKEN_V1.encode() in bytes(s[0]) for s in sealed] == [False] * 3
        assert deleted["deleted"] is True
        assert after == []
        assert TOKEN_V1 not in json.dumps([first, listed, viewed, history, rolled])
        assert not (arbe_home / "arbe.db").exists()

    def test_env_commands(self, postgres_cli: str, arbe_home: Path, repo: Path) -> None:
        set_token()
        json_of("secret", "set", "OTHER_TOKEN", input="sk-test-123")
        json_of(
            "secret",
            "set",
            "OPENROUTER_API_KEY",
            "--audience",
            "capability",
            input="sk-test-456",
        )

        created = json_of(
            "env", "create", "demo", "--runtime", "local", "--repo", str(repo)
        )
        listed = json_of("env", "list")
        viewed = json_of("env", "view", "demo")
        bound = json_of("env", "bind-secret", "demo", "GITHUB_TOKEN")
        optional = json_of("env", "bind-secret", "demo", "OTHER_TOKEN", "--optional")
        unbound = json_of("env", "unbind-secret", "demo", "OTHER_TOKEN")
        diagnosed = json_of("env", "diagnose", "demo")
        spare = json_of("env", "create", "spare", "--runtime", "local")
        used = json_of("env", "use", "spare")
        demo_after_use = json_of("env", "view", "demo")
        deleted = json_of("env", "delete", "spare", "--destroy-sandbox")
        after = json_of("env", "list")

        assert created["runtime"] == "local"
        assert created["sandbox_id"].startswith("lsb_")
        assert created["allowed_repos"] == [str(repo)]
        assert created["active"] is True
        assert [e["name"] for e in listed] == ["demo"]
        assert viewed["sandbox_id"] == created["sandbox_id"]
        assert bound["bindings"] == [{"name": "GITHUB_TOKEN", "required": True}]
        assert optional["bindings"] == [
            {"name": "GITHUB_TOKEN", "required": True},
            {"name": "OTHER_TOKEN", "required": False},
        ]
        assert unbound["bindings"] == [{"name": "GITHUB_TOKEN", "required": True}]
        assert diagnosed["ok"] is True
        assert [c["ok"] for c in diagnosed["checks"]] == [True] * 4
        assert spare["active"] is False
        assert (used["name"], used["active"]) == ("spare", True)
        assert demo_after_use["active"] is False
        assert (deleted["deleted"], deleted["sandbox_destroyed"]) == (True, True)
        assert [e["name"] for e in after] == ["demo"]
        assert rows(postgres_cli, "SELECT name FROM environments") == [("demo",)]
        assert not (arbe_home / "arbe.db").exists()

    def test_dispatch_and_audit_commands(
        self, postgres_cli: str, arbe_home: Path, repo: Path
    ) -> None:
        """A detached worker started by `entries create` runs on PostgreSQL too."""
        set_token()
        json_of(
            "env",
            "create",
            "demo",
            "--runtime",
            "local",
            "--repo",
            str(repo),
            "--secret",
            "GITHUB_TOKEN",
        )

        bob = json_of("agent", "create", "bob", "--model", "builtin/shell")
        agents = json_of("agent", "list")
        thread = ok(run_arbe("thread", "create", "--model", "builtin/shell"))
        thread_id = thread.stdout.strip()
        threads = json_of("thread", "list")
        viewed = json_of("thread", "view", thread_id)
        posted = json_of(
            "thread", "entries", "create", thread_id, 'echo "$GITHUB_TOKEN"; ls'
        )
        read = run_arbe("thread", "entries", "read", thread_id, "--json")
        entries = [json.loads(line) for line in read.stdout.splitlines()]
        audit = json_of("audit", "list")
        thread_audit = json_of("audit", "list", "--thread", thread_id)
        dispatches = rows(
            postgres_cli, "SELECT state, attempts, lease_owner FROM dispatches"
        )

        assert bob["model"] == "builtin/shell"
        assert [(a["name"], a["model"]) for a in agents] == [
            ("arbe", "openrouter/anthropic/claude-haiku-4.5"),
            ("bob", "builtin/shell"),
        ]
        assert [t["id"] for t in threads] == [thread_id]
        assert (viewed["env"], viewed["model"]) == ("demo", "builtin/shell")
        assert posted["dispatch"]["state"] == "queued"
        assert posted["worker_started"] is True
        assert read.returncode == 0, read.stdout + read.stderr
        assert [e["kind"] for e in entries] == [
            "message",
            "tool_call",
            "tool_result",
            "message",
            "status",
        ]
        assert entries[2]["body"] == f"exit code: 0\nstdout:\n{REDACTED}\nREADME.md\n"
        assert entries[-1]["body"] == "completed"
        assert TOKEN_V1 not in read.stdout
        assert [(state, attempts) for state, attempts, _ in dispatches] == [
            ("completed", 1)
        ]
        assert dispatches[0][2].startswith("wrk_")
        assert "claimed dispatch" in (arbe_home / "worker.log").read_text()
        assert [e["action"] for e in audit] == [
            "house.create",
            "secret.create",
            "sandbox.provision",
            "env.create",
            "agent.create",
            "thread.create",
            "dispatch.resolve",
            "dispatch.completed",
        ]
        # The thread's chain: the secret it resolved, its environment and
        # sandbox, then its own events.
        assert [e["action"] for e in thread_audit] == [
            "secret.create",
            "sandbox.provision",
            "env.create",
            "thread.create",
            "dispatch.resolve",
            "dispatch.completed",
        ]
        assert not (arbe_home / "arbe.db").exists()
