"""The sprite runtime against the fake Sprites API: faults, sleep and errors."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sprites.exceptions
from sprites.exec import Cmd

from arbe_adapters.runtimes.sprite._errors import CallContext, sprite_errors
from arbe_adapters.runtimes.sprite._names import SpriteNames
from arbe_adapters.runtimes.sprite._runtime import WORKDIR, SpriteRuntime
from arbe_core.errors import (
    ArbeError,
    CredentialMissing,
    CredentialRejected,
    InvalidName,
    RateLimited,
    SandboxNotFound,
    SandboxUnreachable,
    Transient,
    Unavailable,
)
from arbe_core.runtime import HOUSE_LABEL, RuntimeContext, SandboxSpec, SandboxState
from tests.fakes.sprites import FakeSprites

HOUSE_ID = "hse_unit"
WRONG_TOKEN = "sk-test-wrong-456"

MakeRuntime = Callable[..., SpriteRuntime]


@pytest.fixture
def sleeps() -> list[float]:
    """Collect the waits that `ping` requests instead of sleeping."""
    return []


@pytest.fixture
def make_runtime(
    fake_sprites: FakeSprites, tmp_path: Path, sleeps: list[float]
) -> MakeRuntime:
    """Return a factory of runtimes on the fake, with a settable token and URL."""

    def make(
        token: str | None = fake_sprites.token,
        base_url: str | None = None,
        house_id: str = HOUSE_ID,
        **options: Any,
    ) -> SpriteRuntime:
        settings = {"SPRITES_API_URL": base_url or fake_sprites.base_url}
        context = RuntimeContext(
            house_id=house_id,
            house_name="unit_house",
            state_dir=str(tmp_path),
            config=settings.get,
            credential=token,
        )
        return SpriteRuntime(context, sleep=sleeps.append, **options)

    return make


@pytest.fixture
def runtime(make_runtime: MakeRuntime) -> SpriteRuntime:
    return make_runtime()


@pytest.fixture
def closed_port_url() -> str:
    """Return a 127.0.0.1 URL whose port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    """Make `<tmp>/repos/acme/widgets`, a git repository with one README."""
    repo = tmp_path / "repos" / "acme" / "widgets"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("widgets\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.name=t", "-c", "user.email=t@invalid"]
    for args in (["init", "-q"], ["add", "."], [*identity, "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return tmp_path / "repos"


def _new_exception(cls: type[BaseException]) -> BaseException:
    """Build an instance of an SDK exception class from its signature."""
    args: list[object] = []
    try:
        parameters = inspect.signature(cls).parameters.values()
    except ValueError:  # No Python-level __init__: takes a message.
        return cls("boom")
    for parameter in parameters:
        if parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        args.append(1 if parameter.annotation is int else "boom")
    return cls(*args)


class TestErrorMapping:
    def test_every_sdk_exception_maps_to_arbe_error(self) -> None:
        classes = [
            value
            for value in vars(sprites.exceptions).values()
            if isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == "sprites.exceptions"
        ]
        context = CallContext("get", "arbe-x", "sk-test-123", "http://127.0.0.1:9")
        assert len(classes) >= 10

        for cls in classes:
            exc = _new_exception(cls)
            with pytest.raises(ArbeError) as raised:
                with sprite_errors(context):
                    raise exc

            assert raised.value.__cause__ is exc, cls.__name__

    def test_sdk_text_with_token_is_masked(self) -> None:
        context = CallContext("list sprites", None, "sk-test-123", "http://x")
        exc = sprites.exceptions.SpriteError(
            "Failed list sprites (status 500): echo Bearer sk-test-123"
        )

        with pytest.raises(Transient) as raised:
            with sprite_errors(context):
                raise exc

        assert "sk-test-123" not in str(raised.value)
        assert "HTTP 500" in str(raised.value)

    def test_rest_401_maps_to_credential_rejected(
        self, make_runtime: MakeRuntime
    ) -> None:
        runtime = make_runtime(token=WRONG_TOKEN)

        with pytest.raises(CredentialRejected) as raised:
            runtime.list()

        assert raised.value.name == "SPRITES_TOKEN"
        assert WRONG_TOKEN not in str(raised.value)

    def test_exec_401_maps_to_credential_rejected(
        self, runtime: SpriteRuntime, make_runtime: MakeRuntime
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))

        with pytest.raises(CredentialRejected) as raised:
            make_runtime(token=WRONG_TOKEN).exec(info.id, "true")

        assert WRONG_TOKEN not in str(raised.value)

    def test_rest_5xx_maps_to_transient_naming_status(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        fake_sprites.fail(502, "rest")

        with pytest.raises(Transient) as raised:
            runtime.list()

        assert "HTTP 502" in str(raised.value)
        assert not isinstance(raised.value, RateLimited)

    def test_network_error_maps_to_unreachable(
        self, make_runtime: MakeRuntime, closed_port_url: str
    ) -> None:
        runtime = make_runtime(base_url=closed_port_url)

        with pytest.raises(SandboxUnreachable) as raised:
            runtime.get("box")

        assert closed_port_url in str(raised.value)
        assert "sk-test-123" not in str(raised.value)

    def test_missing_token_raises_credential_missing(
        self, make_runtime: MakeRuntime
    ) -> None:
        with pytest.raises(CredentialMissing) as raised:
            make_runtime(token=None).list()

        assert raised.value.name == "SPRITES_TOKEN"


class TestRateLimits:
    def test_rest_429_carries_retry_after(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        fake_sprites.fail(429, "rest", retry_after=7)

        with pytest.raises(RateLimited) as raised:
            runtime.list()

        assert raised.value.retry_after == 7.0
        assert raised.value.to_dict()["retry_after"] == 7.0

    def test_exec_429_is_not_retried(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.fail(429, "exec", retry_after=5)
        before = len(fake_sprites.calls("exec"))

        with pytest.raises(RateLimited) as raised:
            runtime.exec(info.id, "true")

        assert raised.value.retry_after == 5.0
        assert len(fake_sprites.calls("exec")) == before + 1

    def test_provision_429_is_not_retried(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        fake_sprites.fail(429, "rest", retry_after=3)

        with pytest.raises(RateLimited):
            runtime.provision(SandboxSpec(labels={}))

        assert len(fake_sprites.calls("rest", "POST")) == 1
        assert fake_sprites.sprites == {}


class TestPing:
    def test_ping_cold_sprite_reports_sleeping(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.sprites[info.id].status = "cold"

        health = runtime.ping(info.id)
        seen = runtime.get(info.id)

        assert health.state == SandboxState.SLEEPING
        assert seen.state == SandboxState.SLEEPING
        assert seen.raw_state == "cold"

    def test_ping_running_and_warm_report_started(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))

        for status in ("running", "warm"):
            fake_sprites.sprites[info.id].status = status

            assert runtime.ping(info.id).state == SandboxState.STARTED, status

    def test_ping_retries_server_errors(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites, sleeps: list[float]
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.fail(503, "rest", times=2)
        before = len(fake_sprites.calls("rest", "GET"))

        health = runtime.ping(info.id)

        assert health.state == SandboxState.STARTED
        assert sleeps == [0.5, 1.0]
        assert len(fake_sprites.calls("rest", "GET")) == before + 3

    def test_ping_waits_out_short_retry_after(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites, sleeps: list[float]
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.fail(429, "rest", retry_after=2)

        health = runtime.ping(info.id)

        assert health.state == SandboxState.STARTED
        assert sleeps == [2.0]

    def test_ping_raises_long_retry_after(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites, sleeps: list[float]
    ) -> None:
        fake_sprites.fail(429, "rest", retry_after=60)

        with pytest.raises(RateLimited) as raised:
            runtime.ping("box")

        assert raised.value.retry_after == 60.0
        assert sleeps == []

    def test_ping_unreachable_api_reports_unreachable(
        self, make_runtime: MakeRuntime, closed_port_url: str, sleeps: list[float]
    ) -> None:
        runtime = make_runtime(base_url=closed_port_url)

        health = runtime.ping("box")

        assert health.state == SandboxState.UNREACHABLE
        assert len(sleeps) == 2

    def test_ping_does_not_retry_not_found(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites, sleeps: list[float]
    ) -> None:
        with pytest.raises(SandboxNotFound):
            runtime.ping("box")

        assert len(fake_sprites.calls("rest")) == 1
        assert sleeps == []


class TestStopStart:
    def test_capabilities_declare_sleeping_runtime(
        self, runtime: SpriteRuntime
    ) -> None:
        assert runtime.capabilities.stop_start is False
        assert runtime.capabilities.sleeps is True
        assert runtime.capabilities.separate_streams is True

    def test_stop_and_start_report_status_only(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.sprites[info.id].status = "cold"
        before = len(fake_sprites.requests)

        stopped = runtime.stop(info.id)
        started = runtime.start(info.id)

        assert stopped.state == SandboxState.SLEEPING
        assert started.state == SandboxState.SLEEPING
        methods = {r.method for r in fake_sprites.requests[before:]}
        assert methods == {"GET"}


class TestExec:
    def test_exec_nonzero_exit_is_result(self, runtime: SpriteRuntime) -> None:
        info = runtime.provision(SandboxSpec(labels={}))

        result = runtime.exec(info.id, "echo out; echo err >&2; exit 3")

        assert result.exit_code == 3
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"

    def test_exec_sends_env_and_dir_as_parameters(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        runtime.exec(info.id, "mkdir -p sub")

        result = runtime.exec(info.id, 'printf %s "$FOO"', cwd="sub", env={"FOO": "v"})

        query = fake_sprites.calls("exec")[-1].query
        assert result.stdout == "v"
        assert ("env", "FOO=v") in query
        assert ("dir", f"{WORKDIR}/sub") in query
        assert "v" not in [value for key, value in query if key == "cmd"]

    def test_exec_closed_before_exit_keeps_output(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.break_exec("close_before_exit")
        before = len(fake_sprites.calls("exec"))

        result = runtime.exec(info.id, "echo partial; echo warn >&2")

        assert result.exit_code is None
        assert result.timed_out is False
        assert result.stdout == "partial\n"
        assert result.stderr == "warn\n"
        assert len(fake_sprites.calls("exec")) == before + 1

    def test_exec_without_response_times_out(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.break_exec("hang")
        before = len(fake_sprites.calls("exec"))

        started = time.monotonic()
        result = runtime.exec(info.id, "echo never", timeout=0.5)
        elapsed = time.monotonic() - started

        assert result.timed_out is True
        assert result.exit_code is None
        assert elapsed < 0.5 + 10
        assert len(fake_sprites.calls("exec")) == before + 1

    def test_exec_deadline_holds_when_sdk_hangs(
        self, make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """arbe stops waiting at timeout + grace even if sprites-py never returns."""
        runtime = make_runtime(exec_grace_s=0.2)
        info = runtime.provision(SandboxSpec(labels={}))
        release = threading.Event()
        monkeypatch.setattr(Cmd, "run", lambda self: release.wait(30))

        started = time.monotonic()
        try:
            result = runtime.exec(info.id, "true", timeout=0.3)
        finally:
            release.set()
        elapsed = time.monotonic() - started

        assert result.timed_out is True
        assert result.exit_code is None
        assert elapsed < 2.0

    def test_exec_status_running_then_warm(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.sprites[info.id].status = "cold"
        worker = threading.Thread(target=runtime.exec, args=(info.id, "sleep 0.5"))

        worker.start()
        seen = set()
        while worker.is_alive():
            seen.add(runtime.get(info.id).raw_state)
            time.sleep(0.05)
        worker.join()

        assert "running" in seen
        assert runtime.get(info.id).raw_state == "warm"

    def test_exec_rejects_non_positive_timeout(self, runtime: SpriteRuntime) -> None:
        info = runtime.provision(SandboxSpec(labels={}))

        with pytest.raises(ArbeError, match="timeout"):
            runtime.exec(info.id, "true", timeout=0)


class TestProvision:
    def test_provision_names_sprite_with_house_prefix(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        prefix = SpriteNames(HOUSE_ID, "unit_house").prefix

        named = runtime.provision(SandboxSpec(labels={}, name="dev_box"))
        fresh = runtime.provision(SandboxSpec(labels={}))

        assert named.id == f"{prefix}dev-box"
        assert named.name == "dev-box"
        assert fresh.id.startswith(f"{prefix}unit-house-")
        assert fresh.labels == {HOUSE_LABEL: HOUSE_ID}
        assert set(fake_sprites.sprites) == {named.id, fresh.id}

    def test_provision_rejects_invalid_name(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        with pytest.raises(InvalidName):
            runtime.provision(SandboxSpec(labels={}, name="Bad Name"))

        assert fake_sprites.requests == []

    def test_provision_clones_mapped_github_url(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites, repos: Path
    ) -> None:
        fake_sprites.map_url("https://github.com/", f"{repos.as_uri()}/")
        spec = SandboxSpec(labels={}, repo="https://github.com/acme/widgets")

        info = runtime.provision(spec)
        result = runtime.exec(info.id, "cat README.md")

        assert result.stdout == "widgets\n"

    def test_failed_clone_destroys_sprite(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        repo = "https://user:sk-pass-789@github.com/acme/missing"

        with pytest.raises(Unavailable) as raised:
            runtime.provision(SandboxSpec(labels={}, repo=repo))

        assert fake_sprites.sprites == {}
        assert "sk-pass-789" not in str(raised.value)
        assert "sk-test-123" not in str(raised.value)
        assert "exit status" in str(raised.value)

    def test_rate_limited_clone_destroys_sprite(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        fake_sprites.fail(429, "exec", retry_after=4)

        with pytest.raises(RateLimited):
            runtime.provision(SandboxSpec(labels={}))

        assert fake_sprites.sprites == {}
        assert len(fake_sprites.calls("rest", "POST")) == 1


class TestHouseScope:
    def test_list_filters_prefix_across_pages(
        self,
        runtime: SpriteRuntime,
        make_runtime: MakeRuntime,
        fake_sprites: FakeSprites,
    ) -> None:
        ours = {runtime.provision(SandboxSpec(labels={})).id for _ in range(3)}
        make_runtime(house_id="hse_other").provision(SandboxSpec(labels={}))
        fake_sprites.add_sprite("stranger")
        fake_sprites.page_size = 1
        before = len(fake_sprites.calls("rest", "GET"))

        listed = runtime.list()

        pages = [
            r
            for r in fake_sprites.calls("rest", "GET")[before:]
            if r.path == "/v1/sprites"
        ]
        assert {info.id for info in listed} == ours
        assert len(pages) == 3
        assert all(info.state == SandboxState.STARTED for info in listed)

    def test_foreign_sprite_is_not_found(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        fake_sprites.add_sprite("stranger")

        with pytest.raises(SandboxNotFound):
            runtime.get("stranger")
        assert runtime.destroy("stranger") is False
        assert "stranger" in fake_sprites.sprites


class TestDiagnose:
    def test_diagnose_missing_token(self, make_runtime: MakeRuntime) -> None:
        checks = make_runtime(token=None).diagnose()

        assert [(c.name, c.ok) for c in checks] == [("token present", False)]
        assert checks[0].fix is not None

    def test_diagnose_rejected_token(self, make_runtime: MakeRuntime) -> None:
        checks = make_runtime(token=WRONG_TOKEN).diagnose()

        assert [(c.name, c.ok) for c in checks] == [
            ("token present", True),
            ("API reachable", True),
            ("token accepted", False),
        ]
        assert checks[-1].fix is not None
        assert all(WRONG_TOKEN not in str(c.to_dict()) for c in checks)

    def test_diagnose_unreachable_api(
        self, make_runtime: MakeRuntime, closed_port_url: str
    ) -> None:
        checks = make_runtime(base_url=closed_port_url).diagnose()

        assert [(c.name, c.ok) for c in checks][-1] == ("API reachable", False)
        assert closed_port_url in (checks[-1].fix or "")

    def test_diagnose_reports_each_sprite_status(
        self, runtime: SpriteRuntime, fake_sprites: FakeSprites
    ) -> None:
        info = runtime.provision(SandboxSpec(labels={}))
        fake_sprites.sprites[info.id].status = "cold"

        checks = runtime.diagnose()

        sprite_checks = [c for c in checks if c.name == f"sprite {info.name}"]
        assert all(c.ok for c in checks)
        assert len(sprite_checks) == 1
        assert "cold" in sprite_checks[0].detail


class TestNames:
    def test_house_prefixes_never_nest(self) -> None:
        first = SpriteNames("hse_a", "a").prefix
        second = SpriteNames("hse_a-b", "a-b").prefix

        assert len(first) == len(second)
        assert not second.startswith(first)

    def test_resolve_rejects_impossible_names(self) -> None:
        names = SpriteNames("hse_a", "a")

        assert names.resolve("Not Valid") is None
        assert names.resolve("x" * 80) is None
        assert names.resolve("my_box") == f"{names.prefix}my-box"


def test_plugin_import_does_not_import_sdk() -> None:
    """Registering the plugin must stay cheap: sprites-py loads on first use."""
    code = (
        "import sys, arbe_adapters.runtimes.sprite.plugin; "
        "print('sprites' in sys.modules)"
    )

    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout

    assert output.strip() == "False"
