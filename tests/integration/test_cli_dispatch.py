"""Threads, bots and dispatch end to end through the real CLI and its workers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest

from arbe_core.models import DispatchState
from arbe_entry import open_house
from tests.fakes.openrouter import FakeOpenRouter, RecordedRequest
from tests.helpers import ARBE_SCRIPT, SUBPROCESS_TIMEOUT_S, arbe_env, run_arbe

TOKEN_VALUE = "ghp_test_0123456789abcdef"
OPENROUTER_KEY = "sk-test-123"
REDACTED = "***GITHUB_TOKEN***"


@pytest.fixture(autouse=True)
def no_process_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep model keys and URLs of the developer's shell out of the subprocesses."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)


@pytest.fixture(scope="module")
def repo(contract_repo: str) -> Path:
    """A local git repository whose one commit adds README.md."""
    return Path(urlparse(contract_repo).path)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def create_env(repo: Path, *options: str) -> None:
    """Create environment `demo` on the local runtime; it becomes the active one."""
    ok(
        run_arbe(
            "env",
            "create",
            "demo",
            "--runtime",
            "local",
            "--repo",
            str(repo),
            *options,
        )
    )


def set_token() -> None:
    ok(run_arbe("secret", "set", "GITHUB_TOKEN", "--shared", input=TOKEN_VALUE))


def create_thread(*options: str) -> str:
    return ok(run_arbe("thread", "create", *options)).stdout.strip()


def dispatch_states(home: Path) -> dict[str, tuple[DispatchState, int]]:
    """Return each thread's latest dispatch state and attempts, read in process."""
    opened = open_house(home=home)
    try:
        found = {}
        for thread in opened.threads.list():
            dispatch = opened.threads.dispatch(thread.id)
            if dispatch is not None:
                found[thread.id] = (dispatch.state, dispatch.attempts)
        return found
    finally:
        opened.close()


class TestOfflineDispatch:
    def test_shell_bot_offline_flow(self, arbe_home: Path, repo: Path) -> None:
        """A new user runs a command in a local sandbox with a bound secret."""
        set_token()
        create_env(repo, "--secret", "GITHUB_TOKEN")
        thread = create_thread("demo", "--model", "builtin/shell")

        posted = run_arbe(
            "thread", "entries", "create", thread, 'echo "$GITHUB_TOKEN"; ls'
        )
        read = run_arbe("thread", "entries", "read", thread)

        worker_log = (arbe_home / "worker.log").read_text()
        assert posted.returncode == 0, posted.stderr
        assert read.returncode == 0, read.stdout + read.stderr
        assert REDACTED in read.stdout
        assert "README.md" in read.stdout
        assert read.stdout.rstrip().endswith("completed")
        assert TOKEN_VALUE not in read.stdout + read.stderr
        assert "claimed dispatch" in worker_log
        assert TOKEN_VALUE not in worker_log

    def test_missing_required_secret_fails(self, arbe_home: Path, repo: Path) -> None:
        create_env(repo, "--secret", "MISSING_TOKEN")
        thread = create_thread("--model", "builtin/shell")
        ok(run_arbe("thread", "entries", "create", thread, "ls"))

        read = run_arbe("thread", "entries", "read", thread)

        status = read.stdout.rstrip().splitlines()[-1]
        assert read.returncode == 1
        assert "failed: preflight failed" in status
        assert "MISSING_TOKEN" in status
        assert "arbe secret set MISSING_TOKEN" in status


class TestOpenRouterDispatch:
    def test_default_bot_runs_command_and_answers(
        self, arbe_home: Path, repo: Path, fake_openrouter: FakeOpenRouter
    ) -> None:
        set_token()
        ok(
            run_arbe(
                "secret",
                "set",
                "OPENROUTER_API_KEY",
                "--audience",
                "capability",
                input=OPENROUTER_KEY,
            )
        )
        create_env(repo, "--secret", "GITHUB_TOKEN")
        thread = create_thread()

        def check_result(request: RecordedRequest) -> None:
            assert request.tool_results == [f"exit code: 0\nstdout:\n{REDACTED}\n"]

        fake_openrouter.run_command_then_answer(
            'echo "$GITHUB_TOKEN"', "The token is set.", check=check_result
        )
        url = {"OPENROUTER_BASE_URL": fake_openrouter.base_url}

        ok(
            run_arbe(
                "thread", "entries", "create", thread, "Is the token set?", env=url
            )
        )
        read = run_arbe("thread", "entries", "read", thread)

        requests = fake_openrouter.requests
        assert read.returncode == 0, read.stdout + read.stderr
        assert "The token is set." in read.stdout
        assert REDACTED in read.stdout
        assert TOKEN_VALUE not in read.stdout
        assert len(requests) == 2
        assert [r.bearer for r in requests] == [OPENROUTER_KEY, OPENROUTER_KEY]
        assert [r.body["model"] for r in requests] == [
            "anthropic/claude-haiku-4.5",
            "anthropic/claude-haiku-4.5",
        ]
        assert TOKEN_VALUE not in json.dumps([r.body for r in requests])


