"""Bare `arbe sandbox` verbs on the legacy sprite runtime, against the fake Sprites API.

SPRITES_API_URL points at the fake in the process environment, and
SPRITES_TOKEN is only a house secret. Every output of every command, JSON
included, is checked for the token. Most commands run the CLI's `main` in
this process (`invoke`), which is faster. A few run the `arbe` script in a
subprocess, so that what a real process writes to its streams is checked too.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from arbe_adapters.runtimes.sprite._names import SpriteNames
from tests.fakes.sprites import FakeSprites
from tests.helpers import CliResult, invoke, run_arbe

TOKEN = "sk-test-sprite-4f1e9a"
WRONG_TOKEN = "sk-test-sprite-wrong-0b7c"
GITHUB_TOKEN = "ghp-test-sprite-env-5d2e"


def check_no_token(*outputs: str) -> None:
    for output in outputs:
        assert TOKEN not in output
        assert WRONG_TOKEN not in output


def arbe(*args: str, input: str | None = None) -> CliResult:
    """Run `arbe ARGS` in process; fail if any output contains a token."""
    result = invoke(*args, input=input)
    check_no_token(result.stdout, result.stderr)
    return result


def arbe_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `arbe` script; fail if any output contains a token."""
    result = run_arbe(*args)
    check_no_token(result.stdout, result.stderr)
    return result


def arbe_json(*args: str, exit_code: int = 0) -> Any:
    """Run `arbe ARGS --json` in process and return its JSON document."""
    result = arbe(*args, "--json")
    assert result.exit_code == exit_code, result.stderr
    return json.loads(result.stdout)


def set_token(value: str) -> None:
    result = arbe("secret", "set", "SPRITES_TOKEN", input=value)
    assert result.exit_code == 0, result.stderr


def closed_port() -> int:
    """Return a 127.0.0.1 port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sprites(
    arbe_home: Path, fake_sprites: FakeSprites, monkeypatch: pytest.MonkeyPatch
) -> FakeSprites:
    """Return the fake Sprites API; the house exists but has no SPRITES_TOKEN."""
    monkeypatch.setenv("SPRITES_API_URL", fake_sprites.base_url)
    monkeypatch.delenv("SPRITES_TOKEN", raising=False)
    fake_sprites.token = TOKEN
    assert arbe("house", "view").exit_code == 0
    return fake_sprites


@pytest.fixture
def prefix(sprites: FakeSprites) -> str:
    """Return the name prefix of the house's sprites."""
    house = arbe_json("house", "view")
    return SpriteNames(house["id"], house["name"]).prefix


class TestSetup:
    def test_setup_creates_then_finds_default(
        self, sprites: FakeSprites, prefix: str
    ) -> None:
        set_token(TOKEN)

        first = arbe_process("sandbox", "setup", "--json")
        second = arbe("sandbox", "setup")

        report = json.loads(first.stdout)
        assert first.returncode == 0, first.stderr
        assert report["created"] is True
        assert report["sprite"]["id"] == f"{prefix}default"
        assert report["sprite"]["name"] == "default"
        assert all(check["ok"] for check in report["checks"])
        assert list(sprites.sprites) == [f"{prefix}default"]
        assert second.exit_code == 0, second.stderr
        assert second.stdout.startswith(
            f"Token accepted. Found sprite default ({prefix}default), "
        )
        assert len(sprites.calls("rest", "POST")) == 1

    def test_setup_without_token_fails(self, sprites: FakeSprites) -> None:
        report = arbe_json("sandbox", "setup", exit_code=1)

        assert report["ok"] is False
        assert report["checks"] == [
            {
                "name": "token present",
                "ok": False,
                "detail": "SPRITES_TOKEN is not set for this house.",
                "fix": "Set it with `arbe secret set SPRITES_TOKEN`.",
                "warning": False,
            }
        ]
        assert sprites.sprites == {}
        assert sprites.requests == []


