"""Fault injection against the fake OpenRouter, Sprites and Daytona servers.

Each failure must end the dispatch in a clear terminal state whose status
names the cause, after retries bounded in count and in time, and no retry
may provision a second sandbox or run a tool call again.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from arbe_adapters.llm._openrouter import OpenRouterChatModel
from arbe_adapters.runtimes.daytona._client import RetryPolicy, Timeouts
from arbe_adapters.runtimes.daytona._runtime import DaytonaRuntime
from arbe_adapters.runtimes.sprite._runtime import SpriteRuntime
from arbe_core.chat import ProviderContext
from arbe_core.models import Entry, EntryKind
from arbe_core.runtime import RuntimeContext
from arbe_entry import Arbe
from tests.fakes.daytona import FakeDaytona
from tests.fakes.openrouter import (
    FakeOpenRouter,
    RecordedRequest,
    Response,
    Step,
    Stream,
    call,
    cut_stream,
    error_reply,
    text_reply,
    tool_call_reply,
)
from tests.fakes.sprites import FakeSprites
from tests.helpers import invoke, run_arbe
from tests.security.kit import Overrides, dispatch, open_with

ATTEMPTS = 4
READ_TIMEOUT_S = 0.5
MAX_TOTAL_WAIT_S = 1.0
#: Seconds one model call may take at most: every attempt times out, and the
#: retries wait their whole budget.
MODEL_CALL_BOUND_S = ATTEMPTS * READ_TIMEOUT_S + MAX_TOTAL_WAIT_S


class Waits:
    """A `sleep` function that waits for real and records each wait."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        time.sleep(seconds)


def statuses(entries: list[Entry]) -> list[str]:
    return [e.body for e in entries if e.kind is EntryKind.STATUS]


def kinds(entries: list[Entry]) -> list[str]:
    return [e.kind.value for e in entries]


# --- OpenRouter ----------------------------------------------------------------


@pytest.fixture
def waits() -> Waits:
    return Waits()


@pytest.fixture
def model_house(
    home: Path,
    repo: Path,
    fake_openrouter: FakeOpenRouter,
    waits: Waits,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Arbe]:
    """A house whose OpenRouter model retries fast, with a local environment."""

    def build(context: ProviderContext) -> OpenRouterChatModel:
        return OpenRouterChatModel(
            context,
            max_attempts=ATTEMPTS,
            base_delay=0.05,
            max_delay=0.2,
            max_total_wait=MAX_TOTAL_WAIT_S,
            timeout=httpx.Timeout(5.0, read=READ_TIMEOUT_S),
            sleep=waits,
        )

    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    overrides = Overrides(providers={"openrouter": (build, "OPENROUTER_API_KEY")})
    opened = open_with(home, overrides)
    opened.secrets.set("OPENROUTER_API_KEY", "sk-test-123", shared=True)
    opened.environments.create("demo", runtime="local", repos=[str(repo)])
    yield opened
    opened.close()


def never_answers(release: threading.Event) -> Callable[[RecordedRequest], Response]:
    """Return a step that keeps the request open until the test ends."""

    def step(request: RecordedRequest) -> Response:
        release.wait(30)
        return text_reply("too late")

    return step


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ("429", "rate-limited"),
        ("503", "failed to answer"),
        ("reset", "Could not reach"),
        ("silent", "Could not reach"),
    ],
)
def test_model_fault_ends_dispatch_bounded(
    model_house: Arbe,
    fake_openrouter: FakeOpenRouter,
    waits: Waits,
    release: threading.Event,
    fault: str,
    cause: str,
) -> None:
    """A model that keeps failing fails the dispatch after bounded retries."""
    steps: dict[str, Step] = {
        "429": error_reply(429, "Rate limit exceeded", retry_after="0"),
        "503": error_reply(503, "Service unavailable"),
        "reset": cut_stream(drop=True),
        "silent": never_answers(release),
    }
    fake_openrouter.always(steps[fault])

    started = time.monotonic()
    _, entries, finished = dispatch(model_house, "say hi", model=None)
    elapsed = time.monotonic() - started

    assert finished.state.value == "failed"
    assert finished.error is not None
    assert cause in finished.error
    assert f"after {ATTEMPTS} attempts" in finished.error
    assert len(fake_openrouter.requests) == ATTEMPTS
    assert len(waits.seconds) == ATTEMPTS - 1
    assert sum(waits.seconds) <= MAX_TOTAL_WAIT_S
    assert elapsed < MODEL_CALL_BOUND_S + 3.0
    assert kinds(entries) == ["message", "status"]
    assert statuses(entries) == [f"failed: {finished.error}"]


