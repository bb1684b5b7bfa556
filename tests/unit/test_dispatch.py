"""The dispatch loop on in-memory storage, the local runtime and a scripted model."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import pytest

from arbe_adapters.crypto import AesGcmSealer
from arbe_adapters.plugins import load_plugins
from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_adapters.storage import InMemoryStorage
from arbe_core.chat import ChatMessage, ChatReply, ProviderContext, ToolCall, ToolSpec
from arbe_core.dispatch import DispatchRunner, Redactor, Worker, cut_middle
from arbe_core.errors import Transient
from arbe_core.models import (
    Dispatch,
    DispatchState,
    Entry,
    EntryKind,
    Environment,
    Thread,
)
from arbe_core.runtime import THREAD_LABEL, SandboxState
from arbe_core.services.threads import append_entry
from arbe_entry.app import Arbe
from arbe_entry.config import Settings
from tests.helpers import FakeClock, SequentialIds

MASTER_KEY = bytes(range(32))
OWNER = "wrk_test"
PEM = (
    "-----BEGIN TEST KEY-----\nMIIBfakeLINEone\nMIIBfakeLINEtwo\n-----END TEST KEY-----"
)
#: Bound values that are hard to redact: a prefix of another, regex
#: metacharacters and a multi-line value.
HARD_VALUES = {
    "TOKEN": "abcd1234",
    "TOKEN_LONG": "abcd1234efgh",
    "WEIRD": "a.b*c+(d)?[e]|f",
    "PEM_KEY": PEM,
}

Step = ChatReply | Callable[[Sequence[ChatMessage], Sequence[ToolSpec]], ChatReply]


class FakeChatModel:
    """A chat model that replies from a script and records every request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.script: deque[Step] = deque()
        self.requests: list[tuple[list[ChatMessage], list[ToolSpec]]] = []

    def enqueue(self, *steps: Step) -> None:
        self.script.extend(steps)

    def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ChatReply:
        self.requests.append((list(messages), list(tools)))
        if not self.script:
            raise AssertionError(f"fake model {self.name}: no scripted reply left")
        step = self.script.popleft()
        return step(messages, tools) if callable(step) else step


class FakeModelsPlugin:
    """Registers provider `fake` (no key) and `keyed` (needs `FAKE_API_KEY`)."""

    def __init__(self) -> None:
        self.models: dict[str, FakeChatModel] = {}

    def model(self, ref: str) -> FakeChatModel:
        return self.models.setdefault(ref, FakeChatModel(ref))

    @hookimpl
    def register_providers(self, register: Register) -> None:
        def build_fake(context: ProviderContext) -> FakeChatModel:
            return self.model(f"fake/{context.model}")

        def build_keyed(context: ProviderContext) -> FakeChatModel:
            return self.model(f"keyed/{context.model}")

        register("fake", build_fake)
        register("keyed", build_keyed, credential="FAKE_API_KEY")


def text(body: str) -> ChatReply:
    return ChatReply(text=body, tool_calls=(), finish_reason="stop")


def calls(*tool_calls: ToolCall) -> ChatReply:
    return ChatReply(text=None, tool_calls=tool_calls, finish_reason="tool_calls")


def run(command: str, call_id: str = "call_1") -> ToolCall:
    return ToolCall(call_id, "run_command", json.dumps({"command": command}))


@pytest.fixture(autouse=True)
def no_process_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep keys of the developer's shell out of the preflight."""
    for name in ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL", "FAKE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def plugin() -> FakeModelsPlugin:
    return FakeModelsPlugin()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def opened(tmp_path: Path, plugin: FakeModelsPlugin, clock: FakeClock) -> Arbe:
    return Arbe(
        Settings(home=tmp_path / "home", plugins=""),
        storage=InMemoryStorage(),
        sealer=AesGcmSealer(MASTER_KEY),
        clock=clock,
        ids=SequentialIds(),
        plugins=load_plugins("", extra=[plugin]),
    )


@pytest.fixture
def alpha(plugin: FakeModelsPlugin) -> FakeChatModel:
    return plugin.model("fake/alpha")


@pytest.fixture
def repo(contract_repo: str) -> Path:
    """A local git repository whose one commit adds README.md."""
    return Path(urlparse(contract_repo).path)


@pytest.fixture
def env(opened: Arbe, repo: Path) -> Environment:
    created, _ = opened.environments.create("web", runtime="local", repos=[str(repo)])
    return created