class TestPing:
    def test_ping_reports_status_and_latency(
        self, sprites: FakeSprites, prefix: str
    ) -> None:
        """A cold sprite reports sleeping; bare `ping` reads the default sprite."""
        set_token(TOKEN)
        sprites.add_sprite(f"{prefix}idle", status="cold")
        sprites.add_sprite(f"{prefix}default", status="warm")

        idle = arbe_json("sandbox", "ping", "idle")
        default = arbe_json("sandbox", "ping")
        text = arbe("sandbox", "ping", "idle")

        assert idle["state"] == "sleeping"
        assert idle["detail"] == "sprite status 'cold'"
        assert idle["latency_ms"] >= 0
        assert default["name"] == "default"
        assert default["state"] == "started"
        assert text.exit_code == 0
        assert text.stdout.startswith("idle: sleeping, ")
        assert text.stdout.endswith(" ms (sprite status 'cold')\n")
        assert sprites.sprites[f"{prefix}idle"].status == "cold"

    def test_ping_unknown_sprite_not_found(self, sprites: FakeSprites) -> None:
        set_token(TOKEN)

        result = arbe("sandbox", "ping", "nowhere")

        assert result.exit_code == 1
        assert result.stderr.startswith("error: Sandbox ")
        assert "not found on runtime 'sprite'" in result.stderr
        assert result.stderr.count("\n") == 1


