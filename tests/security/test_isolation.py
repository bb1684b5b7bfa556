"""Isolation: houses cannot reach each other's sandboxes, bots only their secrets.

Also: `delegate_task` stays within the allowed repos, and path-like input
cannot make arbe write outside its home.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arbe_entry import Arbe, open_house
from tests.fakes.daytona import FakeDaytona
from tests.fakes.openrouter import FakeOpenRouter, call, text_reply, tool_call_reply
from tests.fakes.sprites import FakeSprites
from tests.helpers import invoke
from tests.security.kit import dispatch, open_with


def json_of(*args: str, input: str | None = None) -> object:
    result = invoke(*args, "--json", input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


class TestHouseSandboxes:
    def setup_houses(self, runtime: str, repo: Path | None) -> str:
        """Give house `first` an environment on `runtime` and create house `second`.

        Returns:
            The sandbox id of `first`'s environment.
        """
        invoke("house", "create", "first")
        invoke("house", "create", "second")
        for house in ("first", "second"):
            invoke(
                "--house", house, "secret", "set", "SPRITES_TOKEN", input="sk-test-123"
            )
            invoke(
                "--house",
                house,
                "secret",
                "set",
                "DAYTONA_API_KEY",
                input="sk-test-123",
            )
        args = ["--house", "first", "env", "create", "demo", "--runtime", runtime]
        if repo is not None:
            args += ["--repo", str(repo)]
        created = json_of(*args)
        assert isinstance(created, dict)
        return str(created["sandbox_id"])

    def check_untouchable(self, runtime: str, sandbox_id: str) -> None:
        other = ["--house", "second", "sandbox"]

        listed = json_of(*other, "list", "--runtime", runtime)
        viewed = invoke(*other, "view", sandbox_id, "--runtime", runtime)
        stopped = invoke(*other, "stop", sandbox_id, "--runtime", runtime)
        started = invoke(*other, "start", sandbox_id, "--runtime", runtime)
        destroyed = json_of(*other, "destroy", sandbox_id, "--runtime", runtime)
        owned = json_of("--house", "first", "sandbox", "list", "--runtime", runtime)

        assert listed == []
        assert viewed.exit_code == 1
        assert "not found" in viewed.stderr
        assert stopped.exit_code == 1
        assert "not found" in stopped.stderr
        assert started.exit_code == 1
        assert "not found" in started.stderr
        assert isinstance(destroyed, dict)
        assert destroyed["destroyed"] is False
        assert isinstance(owned, list)
        assert [s["id"] for s in owned] == [sandbox_id]
        assert owned[0]["state"] == "started"

    def test_local_sandbox_unreachable_from_other_house(
        self, home: Path, repo: Path
    ) -> None:
        sandbox_id = self.setup_houses("local", repo)

        self.check_untouchable("local", sandbox_id)

        assert (home / "sandboxes" / "local" / sandbox_id / "work").is_dir()

    def test_sprite_unreachable_from_other_house(
        self,
        home: Path,
        fake_sprites: FakeSprites,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("SPRITES_API_URL", fake_sprites.base_url)
        sandbox_id = self.setup_houses("sprite", None)

        self.check_untouchable("sprite", sandbox_id)

        assert list(fake_sprites.sprites) == [sandbox_id]
        deleted = [r.path for r in fake_sprites.calls("rest", "DELETE")]
        assert f"/v1/sprites/{sandbox_id}" not in deleted

    def test_daytona_sandbox_unreachable_from_other_house(
        self,
        home: Path,
        fake_daytona: FakeDaytona,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
        fake_daytona.create_polls = 0
        sandbox_id = self.setup_houses("daytona", None)

        self.check_untouchable("daytona", sandbox_id)

        assert fake_daytona.find(sandbox_id) is not None
        assert fake_daytona.calls("DELETE", r"/api/sandbox/.*") == []
        assert fake_daytona.calls("POST", r"/api/sandbox/.*/stop") == []


def test_thread_unreachable_from_other_house(home: Path, repo: Path) -> None:
    """Another house can neither read, post to, cancel nor audit a house's thread."""
    invoke("house", "create", "first")
    invoke("house", "create", "second")
    invoke("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    thread_id = invoke("thread", "create", "--model", "builtin/shell").stdout.strip()
    invoke("thread", "entries", "create", thread_id, "ls", "--no-start-worker")
    other = ["--house", "second", "thread"]

    attempts = [
        invoke(*other, "view", thread_id),
        invoke(*other, "entries", "read", thread_id, "--no-follow"),
        invoke(*other, "entries", "create", thread_id, "ls", "--no-start-worker"),
        invoke(*other, "cancel", thread_id),
    ]
    listed = json_of("--house", "second", "thread", "list")
    audited = json_of("--house", "second", "audit", "list", "--thread", thread_id)

    for result in attempts:
        assert result.exit_code == 1
        assert "not found" in result.stderr
    assert listed == []
    assert audited == []
    entries = json_of("thread", "view", thread_id)
    assert isinstance(entries, dict)
    assert entries["dispatch"]["state"] == "queued"


class TestBotSecrets:
    def test_bot_cannot_resolve_private_secret(self, home: Path, repo: Path) -> None:
        """A secret that is not shared is missing for a bot, and the dispatch stops."""
        opened = open_with(home)
        opened.secrets.set("TOKEN", "sk-test-private-1", shared=False)
        opened.environments.create("demo", runtime="local", repos=[str(repo)])
        opened.environments.bind("demo", "TOKEN")

        _, entries, finished = dispatch(opened, 'echo "$TOKEN" > leaked.txt')

        assert opened.secrets.resolve("TOKEN", agent="arbe") is None
        assert opened.secrets.resolve("TOKEN") is not None
        assert finished.state.value == "failed"
        assert finished.error is not None
        assert "not shared" in finished.error
        assert "secret TOKEN" in finished.error
        assert [e.kind.value for e in entries] == ["message", "status"]
        sandbox = opened.runtimes.get("local").list()[0]
        assert not (Path(sandbox.workdir or "") / "leaked.txt").exists()

    def test_optional_private_secret_stays_out_of_sandbox(
        self, home: Path, repo: Path
    ) -> None:
        opened = open_with(home)
        opened.secrets.set("TOKEN", "sk-test-private-2", shared=False)
        opened.environments.create("demo", runtime="local", repos=[str(repo)])
        opened.environments.bind("demo", "TOKEN", required=False)

        _, entries, finished = dispatch(opened, 'echo "token=${TOKEN:-unset}"')

        assert finished.state.value == "completed", finished.error
        result = next(e for e in entries if e.kind.value == "tool_result")
        assert "token=unset" in result.body
        assert all("sk-test-private-2" not in e.body for e in entries)

    def test_house_credentials_not_bindable_into_sandbox(
        self, home: Path, repo: Path
    ) -> None:
        invoke(
            "secret", "set", "OPENROUTER_API_KEY", "--audience", "capability",
            input="sk-test-123",
        )  # fmt: skip

        created = invoke(
            "env", "create", "demo", "--runtime", "local", "--repo", str(repo),
            "--secret", "OPENROUTER_API_KEY",
        )  # fmt: skip

        assert created.exit_code == 1
        assert "capability" in created.stderr
        assert invoke("env", "list", "--json").stdout.strip() == "[]"


class TestDelegateTask:
    @pytest.fixture
    def house(
        self,
        home: Path,
        repo: Path,
        fake_openrouter: FakeOpenRouter,
        monkeypatch: pytest.MonkeyPatch,
    ) -> Arbe:
        monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
        opened = open_with(home)
        opened.secrets.set("OPENROUTER_API_KEY", "sk-test-123", shared=True)
        opened.environments.create("demo", runtime="local", repos=[str(repo)])
        return opened

    @pytest.mark.parametrize(
        "repo_arg",
        [
            "http://127.0.0.1:9/other/repo",
            "../repo",
            "file:///etc",
        ],
    )
    def test_delegate_task_rejects_unlisted_repo(
        self, house: Arbe, fake_openrouter: FakeOpenRouter, repo_arg: str
    ) -> None:
        opened = house
        fake_openrouter.enqueue(
            tool_call_reply(
                call("delegate_task", {"task": "read it", "repo": repo_arg})
            ),
            text_reply("I may not use that repo."),
        )

        thread_id, entries, finished = dispatch(opened, "work on it", model=None)

        assert finished.state.value == "completed", finished.error
        result = next(e for e in entries if e.kind.value == "tool_result")
        assert result.data["error"] == "repo_not_allowed"
        assert "not in the allowed repos" in result.body
        assert len(opened.runtimes.get("local").list()) == 1
        events = json_of("audit", "list", "--thread", thread_id)
        assert isinstance(events, list)
        actions = [e["action"] for e in events if e["thread_id"] == thread_id]
        assert "sandbox.provision" not in actions

    def test_delegate_task_destroys_its_sandbox(
        self, house: Arbe, repo: Path, fake_openrouter: FakeOpenRouter
    ) -> None:
        opened = house
        fake_openrouter.enqueue(
            tool_call_reply(call("delegate_task", {"task": "ls", "repo": str(repo)})),
            text_reply("The helper saw a README."),
            text_reply("Done."),
        )

        thread_id, _, finished = dispatch(opened, "work on it", model=None)

        assert finished.state.value == "completed", finished.error
        assert len(opened.runtimes.get("local").list()) == 1
        events = json_of("audit", "list", "--thread", thread_id)
        assert isinstance(events, list)
        actions = [e["action"] for e in events if e["thread_id"] == thread_id]
        assert actions.count("sandbox.provision") == 1
        assert actions.count("sandbox.destroy") == 1


# --- Path-like input -----------------------------------------------------------

PATH_LIKE = ["../x", "../../outside", "/tmp/outside", "x/../../y", "..", ".", "~"]


def files_outside(root: Path, home: Path) -> set[Path]:
    return {p for p in root.rglob("*") if home not in (p, *p.parents)}


@pytest.mark.parametrize("path", PATH_LIKE)
def test_path_like_input_stays_in_home(
    home: Path, repo: Path, tmp_path: Path, path: str
) -> None:
    """Names, ids, refs and model refs shaped like paths create nothing outside the home."""
    invoke("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    before = files_outside(tmp_path, home)
    attempts = [
        ["house", "create", path],
        ["--house", path, "secret", "list"],
        ["secret", "set", path],
        ["env", "create", path, "--runtime", "local"],
        ["env", "create", "fresh", "--runtime", "local", "--sandbox", path],
        ["env", "create", "fresh", "--runtime", path],
        ["agent", "create", path],
        ["sandbox", "stop", path, "--runtime", "local"],
        ["sandbox", "destroy", path, "--runtime", "local"],
        ["sandbox", "view", path, "--runtime", "local"],
        ["thread", "view", path],
        ["thread", "entries", "read", path, "--no-follow"],
    ]

    results = [invoke(*args, input="sk-test-123") for args in attempts]
    # Both are accepted and neither is used as a path: a parent ref is text,
    # and the model part of a model ref is checked at dispatch.
    parent_ref = invoke("thread", "create", path, "--env", "demo")
    model_ref = invoke(
        "thread", "create", "--env", "demo", "--model", f"builtin/{path}"
    )

    for args, result in zip(attempts, results, strict=True):
        assert result.exit_code in (1, 2), (args, result.stdout)
        assert "Traceback" not in result.stderr
    assert parent_ref.exit_code == 0, parent_ref.stderr
    assert model_ref.exit_code == 0, model_ref.stderr
    assert files_outside(tmp_path, home) == before
    sandboxes = sorted(p.name for p in (home / "sandboxes" / "local").iterdir())
    assert [s for s in sandboxes if not s.startswith(".")] == [
        json.loads(invoke("env", "view", "demo", "--json").stdout)["sandbox_id"]
    ]


def test_command_cwd_outside_sandbox_rejected(home: Path, repo: Path) -> None:
    """A model's `run_command` with a cwd outside the work tree runs nothing."""
    opened = open_house(home=home)
    opened.environments.create("demo", runtime="local", repos=[str(repo)])
    runtime = opened.runtimes.get("local")
    sandbox = runtime.list()[0]

    results = []
    for cwd in ("..", "../..", "/", str(home)):
        try:
            runtime.exec(sandbox.id, "touch escaped", cwd=cwd)
        except Exception as exc:  # the error type is checked below
            results.append(exc)

    assert [type(e).__name__ for e in results] == ["InvalidInput"] * 4
    assert not (home / "escaped").exists()
    assert not (home / "sandboxes" / "escaped").exists()