class TestEntriesCommands:
    @pytest.fixture
    def thread(self, arbe_home: Path, repo: Path) -> str:
        create_env(repo)
        return create_thread("--model", "builtin/shell")

    def test_stdin_entry_run_by_worker_once(self, thread: str) -> None:
        posted = run_arbe(
            "thread",
            "entries",
            "create",
            thread,
            "-",
            "--no-start-worker",
            "--json",
            input="echo from-stdin\n",
        )
        worker = run_arbe("worker", "--once", "--json")
        read = run_arbe("thread", "entries", "read", thread, "--json")

        lines = [json.loads(line) for line in read.stdout.splitlines()]
        assert json.loads(posted.stdout)["body"] == "echo from-stdin\n"
        assert json.loads(worker.stdout)["dispatches"] == 1
        assert read.returncode == 0
        assert [e["kind"] for e in lines] == [
            "message",
            "tool_call",
            "tool_result",
            "message",
            "status",
        ]
        assert "from-stdin" in lines[2]["body"]
        assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]

    def test_no_follow_returns_while_queued(self, thread: str) -> None:
        ok(run_arbe("thread", "entries", "create", thread, "ls", "--no-start-worker"))

        read = run_arbe("thread", "entries", "read", thread, "--no-follow")

        lines = read.stdout.splitlines()
        assert read.returncode == 0
        assert len(lines) == 2
        assert lines[0].startswith("[1] user:")
        assert lines[1] == "  ls"

    def test_cancel_ends_queued_dispatch(self, thread: str) -> None:
        ok(run_arbe("thread", "entries", "create", thread, "ls", "--no-start-worker"))

        cancelled = run_arbe("thread", "cancel", thread, "--json")
        read = run_arbe("thread", "entries", "read", thread)
        again = run_arbe("thread", "cancel", thread)

        assert json.loads(cancelled.stdout)["state"] == "cancelled"
        assert read.returncode == 1
        assert "cancelled by user:" in read.stdout
        assert again.returncode == 1
        assert again.stderr == (
            f"error: Thread {thread!r} has no live dispatch to cancel.\n"
        )

    def test_thread_list_and_view(self, thread: str) -> None:
        listed = json.loads(ok(run_arbe("thread", "list", "--json")).stdout)
        viewed = json.loads(ok(run_arbe("thread", "view", thread, "--json")).stdout)

        assert [t["id"] for t in listed] == [thread]
        assert viewed["env"] == "demo"
        assert viewed["model"] == "builtin/shell"
        assert viewed["dispatch"] is None


class TestAgentCommands:
    def test_agent_lifecycle(self, arbe_home: Path) -> None:
        created = run_arbe(
            "agent", "create", "bob", "--model", "builtin/shell", "--json"
        )
        listed = run_arbe("agent", "list", "--json")
        viewed = run_arbe("agent", "view", "bob", "--json")
        deleted = run_arbe("agent", "delete", "bob")
        after = run_arbe("agent", "ls", "--json")

        assert json.loads(created.stdout)["model"] == "builtin/shell"
        assert [(a["name"], a["model"]) for a in json.loads(listed.stdout)] == [
            ("arbe", "openrouter/anthropic/claude-haiku-4.5"),
            ("bob", "builtin/shell"),
        ]
        assert json.loads(viewed.stdout)["name"] == "bob"
        assert deleted.stdout == "Deleted bot bob.\n"
        assert [a["name"] for a in json.loads(after.stdout)] == ["arbe"]

    def test_unknown_provider_rejected_at_creation(self, arbe_home: Path) -> None:
        created = run_arbe("agent", "create", "carl", "--model", "nowhere/model-1")
        listed = run_arbe("agent", "list", "--json")

        assert created.returncode == 1
        assert created.stderr.count("\n") == 1
        assert "unknown provider 'nowhere'" in created.stderr
        assert [a["name"] for a in json.loads(listed.stdout)] == ["arbe"]

    def test_default_bot_cannot_be_deleted(self, arbe_home: Path) -> None:
        deleted = run_arbe("agent", "delete", "arbe")

        assert deleted.returncode == 1
        assert "cannot be deleted" in deleted.stderr


class TestWorkers:
    def test_two_workers_never_run_dispatch_twice(
        self, arbe_home: Path, repo: Path
    ) -> None:
        create_env(repo)
        opened = open_house(home=arbe_home)
        try:
            for number in range(6):
                thread = opened.threads.create(model="builtin/shell")
                opened.threads.post(
                    thread.id, f"sleep 0.2; echo run-{number} >> runs.txt"
                )
            sandbox_id = opened.environments.get("demo").sandbox_id
        finally:
            opened.close()
        command = [str(ARBE_SCRIPT), "worker", "--once", "--concurrency", "2"]

        workers = [
            subprocess.Popen(
                command,
                env=arbe_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        for worker in workers:
            worker.wait(timeout=SUBPROCESS_TIMEOUT_S)

        runs = arbe_home / "sandboxes" / "local" / str(sandbox_id) / "work" / "runs.txt"
        states = dispatch_states(arbe_home)
        assert sorted(runs.read_text().splitlines()) == [f"run-{n}" for n in range(6)]
        assert set(states.values()) == {(DispatchState.COMPLETED, 1)}
        assert len(states) == 6
