"""`arbe sandbox` through the CLI: local and Daytona sandboxes, and `sandbox gc`.

Daytona runs against the fake Daytona API, with DAYTONA_API_URL in the process
environment and DAYTONA_API_KEY only as a house secret. Most commands run the
CLI's `main` in this process (`invoke`), because a new process imports the
Daytona SDK again, which takes over a second. The tests about what reaches
stdout and stderr run the real `arbe` script in a subprocess (`run_arbe`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.daytona import FakeDaytona
from tests.helpers import CliResult, invoke, run_arbe

LOCAL = ("--runtime", "local")
DAYTONA = ("--runtime", "daytona")
WRONG_KEY = "sk-test-wrong-456"
OPENROUTER_KEY = "sk-test-openrouter-789"
#: The `daytona` fixture maps `https://github.com/org/NAME` to the local
#: directory that contains `contract_repo`'s repository `repo`.
REPO_URL = "https://github.com/org/repo"
MISSING_REPO_URL = "https://github.com/org/missing"
MISSING_KEY = (
    "error: The daytona runtime needs the secret 'DAYTONA_API_KEY', which is not "
    "set. Set it with `arbe secret set DAYTONA_API_KEY`.\n"
)


@pytest.fixture(autouse=True)
def no_process_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep runtime and model settings of the developer's shell out of arbe."""
    for name in (
        "DAYTONA_API_KEY",
        "DAYTONA_API_URL",
        "DAYTONA_TARGET",
        "SPRITES_TOKEN",
        "OPENROUTER_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """Return the one JSON document a successful `--json` subprocess printed."""
    return json.loads(ok(result).stdout)


def call(*args: str, input: str | None = None) -> CliResult:
    """Run `arbe ARGS` in process and fail the test unless it exits 0."""
    result = invoke(*args, input=input)
    assert result.exit_code == 0, result.stderr
    return result


def call_json(*args: str) -> Any:
    """Run `arbe ARGS --json` in process and return its JSON document."""
    return json.loads(call(*args, "--json").stdout)


def assert_one_sentence(stderr: str) -> None:
    assert stderr.startswith("error: ")
    assert stderr.count("\n") == 1


def house_id(*house: str) -> str:
    return str(call_json(*house, "house", "view")["id"])


def local_ids(*house: str) -> list[str]:
    return [s["id"] for s in call_json(*house, "sandbox", "list", *LOCAL)]


def new_local_env(name: str, *house: str) -> str:
    """Create environment `name` with a new local sandbox; return the sandbox id."""
    return str(call_json(*house, "env", "create", name, *LOCAL)["sandbox_id"])


class TestLocalSandbox:
    def test_local_lifecycle_json(self, arbe_home: Path) -> None:
        """An environment's sandbox is listed, viewed, stopped, started, destroyed."""
        sandbox_id = new_local_env("demo")

        listed = call_json("sandbox", "list", *LOCAL)
        viewed = call_json("sandbox", sandbox_id, *LOCAL)
        stopped = call_json("sandbox", "stop", sandbox_id, *LOCAL)
        seen_stopped = call_json("sandbox", sandbox_id, *LOCAL)
        started = call_json("sandbox", "start", sandbox_id, *LOCAL)
        destroyed = call_json("sandbox", "destroy", sandbox_id, *LOCAL)
        again = call_json("sandbox", "destroy", sandbox_id, *LOCAL)
        after = call_json("sandbox", "list", *LOCAL)
        events = call_json("audit", "list")

        assert [s["id"] for s in listed] == [sandbox_id]
        assert listed[0]["labels"] == {"arbe.house": house_id(), "arbe.env": "demo"}
        assert viewed["state"] == "started"
        assert viewed["runtime"] == "local"
        assert viewed["workdir"].endswith(f"{sandbox_id}/work")
        assert stopped["state"] == "stopped"
        assert seen_stopped["state"] == "stopped"
        assert started["state"] == "started"
        assert destroyed == {
            "id": sandbox_id,
            "runtime": "local",
            "destroyed": True,
            "already_gone": False,
        }
        assert again["destroyed"] is False
        assert again["already_gone"] is True
        assert after == []
        assert not (arbe_home / "sandboxes" / "local" / sandbox_id).exists()
        sandbox_actions = [
            e["action"] for e in events if e["action"].startswith("sandbox.")
        ]
        assert sandbox_actions == [
            "sandbox.provision",
            "sandbox.stop",
            "sandbox.start",
            "sandbox.destroy",
        ]

    def test_local_text_output(self, arbe_home: Path) -> None:
        """Each verb prints its result on stdout and nothing on stderr."""
        sandbox_id = new_local_env("demo")

        listed = run_arbe("sandbox", "list", *LOCAL)
        results = {
            "view": invoke("sandbox", sandbox_id, *LOCAL),
            "stop": invoke("sandbox", "stop", sandbox_id, *LOCAL),
            "destroy": invoke("sandbox", "destroy", sandbox_id, *LOCAL),
            "again": invoke("sandbox", "destroy", sandbox_id, *LOCAL),
        }

        assert listed.returncode == 0, listed.stderr
        assert listed.stderr == ""
        header, row = listed.stdout.splitlines()
        assert header.split() == ["ID", "NAME", "STATE", "ENV", "CREATED"]
        assert row.split()[2:4] == ["started", "demo"]
        for result in results.values():
            assert result.exit_code == 0, result.stderr
            assert result.stderr == ""
        lines = results["view"].stdout.splitlines()
        fields = dict(line.split(None, 1) for line in lines)
        assert fields["id"] == sandbox_id
        assert fields["state"] == "started"
        assert fields["labels"] == f"arbe.env=demo, arbe.house={house_id()}"
        assert results["stop"].stdout == f"Sandbox {sandbox_id} is stopped.\n"
        assert results["destroy"].stdout == f"Destroyed sandbox {sandbox_id}.\n"
        assert results["again"].stdout == f"Sandbox {sandbox_id} was already gone.\n"

    def test_other_house_sandbox_hidden(self, arbe_home: Path) -> None:
        """Another house's sandbox is not listed, and no verb reaches it."""
        mine = new_local_env("web")
        call("house", "create", "other")
        theirs = new_local_env("web", "--house", "other")

        listed = local_ids()
        viewed = invoke("sandbox", theirs, *LOCAL)
        stopped = invoke("sandbox", "stop", theirs, *LOCAL, "--json")
        destroyed = call_json("sandbox", "destroy", theirs, *LOCAL)
        their_view = call_json("--house", "other", "sandbox", theirs, *LOCAL)

        not_found = f"error: Sandbox {theirs!r} not found on runtime 'local'."
        assert listed == [mine]
        assert viewed.exit_code == 1
        assert viewed.stdout == ""
        assert viewed.stderr.startswith(not_found)
        assert_one_sentence(viewed.stderr)
        assert stopped.exit_code == 1
        assert json.loads(stopped.stdout)["type"] == "SandboxNotFound"
        assert stopped.stderr.startswith(not_found)
        assert destroyed["destroyed"] is False
        assert destroyed["already_gone"] is True
        assert their_view["state"] == "started"
        assert (arbe_home / "sandboxes" / "local" / theirs).is_dir()


class TestSandboxGc:
    def test_gc_lists_then_destroys_leftover(self, arbe_home: Path) -> None:
        """Only a house sandbox that no environment uses is listed and destroyed."""
        keep_id = new_local_env("keep")
        left_id = new_local_env("left")
        call("env", "delete", "left")
        call("house", "create", "other")
        their_id = new_local_env("x", "--house", "other")
        call("--house", "other", "env", "delete", "x")

        young = call_json("sandbox", "gc", *LOCAL)
        listed = call_json("sandbox", "gc", *LOCAL, "--older-than", "0s")
        listed_text = call("sandbox", "gc", *LOCAL, "--older-than", "0s")
        before = local_ids()
        destroyed = call_json("sandbox", "gc", *LOCAL, "--older-than", "0s", "--yes")
        after = local_ids()
        after_text = call("sandbox", "gc", *LOCAL, "--older-than", "0s")
        theirs_after = local_ids("--house", "other")

        assert young == {"leftovers": [], "destroyed": []}
        assert [s["id"] for s in listed["leftovers"]] == [left_id]
        assert listed["destroyed"] == []
        assert left_id in listed_text.stdout
        assert keep_id not in listed_text.stdout
        assert "run the command again with --yes" in listed_text.stderr
        assert sorted(before) == sorted([keep_id, left_id])
        assert [s["id"] for s in destroyed["leftovers"]] == [left_id]
        assert destroyed["destroyed"] == [left_id]
        assert after == [keep_id]
        assert after_text.stdout == "No leftover sandboxes.\n"
        assert theirs_after == [their_id]

    def test_gc_yes_text_output(self, arbe_home: Path) -> None:
        left = new_local_env("left")
        call("env", "delete", "left")

        result = call("sandbox", "gc", *LOCAL, "--older-than", "0s", "--yes")

        assert left in result.stdout
        assert result.stdout.endswith("Destroyed 1 leftover sandbox(es).\n")
        assert local_ids() == []

    @pytest.mark.parametrize(
        "value", ["5x", "1.5h", "-1h", "h", "", "٣h", "99999999999999999999d"]
    )
    def test_gc_bad_age_one_sentence(self, arbe_home: Path, value: str) -> None:
        result = invoke("sandbox", "gc", *LOCAL, "--older-than", value)

        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr == (
            f"error: Invalid --older-than value {value!r}: use a whole number and "
            "a unit of s, m, h or d, such as 30m or 2d.\n"
        )
        assert not arbe_home.exists()


# --- Daytona -------------------------------------------------------------------


@pytest.fixture
def daytona(
    arbe_home: Path,
    fake_daytona: FakeDaytona,
    contract_repo: str,
    monkeypatch: pytest.MonkeyPatch,
) -> FakeDaytona:
    """Return the fake Daytona API, with GitHub URLs mapped to local repositories.

    The house exists and has OPENROUTER_API_KEY, but no DAYTONA_API_KEY yet.
    """
    monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
    repos = contract_repo.rsplit("/", 1)[0] + "/"
    fake_daytona.map_url("https://github.com/org/", repos)
    call("secret", "set", "OPENROUTER_API_KEY", "--shared", input=OPENROUTER_KEY)
    return fake_daytona


def set_daytona_key(value: str) -> None:
    call("secret", "set", "DAYTONA_API_KEY", input=value)


def live_sandboxes(fake: FakeDaytona) -> list[str]:
    """Return the ids of the fake's sandboxes that are not being destroyed."""
    return [s.id for s in fake.sandboxes.values() if s.state != "destroying"]


class TestDaytonaEnvCreate:
    def test_env_create_provisions_sandbox(self, daytona: FakeDaytona) -> None:
        """`env create` labels the sandbox, clones the repo and records the id."""
        set_daytona_key(daytona.api_key)

        result = run_arbe(
            "env",
            "create",
            "prod",
            "--repo",
            REPO_URL,
            "--secret",
            "OPENROUTER_API_KEY",
            "--json",
        )

        created = json_of(result)
        sandbox = daytona.sandboxes[created["sandbox_id"]]
        assert created["runtime"] == "daytona"
        assert created["allowed_repos"] == [REPO_URL]
        assert created["bindings"] == [{"name": "OPENROUTER_API_KEY", "required": True}]
        assert sandbox.labels["arbe.house"] == house_id()
        assert sandbox.labels["arbe.env"] == "prod"
        assert sandbox.state == "started"
        assert (sandbox.root / "repo" / "README.md").is_file()
        assert sandbox.env == {}
        assert result.stderr == "Provisioning a sandbox on daytona...\n"
        assert {r.authorization for r in daytona.requests} == {
            f"Bearer {daytona.api_key}"
        }
        assert OPENROUTER_KEY not in json.dumps([r.body for r in daytona.requests])

    def test_env_create_text_output(self, daytona: FakeDaytona) -> None:
        set_daytona_key(daytona.api_key)

        result = call("env", "create", "prod")

        [sandbox_id] = live_sandboxes(daytona)
        assert result.stdout == (
            f"Created environment prod with sandbox {sandbox_id} on daytona.\n"
        )
        assert result.stderr.startswith("Provisioning a sandbox on daytona...\n")

    def test_failed_clone_leaves_nothing(self, daytona: FakeDaytona) -> None:
        """A clone failure records no environment and destroys the new sandbox."""
        set_daytona_key(daytona.api_key)

        result = invoke("env", "create", "prod", "--repo", MISSING_REPO_URL)

        assert result.exit_code == 1
        assert result.stdout == ""
        assert result.stderr.count("error: ") == 1
        assert f"error: Cloning {MISSING_REPO_URL!r}" in result.stderr
        assert call_json("env", "list") == []
        assert len(daytona.calls("POST", "/api/sandbox")) == 1
        assert len(daytona.calls("DELETE", "/api/sandbox/[^/]+")) == 1
        assert live_sandboxes(daytona) == []

    def test_env_create_missing_key(self, daytona: FakeDaytona) -> None:
        result = invoke("env", "create", "prod", "--repo", REPO_URL, "--json")

        assert result.exit_code == 1
        assert json.loads(result.stdout)["type"] == "CredentialMissing"
        assert result.stderr.endswith(MISSING_KEY)
        assert result.stderr.count("error: ") == 1
        assert call_json("env", "list") == []
        assert daytona.sandboxes == {}


class TestDaytonaSandbox:
    def test_daytona_lifecycle_json(self, daytona: FakeDaytona) -> None:
        """The house's own sandbox goes through list, view, stop, start, destroy."""
        set_daytona_key(daytona.api_key)
        mine = daytona.add_sandbox({"arbe.house": house_id(), "arbe.env": "prod"})

        listed = call_json("sandbox", "list", *DAYTONA)
        viewed = call_json("sandbox", mine.id, *DAYTONA)
        stopped = call_json("sandbox", "stop", mine.id, *DAYTONA)
        state_after_stop = mine.state
        started = call_json("sandbox", "start", mine.id, *DAYTONA)
        state_after_start = mine.state
        destroyed = call_json("sandbox", "destroy", mine.id, *DAYTONA)
        again = call_json("sandbox", "destroy", mine.id, *DAYTONA)
        after = call_json("sandbox", "list", *DAYTONA)

        assert [s["id"] for s in listed] == [mine.id]
        assert viewed["state"] == "started"
        assert viewed["labels"]["arbe.env"] == "prod"
        assert viewed["details"]["auto_stop_minutes"] == 15
        assert stopped["state"] == "stopped"
        assert state_after_stop == "stopped"
        assert started["state"] == "started"
        assert state_after_start == "started"
        assert destroyed["destroyed"] is True
        assert again["already_gone"] is True
        assert after == []
        assert mine.id not in daytona.sandboxes

    def test_other_house_sandbox_invisible(self, daytona: FakeDaytona) -> None:
        set_daytona_key(daytona.api_key)
        mine = daytona.add_sandbox({"arbe.house": house_id()})
        theirs = daytona.add_sandbox({"arbe.house": "hse_someone_else"})

        listed = call_json("sandbox", "list", *DAYTONA)
        viewed = invoke("sandbox", theirs.id, *DAYTONA)
        stopped = invoke("sandbox", "stop", theirs.id, *DAYTONA)
        destroyed = call_json("sandbox", "destroy", theirs.id, *DAYTONA)

        assert [s["id"] for s in listed] == [mine.id]
        assert viewed.exit_code == 1
        assert viewed.stderr.startswith(
            f"error: Sandbox {theirs.id!r} not found on runtime 'daytona'."
        )
        assert stopped.exit_code == 1
        assert "not found" in stopped.stderr
        assert destroyed["destroyed"] is False
        assert theirs.state == "started"
        assert daytona.calls("POST", f"/api/sandbox/{theirs.id}/stop") == []
        assert daytona.calls("DELETE", f"/api/sandbox/{theirs.id}") == []

    def test_daytona_gc_skips_env_sandbox(self, daytona: FakeDaytona) -> None:
        set_daytona_key(daytona.api_key)
        house = house_id()
        used = call_json("env", "create", "prod", *DAYTONA)["sandbox_id"]
        left = daytona.add_sandbox({"arbe.house": house, "arbe.env": "old"})
        theirs = daytona.add_sandbox({"arbe.house": "hse_someone_else"})

        listed = call_json("sandbox", "gc", *DAYTONA, "--older-than", "0s")
        destroyed = call_json("sandbox", "gc", *DAYTONA, "--older-than", "0s", "--yes")

        assert [s["id"] for s in listed["leftovers"]] == [left.id]
        assert destroyed["destroyed"] == [left.id]
        assert live_sandboxes(daytona) == [used, theirs.id]
        assert daytona.sandboxes[used].state == "started"

    def test_bad_key_one_sentence(self, daytona: FakeDaytona) -> None:
        """A rejected key names DAYTONA_API_KEY and the fix, never the key."""
        set_daytona_key(WRONG_KEY)

        text = invoke("sandbox", "list", *DAYTONA)
        verbose = run_arbe("-vv", "sandbox", "list", *DAYTONA, "--json")

        expected = (
            "Daytona rejected DAYTONA_API_KEY. Set a valid key with "
            "`arbe secret set DAYTONA_API_KEY`."
        )
        assert text.exit_code == 1
        assert text.stdout == ""
        assert text.stderr == f"error: {expected}\n"
        assert verbose.returncode == 1
        assert json.loads(verbose.stdout)["message"] == expected
        assert f"error: {expected}\n" in verbose.stderr
        for output in (text.stderr, verbose.stdout, verbose.stderr):
            assert WRONG_KEY not in output
        assert len(daytona.calls("GET", "/api/sandbox")) == 2

    def test_missing_key_credential_missing(self, daytona: FakeDaytona) -> None:
        result = invoke("sandbox", "list", *DAYTONA, "--json")

        assert result.exit_code == 1
        assert json.loads(result.stdout)["error"] == "credential_missing"
        assert result.stderr == MISSING_KEY
        assert daytona.requests == []


def test_sandbox_options_before_id(arbe_home: Path, tmp_path: Path) -> None:
    """`arbe sandbox --runtime local ID` works like `arbe sandbox ID --runtime local`."""
    repo = tmp_path / "opts-repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    (repo / "README").write_text("x\n")
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    created = run_arbe(
        "env", "create", "opts", "--runtime", "local", "--repo", str(repo), "--json"
    )
    sandbox_id = json.loads(created.stdout)["sandbox_id"]

    before = run_arbe("sandbox", "--runtime", "local", sandbox_id, "--json")
    listed = run_arbe("sandbox", "--runtime", "local", "--json", "list")

    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["id"] == sandbox_id
    assert listed.returncode == 0, listed.stderr
    assert sandbox_id in [s["id"] for s in json.loads(listed.stdout)]