def test_slow_model_reply_completes(
    model_house: Arbe, fake_openrouter: FakeOpenRouter, waits: Waits
) -> None:
    """A reply that trickles in under the read timeout is not cut off or retried."""
    slow = text_reply("All good, slowly.", pieces=4)
    fake_openrouter.enqueue(Stream(slow.text, piece_size=200, pause=READ_TIMEOUT_S / 2))

    _, entries, finished = dispatch(model_house, "say hi", model=None)

    assert finished.state.value == "completed", finished.error
    assert len(fake_openrouter.requests) == 1
    assert waits.seconds == []
    assert entries[-2].body == "All good, slowly."


@pytest.mark.parametrize("recovers", [True, False])
def test_model_retries_never_rerun_tool_call(
    model_house: Arbe,
    fake_openrouter: FakeOpenRouter,
    tmp_path: Path,
    recovers: bool,
) -> None:
    """Retrying the model call after a tool ran does not run the tool again."""
    count_file = tmp_path / "count"
    fake_openrouter.enqueue(
        tool_call_reply(call("run_command", {"command": f"echo run >> {count_file}"})),
        error_reply(503, "Service unavailable"),
        error_reply(429, "Rate limit exceeded", retry_after="0"),
    )
    if recovers:
        fake_openrouter.enqueue(text_reply("Ran it once."))
    else:
        fake_openrouter.always(error_reply(429, "Rate limit exceeded"))

    _, entries, finished = dispatch(model_house, "run it", model=None)

    assert count_file.read_text() == "run\n"
    assert kinds(entries)[:3] == ["message", "tool_call", "tool_result"]
    assert kinds(entries).count("tool_call") == 1
    assert kinds(entries).count("tool_result") == 1
    if recovers:
        assert finished.state.value == "completed", finished.error
        assert len(fake_openrouter.requests) == 4
    else:
        assert finished.state.value == "failed"
        assert "rate-limited" in (finished.error or "")
        assert len(fake_openrouter.requests) == 1 + ATTEMPTS
    assert len(statuses(entries)) == 1


