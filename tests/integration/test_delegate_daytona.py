"""delegate_task on Daytona: a fresh sandbox per run, destroyed afterwards."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from arbe_core.models import DispatchState, EntryKind
from arbe_entry.app import Arbe
from arbe_entry.config import Settings
from tests.fakes.daytona import FakeDaytona
from tests.fakes.openrouter import FakeOpenRouter, call, text_reply, tool_call_reply


def _make_repo(root: Path) -> None:
    repo = root / "org" / "repo"
    repo.mkdir(parents=True)
    (repo / "app.py").write_text("print('hello')\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)


@pytest.fixture
def house(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fake_daytona: FakeDaytona,
    fake_openrouter: FakeOpenRouter,
) -> Arbe:
    """A house whose default bot talks to the fake OpenRouter, on the fake Daytona."""
    _make_repo(tmp_path / "repos")
    fake_daytona.map_url("https://github.com/", f"file://{tmp_path / 'repos'}/")
    monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    opened = Arbe(Settings.from_env(home=tmp_path / "home"))
    opened.secrets.set("DAYTONA_API_KEY", fake_daytona.api_key)
    opened.secrets.set("OPENROUTER_API_KEY", "sk-test-123", shared=True)
    opened.environments.create("prod", repos=["https://github.com/org/repo"])
    return opened


def test_delegate_task_uses_fresh_sandbox(
    house: Arbe, fake_daytona: FakeDaytona, fake_openrouter: FakeOpenRouter
) -> None:
    """The helper works in its own sandbox, labelled with the thread, then destroyed."""
    fake_openrouter.enqueue(
        tool_call_reply(call("delegate_task", {"task": "list the files"}, "call_d1")),
        tool_call_reply(call("run_command", {"command": "ls"}, "call_n1")),
        text_reply("The repo has app.py."),
        text_reply("Done: the helper found app.py."),
    )
    thread = house.threads.create("issue-7", env="prod")
    house.threads.post(thread.id, "what is in the repo?")

    house.worker().run(once=True)

    dispatch = house.threads.dispatch(thread.id)
    assert dispatch is not None
    assert dispatch.state is DispatchState.COMPLETED
    creates = [
        r
        for r in fake_daytona.calls("POST", "/api/sandbox")
        if r.body.get("labels", {}).get("arbe.thread") == thread.id
    ]
    assert len(creates) == 1
    helper = creates[0].body["name"]
    assert fake_daytona.calls("DELETE", "/api/sandbox/[^/]+")
    assert helper not in {s.name for s in house.runtimes.get("daytona").list()}
    entries = house.threads.entries(thread.id)
    mirrored = [e for e in entries if e.data.get("delegate") == "call_d1"]
    assert any(e.kind is EntryKind.TOOL_RESULT and "app.py" in e.body for e in mirrored)
    result = next(
        e
        for e in entries
        if e.kind is EntryKind.TOOL_RESULT and e.data.get("call_id") == "call_d1"
    )
    assert "The repo has app.py." in result.body


def test_delegate_task_rejects_other_repo(
    house: Arbe, fake_daytona: FakeDaytona, fake_openrouter: FakeOpenRouter
) -> None:
    """A repo outside the allowed repos gets an error result and no sandbox."""
    before = len(fake_daytona.sandboxes)
    fake_openrouter.enqueue(
        tool_call_reply(
            call(
                "delegate_task",
                {"task": "x", "repo": "https://github.com/evil/repo"},
                "call_d2",
            )
        ),
        text_reply("I may not use that repo."),
    )
    thread = house.threads.create("issue-8", env="prod")
    house.threads.post(thread.id, "work on evil/repo")

    house.worker().run(once=True)

    assert len(fake_daytona.sandboxes) == before
    result = next(
        e
        for e in house.threads.entries(thread.id)
        if e.kind is EntryKind.TOOL_RESULT and e.data.get("call_id") == "call_d2"
    )
    assert "not in the allowed repos" in result.body
