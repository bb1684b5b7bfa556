"""`arbe env` end to end as a new user on the local runtime, through the real CLI."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from arbe_entry import open_house
from tests.helpers import ARBE_SCRIPT, SUBPROCESS_TIMEOUT_S, arbe_env, run_arbe

TOKEN_VALUE = "ghp_test_0123456789abcdef"
CREATE_DEMO = ["env", "create", "demo", "--runtime", "local"]


@pytest.fixture(autouse=True)
def no_process_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep model keys of the developer's shell out of the subprocesses."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)
    monkeypatch.setenv("ARBE_PLUGINS", "")


@pytest.fixture(scope="module")
def repo(contract_repo: str) -> Path:
    """A local git repository whose one commit adds README.md."""
    return Path(urlparse(contract_repo).path)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def json_of(result: subprocess.CompletedProcess[str]) -> Any:
    """Return the one JSON document a successful `--json` command printed."""
    return json.loads(ok(result).stdout)


def set_secret(
    home: Path, name: str, value: str, *options: str
) -> subprocess.CompletedProcess[str]:
    return ok(
        run_arbe("secret", "set", name, *options, input=value, env=home_env(home))
    )


def home_env(home: Path) -> dict[str, str]:
    return {"ARBE_HOME": str(home), "ARBE_PLUGINS": ""}


def sandbox_dirs(home: Path) -> list[str]:
    root = home / "sandboxes" / "local"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def recorded_state(home: Path) -> tuple[list[str], list[str]]:
    """Return the environments and the env and sandbox audit actions, in process."""
    opened = open_house(home=home)
    try:
        names = [e.name for e in opened.environments.list()]
        with opened.deps.storage.unit_of_work(write=False) as uow:
            events = uow.audit.list(opened.house.id)
    finally:
        opened.close()
    actions = [e.action for e in events if e.action.startswith(("env.", "sandbox."))]
    return names, actions


class TestEnvFirstSession:
    def test_env_first_session_flow(self, arbe_home: Path, repo: Path) -> None:
        """Create, view, bind, unbind, use, diagnose clean, break it, delete."""
        set_secret(arbe_home, "GITHUB_TOKEN", TOKEN_VALUE, "--shared")
        set_secret(
            arbe_home, "OPENROUTER_API_KEY", "sk-test-123", "--audience", "capability"
        )

        created = run_arbe(
            "env",
            "create",
            "demo",
            "--runtime",
            "local",
            "--repo",
            str(repo),
            "--secret",
            "GITHUB_TOKEN",
            "--optional-secret",
            "SENTRY_DSN",
        )
        viewed = json_of(run_arbe("env", "view", "demo", "--json"))
        bound = run_arbe("env", "bind-secret", "demo", "NPM_TOKEN", "--optional")
        unbound = run_arbe("env", "unbind-secret", "demo", "NPM_TOKEN")
        used = run_arbe("env", "use", "demo")
        listed = run_arbe("env", "list")
        clean = run_arbe("env", "diagnose", "demo")
        run_arbe("env", "bind-secret", "demo", "MISSING_TOKEN")
        broken = run_arbe("env", "diagnose", "demo")
        deleted = run_arbe("env", "delete", "demo")
        after = json_of(run_arbe("env", "list", "--json"))

        assert created.returncode == 0, created.stderr
        assert created.stdout.startswith("Created environment demo with sandbox lsb_")
        assert "warning: secret SENTRY_DSN is not set yet" in created.stderr
        assert viewed["bindings"] == [
            {"name": "SENTRY_DSN", "required": False},
            {"name": "GITHUB_TOKEN", "required": True},
        ]
        assert viewed["allowed_repos"] == [str(repo)]
        assert viewed["runtime"] == "local"
        assert TOKEN_VALUE not in json.dumps(viewed)
        assert bound.stdout == "Bound NPM_TOKEN to demo (optional).\n"
        assert "warning: secret NPM_TOKEN is not set yet" in bound.stderr
        assert unbound.stdout == "Unbound NPM_TOKEN from demo.\n"
        assert used.stdout == "Active environment is now demo.\n"
        assert listed.stdout.splitlines()[1].startswith("*  demo")
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "FAILED" not in clean.stdout
        assert broken.returncode == 1
        assert "secret MISSING_TOKEN" in broken.stdout
        assert "arbe secret set MISSING_TOKEN --shared" in broken.stdout
        assert broken.stderr == "1 check(s) failed for environment demo.\n"
        assert deleted.returncode == 0, deleted.stderr
        assert after == []
        assert len(sandbox_dirs(arbe_home)) == 1

    def test_env_create_clones_repo(self, arbe_home: Path, repo: Path) -> None:
        created = json_of(
            run_arbe(
                "env",
                "create",
                "demo",
                "--runtime",
                "local",
                "--repo",
                str(repo),
                "--json",
            )
        )

        workdir = arbe_home / "sandboxes" / "local" / created["sandbox_id"] / "work"
        assert (workdir / "README.md").is_file()
        assert created["active"] is True

    def test_env_create_relative_repo_stored_absolute(
        self, arbe_home: Path, repo: Path
    ) -> None:
        result = subprocess.run(
            [str(ARBE_SCRIPT), *CREATE_DEMO, "--repo", ".", "--json"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
            env=arbe_env(),
        )

        created = json_of(result)
        assert created["allowed_repos"] == [str(repo)]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Iterator[Path]:
    """A home with environment `web`, a capability secret and a queued dispatch.

    Every bad input below runs against it; none may change what it holds.
    """
    home = tmp_path_factory.mktemp("env-home") / "home"
    env = home_env(home)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OPENROUTER_API_KEY", raising=False)
        set_secret(home, "CAP_KEY", "sk-test-123", "--audience", "capability")
        ok(run_arbe("env", "create", "web", "--runtime", "local", env=env))
        ok(run_arbe("env", "create", "busy", "--runtime", "local", env=env))
        thread = ok(
            run_arbe(
                "thread",
                "create",
                "--env",
                "busy",
                "--model",
                "builtin/shell",
                env=env,
            )
        ).stdout.strip()
        ok(
            run_arbe(
                "thread",
                "entries",
                "create",
                thread,
                "ls",
                "--no-start-worker",
                env=env,
            )
        )
    yield home


BAD_CREATES = {
    "invalid-name": ["env", "create", "Web", "--runtime", "local"],
    "existing-name": ["env", "create", "web", "--runtime", "local"],
    "unknown-runtime": ["env", "create", "api", "--runtime", "nowhere"],
    "ftp-url": ["env", "create", "api", "--runtime", "local", "--repo", "ftp://x"],
    "not-a-url": ["env", "create", "api", "--runtime", "local", "--repo", "not a url"],
    "missing-path": [
        "env",
        "create",
        "api",
        "--runtime",
        "local",
        "--repo",
        "/no/such/repo",
    ],
    "invalid-secret-name": [
        "env",
        "create",
        "api",
        "--runtime",
        "local",
        "--secret",
        "npm-token",
    ],
    "capability-secret": [
        "env",
        "create",
        "api",
        "--runtime",
        "local",
        "--secret",
        "CAP_KEY",
    ],
    "invalid-sandbox-name": [
        "env",
        "create",
        "api",
        "--runtime",
        "local",
        "--sandbox",
        "Bad Box",
    ],
    "negative-auto-stop": [
        "env",
        "create",
        "api",
        "--runtime",
        "local",
        "--auto-stop",
        "-1",
    ],
}

BAD_CHANGES = {
    "bind-capability": ["env", "bind-secret", "web", "CAP_KEY"],
    "bind-invalid-name": ["env", "bind-secret", "web", "npm-token"],
    "bind-unknown-env": ["env", "bind-secret", "nowhere", "NPM_TOKEN"],
    "unbind-not-bound": ["env", "unbind-secret", "web", "NPM_TOKEN"],
    "use-unknown": ["env", "use", "nowhere"],
    "view-unknown": ["env", "view", "nowhere"],
    "delete-unknown": ["env", "delete", "nowhere"],
    "delete-live-dispatch": ["env", "delete", "busy"],
    "diagnose-unknown": ["env", "diagnose", "nowhere"],
}


class TestEnvBadInput:
    @pytest.mark.parametrize("args", BAD_CREATES.values(), ids=BAD_CREATES.keys())
    def test_bad_create_rejected(self, shared_home: Path, args: list[str]) -> None:
        result = run_arbe(*args, env=home_env(shared_home))

        envs, actions = recorded_state(shared_home)
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        assert envs == ["busy", "web"]
        assert actions.count("env.create") == 2
        assert len(sandbox_dirs(shared_home)) == 2

    @pytest.mark.parametrize("args", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
    def test_bad_change_rejected(self, shared_home: Path, args: list[str]) -> None:
        before = recorded_state(shared_home)

        result = run_arbe(*args, env=home_env(shared_home))

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        assert recorded_state(shared_home) == before

    def test_capability_message_says_why(self, shared_home: Path) -> None:
        result = run_arbe(
            "env", "bind-secret", "web", "CAP_KEY", env=home_env(shared_home)
        )

        assert "capability secrets are for arbe itself" in result.stderr
        assert "never enter a sandbox" in result.stderr

    def test_live_dispatch_message_names_fix(self, shared_home: Path) -> None:
        result = run_arbe("env", "delete", "busy", env=home_env(shared_home))

        assert "arbe thread cancel thr_" in result.stderr

    def test_bad_input_json_error_object(self, shared_home: Path) -> None:
        result = run_arbe("env", "view", "nowhere", "--json", env=home_env(shared_home))

        error = json.loads(result.stdout)
        assert result.returncode == 1
        assert error["error"] == "not_found"
        assert error["type"] == "EnvironmentNotFound"


class TestEnvJson:
    def test_every_env_command_prints_one_json_document(self, arbe_home: Path) -> None:
        documents = {
            "create": run_arbe(
                "env",
                "create",
                "web",
                "--runtime",
                "local",
                "--secret",
                "NPM_TOKEN",
                "--json",
            ),
            "list": run_arbe("env", "list", "--json"),
            "view": run_arbe("env", "view", "web", "--json"),
            "bind-secret": run_arbe(
                "env", "bind-secret", "web", "PYPI_TOKEN", "--json"
            ),
            "unbind-secret": run_arbe(
                "env", "unbind-secret", "web", "PYPI_TOKEN", "--json"
            ),
            "use": run_arbe("env", "use", "web", "--json"),
            "diagnose": run_arbe("env", "diagnose", "web", "--json"),
            "delete": run_arbe("env", "delete", "web", "--destroy-sandbox", "--json"),
        }

        parsed = {name: json.loads(r.stdout) for name, r in documents.items()}
        assert parsed["create"]["warnings"] == [
            "secret NPM_TOKEN is not set yet; set it before dispatch with "
            "`arbe secret set NPM_TOKEN`."
        ]
        assert [e["name"] for e in parsed["list"]] == ["web"]
        assert parsed["view"]["active"] is True
        assert parsed["bind-secret"]["bindings"][-1] == {
            "name": "PYPI_TOKEN",
            "required": True,
        }
        assert parsed["unbind-secret"]["bindings"] == [
            {"name": "NPM_TOKEN", "required": True}
        ]
        assert parsed["use"]["name"] == "web"
        assert documents["diagnose"].returncode == 1
        assert parsed["diagnose"]["ok"] is False
        assert {c["name"] for c in parsed["diagnose"]["checks"]} == {
            "secret NPM_TOKEN",
            "runtime local credential",
            "model openrouter/anthropic/claude-haiku-4.5",
            "sandbox",
        }
        assert parsed["delete"]["sandbox_destroyed"] is True
        assert sandbox_dirs(arbe_home) == []


class TestEnvAliases:
    def test_list_aliases(self, arbe_home: Path) -> None:
        ok(run_arbe("env", "create", "web", "--runtime", "local"))

        outputs = [run_arbe("env", name, "--json").stdout for name in ("ls", "l")]

        assert [json.loads(o)[0]["name"] for o in outputs] == ["web", "web"]

    @pytest.mark.parametrize("alias", ["rm", "del"])
    def test_delete_aliases(self, arbe_home: Path, alias: str) -> None:
        ok(run_arbe("env", "create", "web", "--runtime", "local"))

        result = run_arbe("env", alias, "web")

        assert result.returncode == 0, result.stderr
        assert json.loads(run_arbe("env", "list", "--json").stdout) == []