@pytest.mark.slow
def test_shipped_retry_policy_bounded(
    home: Path,
    repo: Path,
    fake_openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default OpenRouter client, run by `arbe worker`, gives up on a 429 storm."""
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    fake_openrouter.always(error_reply(429, "Rate limit exceeded", retry_after="0"))
    invoke("secret", "set", "OPENROUTER_API_KEY", input="sk-test-123")
    invoke("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    thread_id = invoke("thread", "create").stdout.strip()
    invoke("thread", "entries", "create", thread_id, "hi", "--no-start-worker")

    started = time.monotonic()
    worker = run_arbe("worker", "--once")
    elapsed = time.monotonic() - started
    view = json.loads(invoke("thread", "view", thread_id, "--json").stdout)

    assert worker.returncode == 0, worker.stderr
    assert view["dispatch"]["state"] == "failed"
    assert "rate-limited" in view["dispatch"]["error"]
    assert len(fake_openrouter.requests) == 4
    # Backoff 1, 2 and 4 s with jitter of 50 to 100 %, at most 7 s of waits.
    assert elapsed < 7.0 + 5.0


# --- Sprites ---------------------------------------------------------------------


@pytest.fixture
def sprite_house(
    home: Path,
    fake_sprites: FakeSprites,
    waits: Waits,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Arbe]:
    """A house with a sprite environment whose waits are short."""

    def build(context: RuntimeContext) -> SpriteRuntime:
        return SpriteRuntime(context, sleep=waits, exec_grace_s=0.5)

    monkeypatch.setenv("SPRITES_API_URL", fake_sprites.base_url)
    opened = open_with(home, Overrides(runtimes={"sprite": (build, "SPRITES_TOKEN")}))
    opened.secrets.set("SPRITES_TOKEN", fake_sprites.token)
    opened.environments.create("demo", runtime="sprite")
    yield opened
    opened.close()


def test_sprite_create_failure_not_retried(
    home: Path, fake_sprites: FakeSprites, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPRITES_API_URL", fake_sprites.base_url)
    invoke("secret", "set", "SPRITES_TOKEN", input=fake_sprites.token)
    # `env create` may list the house's sprites before it creates one, so the
    # second failure is the create's when the first is the list's.
    fake_sprites.fail(503, "rest", times=2)

    created = invoke("env", "create", "demo", "--runtime", "sprite")

    assert created.exit_code == 1
    assert "HTTP 503" in created.stderr
    assert len(fake_sprites.calls("rest", "POST")) == 1
    assert fake_sprites.sprites == {}
    assert invoke("env", "list", "--json").stdout.strip() == "[]"


def test_sprite_unreachable_fails_preflight(
    sprite_house: Arbe, fake_sprites: FakeSprites, waits: Waits
) -> None:
    """Pings retry a bounded number of times, then the dispatch fails naming the sandbox."""
    fake_sprites.fail(503, "rest", times=100)
    provisioning = len(fake_sprites.calls("exec"))

    started = time.monotonic()
    _, entries, finished = dispatch(sprite_house, "ls")
    elapsed = time.monotonic() - started

    assert finished.state.value == "failed"
    assert "preflight failed" in (finished.error or "")
    assert "HTTP 503" in (finished.error or "")
    assert len(waits.seconds) == 2
    assert elapsed < sum(waits.seconds) + 5.0
    assert len(fake_sprites.calls("exec")) == provisioning
    assert kinds(entries) == ["message", "status"]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("hang", "timed out"),
        ("close_before_exit", "exit code: unknown"),
        ("429", "rate-limited"),
    ],
)
def test_sprite_exec_fault_runs_command_once(
    sprite_house: Arbe,
    fake_sprites: FakeSprites,
    fake_openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
    expected: str,
) -> None:
    """A broken command connection is reported once; the command is never resent."""
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    sprite_house.secrets.set("OPENROUTER_API_KEY", "sk-test-123")
    if fault == "429":
        fake_sprites.fail(429, "exec", retry_after=1)
    else:
        fake_sprites.break_exec(fault)  # type: ignore[arg-type]
    arguments = {"command": "echo hi", "timeout_s": 1}
    fake_openrouter.enqueue(
        tool_call_reply(call("run_command", arguments)), text_reply("Reported.")
    )
    provisioning = len(fake_sprites.calls("exec"))

    _, entries, finished = dispatch(sprite_house, "run it", model=None)

    assert finished.state.value == "completed", finished.error
    result = next(e for e in entries if e.kind is EntryKind.TOOL_RESULT)
    assert expected in result.body
    assert len(fake_sprites.calls("exec")) == provisioning + 1
    assert kinds(entries).count("tool_result") == 1


# --- Daytona ---------------------------------------------------------------------


@pytest.fixture
def daytona_house(
    home: Path,
    fake_daytona: FakeDaytona,
    waits: Waits,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Arbe]:
    """A house with a Daytona environment, with fast retries and short deadlines."""

    def build(context: RuntimeContext) -> DaytonaRuntime:
        retry = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, total_cap=5.0)
        timeouts = Timeouts(create=10.0, kill_after=0.5, grace=1.0)
        return DaytonaRuntime(context, retry=retry, timeouts=timeouts, sleep=waits)

    monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
    fake_daytona.create_polls = 0
    overrides = Overrides(runtimes={"daytona": (build, "DAYTONA_API_KEY")})
    opened = open_with(home, overrides)
    opened.secrets.set("DAYTONA_API_KEY", fake_daytona.api_key)
    opened.environments.create("demo", runtime="daytona")
    yield opened
    opened.close()


EXECUTE = r"/toolbox/[^/]+/process/execute"


def test_daytona_unreachable_fails_preflight(
    daytona_house: Arbe, fake_daytona: FakeDaytona
) -> None:
    fake_daytona.fail("GET", r"/api/sandbox/[^/]+", status=503, times=100)

    _, entries, finished = dispatch(daytona_house, "ls")

    assert finished.state.value == "failed"
    assert "preflight failed" in (finished.error or "")
    assert "unreachable" in (finished.error or "")
    assert fake_daytona.calls("POST", EXECUTE) == []
    assert kinds(entries) == ["message", "status"]


@pytest.mark.parametrize(
    ("fault", "runs", "expected"),
    [
        ({"status": 500}, 0, "error: "),
        ({"status": 500, "after": True}, 1, "error: "),
        ({"status": 429, "times": 2}, 1, "exit code: 0"),
    ],
)
def test_daytona_exec_fault_runs_command_at_most_once(
    daytona_house: Arbe,
    fake_daytona: FakeDaytona,
    tmp_path: Path,
    fault: dict[str, Any],
    runs: int,
    expected: str,
) -> None:
    count_file = tmp_path / "count"
    fake_daytona.fail("POST", EXECUTE, **fault)

    started = time.monotonic()
    _, entries, finished = dispatch(
        daytona_house, f'echo run >> {count_file}; echo "$HOME"'
    )
    elapsed = time.monotonic() - started

    assert finished.state.value == "completed", finished.error
    result = next(e for e in entries if e.kind is EntryKind.TOOL_RESULT)
    assert expected in result.body
    ran = count_file.read_text().count("run") if count_file.exists() else 0
    assert ran == runs
    assert kinds(entries).count("tool_result") == 1
    assert elapsed < 10.0


def test_daytona_slow_exec_ends_at_deadline(
    daytona_house: Arbe,
    fake_daytona: FakeDaytona,
    fake_openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A toolbox that does not reply in time ends the call as timed out, once."""
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    daytona_house.secrets.set("OPENROUTER_API_KEY", "sk-test-123")
    fake_daytona.fail("POST", EXECUTE, status=200, delay=6.0)
    arguments = {"command": "echo hi", "timeout_s": 1}
    fake_openrouter.enqueue(
        tool_call_reply(call("run_command", arguments)), text_reply("Reported.")
    )

    started = time.monotonic()
    _, entries, finished = dispatch(daytona_house, "run it", model=None)
    elapsed = time.monotonic() - started

    assert finished.state.value == "completed", finished.error
    result = next(e for e in entries if e.kind is EntryKind.TOOL_RESULT)
    assert "timed out" in result.body
    assert len(fake_daytona.calls("POST", EXECUTE)) == 1
    assert elapsed < 5.0


def test_daytona_delegate_create_retry_makes_one_sandbox(
    daytona_house: Arbe,
    fake_daytona: FakeDaytona,
    fake_openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create that succeeded but returned 500 is found again, not made twice."""
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    daytona_house.secrets.set("OPENROUTER_API_KEY", "sk-test-123")
    fake_daytona.fail("POST", "/api/sandbox", status=500, after=True)
    fake_openrouter.enqueue(
        tool_call_reply(call("delegate_task", {"task": "look around"})),
        text_reply("Nothing to see."),
        text_reply("Done."),
    )
    before = set(fake_daytona.sandboxes)

    _, entries, finished = dispatch(daytona_house, "delegate it", model=None)

    assert finished.state.value == "completed", finished.error
    assert len(fake_daytona.calls("POST", "/api/sandbox")) == 2
    assert set(fake_daytona.sandboxes) == before
    result = next(e for e in entries if e.kind is EntryKind.TOOL_RESULT)
    assert result.body == "Nothing to see."