@pytest.fixture
def workdir(opened: Arbe, env: Environment) -> Path:
    info = opened.runtimes.get("local").get(env.sandbox_id or "")
    return Path(info.workdir or "")


@pytest.fixture
def thread(opened: Arbe, env: Environment) -> Thread:
    """A thread in environment `web` whose bots all use model `fake/alpha`."""
    return opened.threads.create(env=env.name, model="fake/alpha")


def make_worker(
    opened: Arbe,
    owner: str = OWNER,
    lease_s: float = 30.0,
    step_limit: int = 30,
    malformed_limit: int = 3,
) -> Worker:
    def make_runner(on_step: Callable[[], None]) -> DispatchRunner:
        return DispatchRunner(
            opened.deps,
            opened.house,
            owner,
            opened.runtimes,
            opened.models,
            step_limit=step_limit,
            malformed_limit=malformed_limit,
            on_step=on_step,
        )

    return Worker(opened.deps, opened.house.id, owner, make_runner, lease_s=lease_s)


def run_dispatch(
    opened: Arbe, step_limit: int = 30, malformed_limit: int = 3
) -> DispatchState:
    """Claim the oldest queued dispatch and run it to its end."""
    worker = make_worker(opened, step_limit=step_limit, malformed_limit=malformed_limit)
    claimed = worker.claim()
    assert claimed is not None
    return worker.run_one(claimed)


def latest_dispatch(opened: Arbe, thread_id: str) -> Dispatch:
    dispatch = opened.threads.dispatch(thread_id)
    assert dispatch is not None
    return dispatch


def entries_of(opened: Arbe, thread_id: str, kind: EntryKind) -> list[Entry]:
    return [e for e in opened.threads.entries(thread_id) if e.kind is kind]


def results_by_call(opened: Arbe, thread_id: str) -> dict[str, list[Entry]]:
    found: dict[str, list[Entry]] = {}
    for entry in entries_of(opened, thread_id, EntryKind.TOOL_RESULT):
        found.setdefault(str(entry.data["call_id"]), []).append(entry)
    return found