class TestDiagnose:
    def test_diagnose_healthy_exits_zero(
        self, sprites: FakeSprites, prefix: str
    ) -> None:
        set_token(TOKEN)
        sprites.add_sprite(f"{prefix}idle", status="cold")
        sprites.add_sprite(f"{prefix}busy", status="running")

        report = arbe_json("sandbox", "diagnose")
        text = arbe("sandbox", "diagnose")

        assert report["ok"] is True
        assert [c["name"] for c in report["checks"]] == [
            "token present",
            "API reachable",
            "token accepted",
            "house sprites",
            "sprite busy",
            "sprite idle",
        ]
        assert text.exit_code == 0
        assert "FAILED" not in text.stdout
        assert text.stderr == ""

    def test_diagnose_rejected_token(self, sprites: FakeSprites) -> None:
        """A wrong token and an injected 401 both fail `token accepted` with a fix."""
        set_token(WRONG_TOKEN)
        wrong = arbe_json("sandbox", "diagnose", exit_code=1)
        verbose = arbe_process("-vv", "sandbox", "diagnose")
        set_token(TOKEN)
        sprites.fail(401, target="rest")

        rejected = arbe_json("sandbox", "diagnose", exit_code=1)

        for report in (wrong, rejected):
            failed = [c for c in report["checks"] if not c["ok"]]
            assert report["ok"] is False
            assert [c["name"] for c in failed] == ["token accepted"]
            assert failed[0]["detail"].startswith("Sprites rejected SPRITES_TOKEN.")
            assert failed[0]["fix"] == (
                "Set a valid token with `arbe secret set SPRITES_TOKEN`."
            )
        assert verbose.returncode == 1
        assert "token accepted  FAILED" in verbose.stdout
        assert verbose.stderr.endswith("1 check(s) failed on runtime sprite.\n")

    def test_diagnose_unreachable_api(
        self, sprites: FakeSprites, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        set_token(TOKEN)
        url = f"http://127.0.0.1:{closed_port()}"
        monkeypatch.setenv("SPRITES_API_URL", url)

        report = arbe_json("sandbox", "diagnose", exit_code=1)
        text = arbe("sandbox", "diagnose")
        ping = arbe_json("sandbox", "ping", exit_code=1)

        failed = [c for c in report["checks"] if not c["ok"]]
        assert [c["name"] for c in failed] == ["API reachable"]
        assert failed[0]["detail"].startswith(f"Cannot reach the Sprites API at {url}")
        assert failed[0]["fix"] == (
            f"Check the network and SPRITES_API_URL (now {url})."
        )
        assert text.exit_code == 1
        assert "API reachable  FAILED" in text.stdout
        assert text.stderr.endswith("1 check(s) failed on runtime sprite.\n")
        assert ping["state"] == "unreachable"
        assert sprites.requests == []


class TestRateLimit:
    def test_rate_limit_shows_retry_after(
        self, sprites: FakeSprites, prefix: str
    ) -> None:
        """A 429 gives its Retry-After seconds in the sentence and in --json."""
        set_token(TOKEN)
        sprites.add_sprite(f"{prefix}default")
        sprites.fail(429, target="rest", retry_after=42)
        listed = arbe("sandbox", "list", "--json")
        sprites.fail(429, target="rest", retry_after=42)
        pinged = arbe("sandbox", "ping")
        sprites.fail(429, target="rest", retry_after=42)

        report = arbe_json("sandbox", "diagnose", exit_code=1)

        error = json.loads(listed.stdout)
        assert listed.exit_code == 1
        assert error["error"] == "rate_limited"
        assert error["retry_after"] == 42
        assert listed.stderr == (
            "error: Sprites rate-limited list sprites (HTTP 429); retry after 42 s.\n"
        )
        assert pinged.exit_code == 1
        assert "(HTTP 429); retry after 42 s." in pinged.stderr
        failed = [c for c in report["checks"] if not c["ok"]]
        assert failed[0]["name"] == "token accepted"
        assert "retry after 42 s" in failed[0]["detail"]
        assert failed[0]["fix"] == "Wait 42 s and run `arbe sandbox diagnose` again."


class TestSandboxEnv:
    def test_env_shows_names_masked(self, sprites: FakeSprites, prefix: str) -> None:
        """Bound secrets show as `***` when set; no value is ever printed."""
        set_token(TOKEN)
        sprites.add_sprite(f"{prefix}web")
        arbe("secret", "set", "GITHUB_TOKEN", "--shared", input=GITHUB_TOKEN)
        created = arbe(
            "env",
            "create",
            "web",
            "--runtime",
            "sprite",
            "--sandbox",
            "web",
            "--secret",
            "GITHUB_TOKEN",
            "--optional-secret",
            "SENTRY_DSN",
        )

        variables = arbe_json("sandbox", "env", "web")
        text = arbe("sandbox", "env", "web")

        assert created.exit_code == 0, created.stderr
        assert variables["sandbox_id"] == f"{prefix}web"
        assert variables["variables"] == [
            {
                "name": "SENTRY_DSN",
                "value": None,
                "required": False,
                "status": "missing or not shared",
            },
            {"name": "GITHUB_TOKEN", "value": "***", "required": True, "status": "set"},
        ]
        assert "GITHUB_TOKEN  ***" in text.stdout
        for output in (json.dumps(variables), text.stdout, text.stderr):
            assert GITHUB_TOKEN not in output

    def test_env_unknown_environment(self, sprites: FakeSprites) -> None:
        result = arbe("sandbox", "env", "nowhere")

        assert result.exit_code == 1
        assert result.stderr.startswith("error: Environment 'nowhere' not found")
        assert result.stderr.count("\n") == 1


class TestBareVerbs:
    def test_bare_verbs_own_sprites_only(
        self, sprites: FakeSprites, prefix: str
    ) -> None:
        """list, NAME, stop, start and destroy act on the house's sprites only."""
        set_token(TOKEN)
        sprites.add_sprite(f"{prefix}web", status="cold")
        sprites.add_sprite("arbe-00000000-theirs", status="warm")
        sprites.add_sprite("someone-else", status="warm")

        listed = arbe_json("sandbox", "list")
        viewed = arbe_json("sandbox", "web")
        stopped = arbe_json("sandbox", "stop", "web")
        started = arbe("sandbox", "start", "web")
        theirs = arbe_json("sandbox", "destroy", "arbe-00000000-theirs")
        destroyed = arbe_json("sandbox", "destroy", "web")
        again = arbe("sandbox", "destroy", "web")

        assert [s["id"] for s in listed] == [f"{prefix}web"]
        assert viewed["name"] == "web"
        assert viewed["state"] == "sleeping"
        assert viewed["raw_state"] == "cold"
        assert stopped["raw_state"] == "cold"
        assert started.exit_code == 0, started.stderr
        assert started.stdout == f"Sandbox {prefix}web is sleeping (cold).\n"
        assert "has no stop or start" in started.stderr
        assert theirs["destroyed"] is False
        assert destroyed["destroyed"] is True
        assert again.exit_code == 0
        assert again.stdout == "Sandbox web was already gone.\n"
        assert sorted(sprites.sprites) == ["arbe-00000000-theirs", "someone-else"]

    def test_unknown_sprite_view_not_found(self, sprites: FakeSprites) -> None:
        set_token(TOKEN)

        result = arbe("sandbox", "nowhere", "--json")

        assert result.exit_code == 1
        assert json.loads(result.stdout)["type"] == "SandboxNotFound"
        assert result.stderr.count("\n") == 1