def tool_messages(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    return [m for m in messages if m.role == "tool"]


class TestDispatchBots:
    @pytest.fixture
    def bots(self, opened: Arbe, plugin: FakeModelsPlugin) -> dict[str, FakeChatModel]:
        opened.agents.create("alpha", model="fake/alpha")
        opened.agents.create("beta", model="fake/beta")
        return {"alpha": plugin.model("fake/alpha"), "beta": plugin.model("fake/beta")}

    def test_mentions_pick_bots_in_order(
        self, opened: Arbe, bots: dict[str, FakeChatModel]
    ) -> None:
        bots["alpha"].enqueue(text("from alpha"))
        bots["beta"].enqueue(text("from beta"))
        thread = opened.threads.create()
        opened.threads.post(thread.id, "@beta first, then @alpha: hello")

        state = run_dispatch(opened)

        authors = [e.author for e in entries_of(opened, thread.id, EntryKind.MESSAGE)]
        assert state is DispatchState.COMPLETED
        assert authors == ["user:local", "bot:beta", "bot:alpha"]

    def test_last_replier_answers_unmentioned_entry(
        self, opened: Arbe, bots: dict[str, FakeChatModel]
    ) -> None:
        bots["beta"].enqueue(text("one"), text("two"))
        thread = opened.threads.create()
        opened.threads.post(thread.id, "@beta hello")
        run_dispatch(opened)
        opened.threads.post(thread.id, "and again")

        run_dispatch(opened)

        assert len(bots["beta"].requests) == 2
        assert bots["alpha"].requests == []

    def test_default_bot_answers_without_mention(
        self, opened: Arbe, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(text("hi"))
        thread = opened.threads.create(model="fake/alpha")
        opened.threads.post(thread.id, "hello")

        run_dispatch(opened)

        replies = entries_of(opened, thread.id, EntryKind.MESSAGE)[1:]
        assert [e.author for e in replies] == ["bot:arbe"]

    def test_unknown_mention_falls_back_to_default(
        self, opened: Arbe, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(text("hi"))
        thread = opened.threads.create(model="fake/alpha")
        opened.threads.post(thread.id, "@nobody hello")

        run_dispatch(opened)

        replies = entries_of(opened, thread.id, EntryKind.MESSAGE)[1:]
        assert [e.author for e in replies] == ["bot:arbe"]

    def test_thread_model_overrides_bot_model(
        self, opened: Arbe, bots: dict[str, FakeChatModel]
    ) -> None:
        bots["alpha"].enqueue(text("from the thread's model"))
        thread = opened.threads.create(model="fake/alpha")
        opened.threads.post(thread.id, "@beta hello")

        run_dispatch(opened)

        reply = entries_of(opened, thread.id, EntryKind.MESSAGE)[-1]
        assert reply.author == "bot:beta"
        assert reply.data["model"] == "fake/alpha"
        assert bots["beta"].requests == []

    def test_entry_posted_meanwhile_is_answered(
        self, opened: Arbe, alpha: FakeChatModel
    ) -> None:
        """An entry that joins a running dispatch gets a reply in that dispatch."""
        thread = opened.threads.create(model="fake/alpha")

        def post_then_answer(
            messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
        ) -> ChatReply:
            opened.threads.post(thread.id, "one more thing")
            return text("first answer")

        alpha.enqueue(post_then_answer, text("second answer"))
        _, dispatch = opened.threads.post(thread.id, "hello")

        state = run_dispatch(opened)

        last_request = alpha.requests[-1][0]
        assert state is DispatchState.COMPLETED
        assert last_request[-1].content == "one more thing"
        assert latest_dispatch(opened, thread.id).id == dispatch.id

    def test_second_bot_sees_first_as_user(
        self, opened: Arbe, bots: dict[str, FakeChatModel]
    ) -> None:
        bots["alpha"].enqueue(text("from alpha"))
        bots["beta"].enqueue(text("from beta"))
        thread = opened.threads.create()
        opened.threads.post(thread.id, "@alpha @beta hello")

        run_dispatch(opened)

        last = bots["beta"].requests[0][0][-1]
        assert last.role == "user"
        assert last.content == "(bot alpha wrote) from alpha"

    def test_entry_during_open_call_follows_result(
        self, opened: Arbe, alpha: FakeChatModel
    ) -> None:
        """A user entry recorded between a call and its result keeps the chat valid."""
        thread = opened.threads.create(model="fake/alpha")
        history = [
            ("user:local", EntryKind.MESSAGE, "first", {}),
            ("bot:arbe", EntryKind.TOOL_CALL, "run_command", {"call_id": "c1"}),
            ("user:local", EntryKind.MESSAGE, "second", {}),
            ("bot:arbe", EntryKind.TOOL_RESULT, "exit code: 0", {"call_id": "c1"}),
            ("bot:arbe", EntryKind.MESSAGE, "answer", {}),
        ]
        with opened.deps.storage.unit_of_work() as uow:
            for author, kind, body, data in history:
                append_entry(opened.deps, uow, thread.id, author, kind, body, data)
            uow.commit()
        alpha.enqueue(text("ok"))
        opened.threads.post(thread.id, "third")

        run_dispatch(opened)

        sent = alpha.requests[0][0]
        assert [(m.role, m.content) for m in sent[1:]] == [
            ("user", "first"),
            ("assistant", None),
            ("tool", "exit code: 0"),
            ("user", "second"),
            ("assistant", "answer"),
            ("user", "third"),
        ]


class TestDispatchLoop:
    def test_tool_result_reaches_model(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(calls(run("echo hello")), text("it said hello"))
        opened.threads.post(thread.id, "greet")

        state = run_dispatch(opened)

        results = tool_messages(alpha.requests[1][0])
        assert state is DispatchState.COMPLETED
        assert len(results) == 1
        assert results[0].tool_call_id == "call_1"
        assert "hello" in (results[0].content or "")

    def test_tool_call_recorded_before_result(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(calls(run("true")), text("done"))
        opened.threads.post(thread.id, "go")

        run_dispatch(opened)

        kinds = [e.kind for e in opened.threads.entries(thread.id)]
        assert kinds == [
            EntryKind.MESSAGE,
            EntryKind.TOOL_CALL,
            EntryKind.TOOL_RESULT,
            EntryKind.MESSAGE,
            EntryKind.STATUS,
        ]

    def test_step_limit_fails_dispatch(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(*(calls(run("true", f"call_{n}")) for n in range(5)))
        opened.threads.post(thread.id, "loop forever")

        state = run_dispatch(opened, step_limit=3)

        dispatch = latest_dispatch(opened, thread.id)
        assert state is DispatchState.FAILED
        assert "step limit of 3" in (dispatch.error or "")
        assert len(alpha.requests) == 3

    @pytest.mark.parametrize(
        ("name", "arguments"),
        [
            ("run_command", ""),
            ("run_command", '{"command": "touch ran"'),
            ("run_command", '["touch ran"]'),
            ("run_command", '{"command": "touch ran", "timeout_s": "soon"}'),
            ("run_command", '{"command": 7}'),
            ("run_command", '{"cmd": "touch ran"}'),
            ("remove_everything", '{"command": "touch ran"}'),
        ],
        ids=[
            "empty",
            "not-json",
            "not-object",
            "wrong-type-timeout",
            "wrong-type-command",
            "unknown-field",
            "unknown-tool",
        ],
    )
    def test_malformed_call_gets_error_result(
        self,
        opened: Arbe,
        thread: Thread,
        alpha: FakeChatModel,
        workdir: Path,
        name: str,
        arguments: str,
    ) -> None:
        alpha.enqueue(calls(ToolCall("call_1", name, arguments)), text("sorry"))
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened)

        results = results_by_call(opened, thread.id)
        assert state is DispatchState.COMPLETED
        assert list(results) == ["call_1"]
        assert len(results["call_1"]) == 1
        assert results["call_1"][0].data["error"] == "invalid_arguments"
        assert results["call_1"][0].body.startswith("error: ")
        assert not (workdir / "ran").exists()

    def test_malformed_limit_fails_dispatch(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(
            calls(ToolCall("call_1", "run_command", "{")),
            calls(ToolCall("call_2", "run_command", "")),
            text("never asked for"),
        )
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened, malformed_limit=2)

        dispatch = latest_dispatch(opened, thread.id)
        assert state is DispatchState.FAILED
        assert "2 malformed tool calls in a row" in (dispatch.error or "")
        assert sorted(results_by_call(opened, thread.id)) == ["call_1", "call_2"]

    def test_good_call_resets_malformed_count(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(
            calls(ToolCall("call_1", "run_command", "{")),
            calls(run("true", "call_2")),
            calls(ToolCall("call_3", "run_command", "")),
            text("done"),
        )
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened, malformed_limit=2)

        assert state is DispatchState.COMPLETED

    def test_parallel_calls_each_get_one_result(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel, workdir: Path
    ) -> None:
        alpha.enqueue(
            calls(
                run("echo a > a.txt", "call_a"),
                ToolCall("call_bad", "run_command", "not json"),
                run("echo b > b.txt", "call_b"),
            ),
            text("done"),
        )
        opened.threads.post(thread.id, "go")

        run_dispatch(opened)

        results = results_by_call(opened, thread.id)
        sent = tool_messages(alpha.requests[1][0])
        assert {call_id: len(found) for call_id, found in results.items()} == {
            "call_a": 1,
            "call_bad": 1,
            "call_b": 1,
        }
        assert [m.tool_call_id for m in sent] == ["call_a", "call_bad", "call_b"]
        assert (workdir / "a.txt").read_text() == "a\n"
        assert (workdir / "b.txt").read_text() == "b\n"

    def test_thread_without_env_offers_no_tools(
        self, opened: Arbe, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(text("no tools here"))
        thread = opened.threads.create(model="fake/alpha")
        opened.threads.post(thread.id, "hello")

        run_dispatch(opened)

        assert alpha.requests[0][1] == []


class TestRedaction:
    def test_redactor_replaces_each_line(self) -> None:
        redact = Redactor({"PEM_KEY": PEM})

        assert redact("line: MIIBfakeLINEtwo.") == "line: ***PEM_KEY***."

    def test_redactor_keeps_short_lines(self) -> None:
        redact = Redactor({"JSON_KEY": '{\n  "key": "sk-test-123"\n}'})

        assert redact("}") == "}"

    def test_redactor_escapes_regex_characters(self) -> None:
        redact = Redactor({"WEIRD": "a.b*c+(d)?[e]|f"})

        assert redact("x a.b*c+(d)?[e]|f y axbbc") == "x ***WEIRD*** y axbbc"

    def test_redactor_prefers_longer_value(self) -> None:
        redact = Redactor({"TOKEN": "abcd1234", "TOKEN_LONG": "abcd1234efgh"})

        assert redact("abcd1234efgh abcd1234") == "***TOKEN_LONG*** ***TOKEN***"

    def test_run_command_output_redacted(
        self, opened: Arbe, env: Environment, alpha: FakeChatModel
    ) -> None:
        for name, value in HARD_VALUES.items():
            opened.secrets.set(name, value, shared=True)
            opened.environments.bind(env.name, name)
        command = (
            'echo "$TOKEN_LONG"; echo "$TOKEN"; echo "$WEIRD"; '
            'printf "%s\\n" "$PEM_KEY" | sed -n 3p'
        )
        alpha.enqueue(calls(run(command)), text("done"))
        thread = opened.threads.create(env=env.name, model="fake/alpha")
        opened.threads.post(thread.id, "show them")

        run_dispatch(opened)

        result = results_by_call(opened, thread.id)["call_1"][0].body
        sent = tool_messages(alpha.requests[1][0])[0].content or ""
        assert result.splitlines()[2:] == [
            "***TOKEN_LONG***",
            "***TOKEN***",
            "***WEIRD***",
            "***PEM_KEY***",
        ]
        assert sent == result
        for leaked in ["abcd1234", "a.b*c", "MIIBfakeLINEtwo"]:
            assert leaked not in result

    def test_tool_call_arguments_redacted(
        self, opened: Arbe, env: Environment, alpha: FakeChatModel
    ) -> None:
        opened.secrets.set("TOKEN", "abcd1234", shared=True)
        opened.environments.bind(env.name, "TOKEN")
        alpha.enqueue(calls(run("echo abcd1234")), text("done"))
        thread = opened.threads.create(env=env.name, model="fake/alpha")
        opened.threads.post(thread.id, "go")

        run_dispatch(opened)

        call_entry = entries_of(opened, thread.id, EntryKind.TOOL_CALL)[0]
        assert "abcd1234" not in call_entry.body
        assert call_entry.data["arguments"] == '{"command": "echo ***TOKEN***"}'

    def test_long_output_cut_to_head_and_tail(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel
    ) -> None:
        command = "printf START; head -c 40000 /dev/zero | tr '\\0' a; printf END"
        alpha.enqueue(calls(run(command)), text("long"))
        opened.threads.post(thread.id, "flood")

        run_dispatch(opened)

        body = results_by_call(opened, thread.id)["call_1"][0].body
        full = "exit code: 0\nstdout:\nSTART" + "a" * 40_000 + "END"
        left_out = len(full) - 16_000
        assert body.startswith("exit code: 0\nstdout:\nSTART")
        assert body.endswith("aaaEND")
        assert f"[... {left_out} characters ({left_out} bytes) left out ...]" in body
        assert body == cut_middle(full)


class TestPreflight:
    def test_preflight_reports_every_missing_piece(
        self, opened: Arbe, env: Environment, plugin: FakeModelsPlugin
    ) -> None:
        opened.environments.bind(env.name, "MISSING_ONE")
        opened.environments.bind(env.name, "MISSING_TWO")
        thread = opened.threads.create(env=env.name, model="keyed/alpha")
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened)

        status = entries_of(opened, thread.id, EntryKind.STATUS)[-1].body
        assert state is DispatchState.FAILED
        assert "MISSING_ONE" in status
        assert "MISSING_TWO" in status
        assert "FAKE_API_KEY" in status
        assert "arbe secret set MISSING_ONE" in status
        assert plugin.model("keyed/alpha").requests == []

    def test_preflight_reports_gone_sandbox_too(
        self, opened: Arbe, env: Environment, thread: Thread, alpha: FakeChatModel
    ) -> None:
        opened.environments.bind(env.name, "MISSING_ONE")
        opened.runtimes.get("local").destroy(env.sandbox_id or "")
        opened.threads.post(thread.id, "go")

        run_dispatch(opened)

        error = latest_dispatch(opened, thread.id).error or ""
        assert "MISSING_ONE" in error
        assert f"sandbox {env.sandbox_id} is gone" in error
        assert alpha.requests == []

    def test_optional_missing_secret_skipped(
        self, opened: Arbe, env: Environment, thread: Thread, alpha: FakeChatModel
    ) -> None:
        opened.environments.bind(env.name, "SENTRY_DSN", required=False)
        alpha.enqueue(calls(run('echo "[${SENTRY_DSN-unset}]"')), text("done"))
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened)

        result = results_by_call(opened, thread.id)["call_1"][0].body
        assert state is DispatchState.COMPLETED
        assert "[unset]" in result

    def test_stopped_sandbox_started_once(
        self, opened: Arbe, env: Environment, thread: Thread, alpha: FakeChatModel
    ) -> None:
        runtime = opened.runtimes.get("local")
        runtime.stop(env.sandbox_id or "")
        alpha.enqueue(calls(run("true")), text("done"))
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened)

        with opened.deps.storage.unit_of_work(write=False) as uow:
            actions = [e.action for e in uow.audit.list(opened.house.id)]
        assert state is DispatchState.COMPLETED
        assert actions.count("sandbox.start") == 1
        assert runtime.ping(env.sandbox_id or "").state is SandboxState.STARTED


class TestRecovery:
    def test_interrupted_call_marked_not_rerun(
        self,
        opened: Arbe,
        thread: Thread,
        alpha: FakeChatModel,
        clock: FakeClock,
        workdir: Path,
    ) -> None:
        """A worker died after recording a call; the next one marks it and goes on."""
        opened.threads.post(thread.id, "count")
        dead = make_worker(opened, owner="wrk_dead")
        claimed = dead.claim()
        assert claimed is not None
        with opened.deps.storage.unit_of_work() as uow:
            append_entry(
                opened.deps,
                uow,
                thread.id,
                "bot:arbe",
                EntryKind.TOOL_CALL,
                "run_command",
                {
                    "call_id": "call_1",
                    "name": "run_command",
                    "arguments": '{"command": "echo run >> runs.txt"}',
                },
            )
            uow.commit()
        clock.advance(60)
        alpha.enqueue(calls(run("echo run >> runs.txt", "call_2")), text("counted"))

        state = run_dispatch(opened)

        results = results_by_call(opened, thread.id)
        dispatch = latest_dispatch(opened, thread.id)
        assert state is DispatchState.COMPLETED
        assert dispatch.attempts == 2
        assert len(results["call_1"]) == 1
        assert results["call_1"][0].data["interrupted"] is True
        assert (workdir / "runs.txt").read_text() == "run\n"
        assert tool_messages(alpha.requests[0][0])[0].tool_call_id == "call_1"

    def test_live_lease_not_claimed(self, opened: Arbe, thread: Thread) -> None:
        opened.threads.post(thread.id, "go")
        first = make_worker(opened, owner="wrk_one").claim()

        second = make_worker(opened, owner="wrk_two").claim()

        assert first is not None
        assert second is None


class TestCancel:
    def test_cancel_stops_at_next_step(
        self, opened: Arbe, thread: Thread, alpha: FakeChatModel, workdir: Path
    ) -> None:
        def cancel_then_call(
            messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
        ) -> ChatReply:
            opened.threads.cancel(thread.id)
            return calls(run("touch ran"))

        alpha.enqueue(cancel_then_call, text("never asked for"))
        opened.threads.post(thread.id, "go")

        state = run_dispatch(opened)

        results = results_by_call(opened, thread.id)
        assert state is DispatchState.CANCELLED
        assert len(alpha.requests) == 1
        assert not (workdir / "ran").exists()
        assert len(results["call_1"]) == 1
        assert "cancelled" in results["call_1"][0].body


class TestLease:
    def test_renewal_keeps_long_command_claim(
        self, tmp_path: Path, plugin: FakeModelsPlugin, alpha: FakeChatModel
    ) -> None:
        opened = Arbe(
            Settings(home=tmp_path / "home", plugins=""),
            storage=InMemoryStorage(),
            sealer=AesGcmSealer(MASTER_KEY),
            plugins=load_plugins("", extra=[plugin]),
        )
        opened.environments.create("web", runtime="local")
        thread = opened.threads.create(env="web", model="fake/alpha")
        alpha.enqueue(calls(run("sleep 1.5")), text("slept"))
        opened.threads.post(thread.id, "sleep")
        worker = make_worker(opened, lease_s=0.6)
        claimed = worker.claim()
        assert claimed is not None
        outcome: list[DispatchState] = []
        running = threading.Thread(
            target=lambda: outcome.append(worker.run_one(claimed))
        )
        running.start()

        time.sleep(1.0)
        rival = make_worker(opened, owner="wrk_rival", lease_s=0.6).claim()
        running.join(timeout=10)

        assert rival is None
        assert outcome == [DispatchState.COMPLETED]
        assert latest_dispatch(opened, thread.id).attempts == 1


class TestDelegate:
    @pytest.fixture
    def helper_labels(self) -> list[dict[str, str]]:
        return []

    def sandbox_ids(self, opened: Arbe) -> list[str]:
        return [s.id for s in opened.runtimes.get("local").list()]

    def delegate(self, task: str, repo: str, call_id: str = "call_d") -> ChatReply:
        arguments = json.dumps({"task": task, "repo": repo})
        return calls(ToolCall(call_id, "delegate_task", arguments))

    def test_delegate_runs_helper_and_returns_summary(
        self,
        opened: Arbe,
        env: Environment,
        thread: Thread,
        alpha: FakeChatModel,
        repo: Path,
    ) -> None:
        seen: list[dict[str, str]] = []

        def helper_lists_files(
            messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
        ) -> ChatReply:
            for info in opened.runtimes.get("local").list():
                if info.id != env.sandbox_id:
                    seen.append(dict(info.labels))
            return calls(run("ls", "call_h"))

        alpha.enqueue(
            self.delegate("list the files", str(repo)),
            helper_lists_files,
            text("helper summary: README.md"),
            text("all done"),
        )
        opened.threads.post(thread.id, "delegate it")

        state = run_dispatch(opened)

        result = results_by_call(opened, thread.id)["call_d"][0]
        mirrored = [
            e for e in opened.threads.entries(thread.id) if e.data.get("delegate")
        ]
        assert state is DispatchState.COMPLETED
        assert result.body == "helper summary: README.md"
        assert len(seen) == 1
        assert seen[0][THREAD_LABEL] == thread.id
        assert [e.kind for e in mirrored] == [
            EntryKind.TOOL_CALL,
            EntryKind.TOOL_RESULT,
            EntryKind.MESSAGE,
        ]
        assert "README.md" in mirrored[1].body
        assert self.sandbox_ids(opened) == [env.sandbox_id]

    def test_delegate_unallowed_repo_rejected(
        self, opened: Arbe, env: Environment, thread: Thread, alpha: FakeChatModel
    ) -> None:
        alpha.enqueue(
            self.delegate("patch it", "https://github.com/acme/other.git"),
            text("could not"),
        )
        opened.threads.post(thread.id, "delegate it")

        state = run_dispatch(opened)

        result = results_by_call(opened, thread.id)["call_d"][0]
        assert state is DispatchState.COMPLETED
        assert result.data["error"] == "repo_not_allowed"
        assert "not in the allowed repos" in result.body
        assert len(alpha.requests) == 2
        assert self.sandbox_ids(opened) == [env.sandbox_id]

    def test_delegate_failure_destroys_sandbox(
        self,
        opened: Arbe,
        env: Environment,
        thread: Thread,
        alpha: FakeChatModel,
        repo: Path,
    ) -> None:
        def helper_model_fails(
            messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
        ) -> ChatReply:
            raise Transient("The model server answered 503 three times.")

        alpha.enqueue(
            self.delegate("do it", str(repo)), helper_model_fails, text("it failed")
        )
        opened.threads.post(thread.id, "delegate it")

        state = run_dispatch(opened)

        result = results_by_call(opened, thread.id)["call_d"][0]
        assert state is DispatchState.COMPLETED
        assert result.body.startswith("error: the helper stopped")
        assert self.sandbox_ids(opened) == [env.sandbox_id]

    def test_delegate_cancel_destroys_sandbox(
        self,
        opened: Arbe,
        env: Environment,
        thread: Thread,
        alpha: FakeChatModel,
        repo: Path,
    ) -> None:
        def helper_cancels(
            messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
        ) -> ChatReply:
            opened.threads.cancel(thread.id)
            return calls(run("true", "call_h"))

        alpha.enqueue(self.delegate("do it", str(repo)), helper_cancels)
        opened.threads.post(thread.id, "delegate it")

        state = run_dispatch(opened)

        assert state is DispatchState.CANCELLED
        assert self.sandbox_ids(opened) == [env.sandbox_id]
        assert len(results_by_call(opened, thread.id)["call_d"]) == 1
