"""The `daytona` runtime against the fake API: faults, retries and error mapping."""

from __future__ import annotations

import inspect
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arbe_adapters.runtimes.daytona._client import RetryPolicy, Timeouts, build_client
from arbe_adapters.runtimes.daytona._errors import daytona_errors
from arbe_adapters.runtimes.daytona._runtime import DaytonaRuntime
from arbe_core.errors import (
    ArbeError,
    Conflict,
    CredentialMissing,
    CredentialRejected,
    InvalidInput,
    OperationTimedOut,
    RateLimited,
    SandboxNotFound,
    Transient,
)
from arbe_core.runtime import (
    ENV_LABEL,
    HOUSE_LABEL,
    RuntimeContext,
    SandboxSpec,
    SandboxState,
)
from tests.fakes.daytona import FakeDaytona

HOUSE = "hse_unit"
SANDBOX_PATH = r"/api/sandbox/[^/]+"
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, total_cap=30.0)
FAST_TIMEOUTS = Timeouts(kill_after=0.5, grace=0.5)


class SleepRecorder:
    """Stands in for `time.sleep` between retries and records each wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_context(
    api_url: str, key: str | None, house_id: str = HOUSE, tmp: str = "/nonexistent"
) -> RuntimeContext:
    settings = {"DAYTONA_API_URL": api_url}
    return RuntimeContext(
        house_id=house_id,
        house_name="unit",
        state_dir=tmp,
        config=settings.get,
        credential=key,
    )


@pytest.fixture
def waits() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def runtime(fake_daytona: FakeDaytona, waits: SleepRecorder) -> DaytonaRuntime:
    fake_daytona.create_polls = 1
    context = make_context(fake_daytona.api_url, fake_daytona.api_key)
    return DaytonaRuntime(
        context, retry=FAST_RETRY, timeouts=FAST_TIMEOUTS, sleep=waits
    )


@pytest.fixture
def sandbox_id(fake_daytona: FakeDaytona) -> str:
    return fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}).id


# --- Retries -------------------------------------------------------------------


class TestRetries:
    def test_get_retries_429_honouring_retry_after(
        self,
        runtime: DaytonaRuntime,
        fake_daytona: FakeDaytona,
        sandbox_id: str,
        waits: SleepRecorder,
    ) -> None:
        fake_daytona.fail("GET", SANDBOX_PATH, 429, times=2, retry_after="7")

        info = runtime.get(sandbox_id)

        assert info.id == sandbox_id
        assert waits.waits == [7.0, 7.0]
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 3

    def test_get_gives_up_on_429_after_four_attempts(
        self,
        runtime: DaytonaRuntime,
        fake_daytona: FakeDaytona,
        sandbox_id: str,
        waits: SleepRecorder,
    ) -> None:
        fake_daytona.fail("GET", SANDBOX_PATH, 429, times=10, retry_after="2")

        with pytest.raises(RateLimited) as caught:
            runtime.get(sandbox_id)

        assert caught.value.retry_after == 2.0
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 4
        assert waits.waits == [2.0, 2.0, 2.0]

    def test_get_gives_up_on_5xx_with_growing_backoff(
        self,
        runtime: DaytonaRuntime,
        fake_daytona: FakeDaytona,
        sandbox_id: str,
        waits: SleepRecorder,
    ) -> None:
        fake_daytona.fail("GET", SANDBOX_PATH, 503, times=10)

        with pytest.raises(Transient) as caught:
            runtime.get(sandbox_id)

        assert type(caught.value) is Transient
        assert "503" in caught.value.message
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 4
        assert len(waits.waits) == 3
        for retry, wait in enumerate(waits.waits, start=1):
            assert 0 < wait <= min(0.01, 0.001 * 2 ** (retry - 1))

    def test_retry_after_past_total_cap_is_not_waited(
        self, fake_daytona: FakeDaytona, sandbox_id: str, waits: SleepRecorder
    ) -> None:
        policy = RetryPolicy(base_delay=0.001, total_cap=5.0)
        context = make_context(fake_daytona.api_url, fake_daytona.api_key)
        runtime = DaytonaRuntime(context, retry=policy, sleep=waits)
        fake_daytona.fail("GET", SANDBOX_PATH, 429, times=10, retry_after="60")

        with pytest.raises(RateLimited) as caught:
            runtime.get(sandbox_id)

        assert caught.value.retry_after == 60.0
        assert waits.waits == []
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 1

    def test_dropped_connection_is_retried(
        self,
        runtime: DaytonaRuntime,
        fake_daytona: FakeDaytona,
        sandbox_id: str,
        waits: SleepRecorder,
    ) -> None:
        fake_daytona.fail("GET", SANDBOX_PATH, drop=True)

        info = runtime.get(sandbox_id)

        assert info.id == sandbox_id
        assert len(waits.waits) == 1
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 2

    def test_start_retries_500_on_start_request(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        runtime.stop(sandbox_id)
        fake_daytona.fail("POST", SANDBOX_PATH + "/start", 500)

        info = runtime.start(sandbox_id)

        assert info.state == SandboxState.STARTED
        assert len(fake_daytona.calls("POST", SANDBOX_PATH + "/start")) == 2

    def test_auth_and_not_found_are_not_retried(
        self, fake_daytona: FakeDaytona, waits: SleepRecorder
    ) -> None:
        context = make_context(fake_daytona.api_url, "sk-test-wrong")
        bad_key = DaytonaRuntime(context, retry=FAST_RETRY, sleep=waits)
        good = make_context(fake_daytona.api_url, fake_daytona.api_key)
        good_key = DaytonaRuntime(good, retry=FAST_RETRY, sleep=waits)

        with pytest.raises(CredentialRejected):
            bad_key.get("anything")
        with pytest.raises(SandboxNotFound):
            good_key.get("nope")

        assert waits.waits == []
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) == 2


# --- Provision -----------------------------------------------------------------


class TestProvision:
    def test_provision_sends_labels_auto_stop_and_empty_env(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        spec = SandboxSpec(labels={ENV_LABEL: "prod"}, auto_stop_minutes=30)

        info = runtime.provision(spec)

        [create] = fake_daytona.calls("POST", "/api/sandbox")
        assert create.body["env"] == {}
        assert create.body["labels"][HOUSE_LABEL] == HOUSE
        assert create.body["labels"][ENV_LABEL] == "prod"
        assert create.body["autoStopInterval"] == 30
        assert create.body["name"].startswith("arbe-")
        assert info.name == create.body["name"]
        assert info.details["auto_stop_minutes"] == 30

    def test_provision_defaults_auto_stop_to_15_minutes(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        runtime.provision(SandboxSpec(labels={}))

        [create] = fake_daytona.calls("POST", "/api/sandbox")
        assert create.body["autoStopInterval"] == 15

    def test_provision_rejects_other_house_label(self, runtime: DaytonaRuntime) -> None:
        spec = SandboxSpec(labels={HOUSE_LABEL: "hse_someone_else"})

        with pytest.raises(InvalidInput, match="hse_someone_else"):
            runtime.provision(spec)

    @pytest.mark.parametrize("fault", [{"status": 500}, {"drop": True}])
    def test_retried_create_makes_one_sandbox(
        self,
        runtime: DaytonaRuntime,
        fake_daytona: FakeDaytona,
        fault: dict[str, Any],
    ) -> None:
        """A create that succeeded but lost its reply is found by name, not redone."""
        fake_daytona.fail("POST", "/api/sandbox", after=True, **fault)

        info = runtime.provision(SandboxSpec(labels={}))

        assert list(fake_daytona.sandboxes) == [info.id]
        assert len(fake_daytona.calls("POST", "/api/sandbox")) == 1
        assert info.state == SandboxState.STARTED

    def test_create_rejected_before_it_ran_is_sent_again(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        fake_daytona.fail("POST", "/api/sandbox", 502)

        info = runtime.provision(SandboxSpec(labels={}))

        assert list(fake_daytona.sandboxes) == [info.id]
        assert len(fake_daytona.calls("POST", "/api/sandbox")) == 2

    def test_failed_clone_destroys_sandbox_and_hides_credentials(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, tmp_path: Path
    ) -> None:
        missing = (tmp_path / "missing").as_uri()
        fake_daytona.map_url("https://github.com/", missing + "/")
        spec = SandboxSpec(labels={}, repo="https://bot:sk-test-999@github.com/o/r")

        with pytest.raises(InvalidInput) as caught:
            runtime.provision(spec)

        assert "sk-test-999" not in caught.value.message
        assert "github.com/o/r" in caught.value.message
        assert fake_daytona.sandboxes == {}
        assert len(fake_daytona.calls("DELETE", SANDBOX_PATH)) == 1

    def test_stuck_create_times_out_and_cleans_up(
        self, fake_daytona: FakeDaytona, waits: SleepRecorder
    ) -> None:
        fake_daytona.stuck_states.add("creating")
        context = make_context(fake_daytona.api_url, fake_daytona.api_key)
        timeouts = Timeouts(create=0.3, destroy=2.0, grace=1.0)
        runtime = DaytonaRuntime(
            context, retry=FAST_RETRY, timeouts=timeouts, sleep=waits
        )

        with pytest.raises(OperationTimedOut):
            runtime.provision(SandboxSpec(labels={}, name="arbe-stuck"))

        assert len(fake_daytona.calls("POST", "/api/sandbox")) == 1
        assert fake_daytona.sandboxes == {}

    def test_retried_create_does_not_adopt_other_sandbox(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        """After a lost create, a sandbox of that name from elsewhere is left alone."""
        existing = fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}, name="arbe-taken")
        fake_daytona.fail("POST", "/api/sandbox", 500)

        with pytest.raises(Conflict, match="arbe-taken"):
            runtime.provision(SandboxSpec(labels={}, name="arbe-taken"))

        assert list(fake_daytona.sandboxes) == [existing.id]
        assert fake_daytona.calls("DELETE", SANDBOX_PATH) == []

    def test_provision_with_taken_name_raises_conflict(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}, name="arbe-taken")

        with pytest.raises(Conflict):
            runtime.provision(SandboxSpec(labels={}, name="arbe-taken"))

        assert len(fake_daytona.sandboxes) == 1


# --- Credentials ---------------------------------------------------------------


class TestCredentials:
    def test_bad_key_raises_rejected_without_the_key(
        self, fake_daytona: FakeDaytona
    ) -> None:
        key = "sk-test-bad-4711"
        runtime = DaytonaRuntime(make_context(fake_daytona.api_url, key))

        with pytest.raises(CredentialRejected) as caught:
            runtime.provision(SandboxSpec(labels={}))

        error = caught.value
        rendered = "".join(traceback.format_exception(error))
        assert "DAYTONA_API_KEY" in error.message
        assert "arbe secret set DAYTONA_API_KEY" in error.message
        assert key not in rendered
        assert key not in repr(error)
        assert len(fake_daytona.requests) == 1

    def test_missing_key_raises_credential_missing(
        self, fake_daytona: FakeDaytona
    ) -> None:
        runtime = DaytonaRuntime(make_context(fake_daytona.api_url, None))

        with pytest.raises(CredentialMissing, match="arbe secret set DAYTONA_API_KEY"):
            runtime.list()

        assert fake_daytona.requests == []

    def test_diagnose_reports_each_problem(self, fake_daytona: FakeDaytona) -> None:
        url = fake_daytona.api_url
        missing = DaytonaRuntime(make_context(url, None)).diagnose()
        rejected = DaytonaRuntime(make_context(url, "sk-test-bad")).diagnose()
        healthy = DaytonaRuntime(make_context(url, fake_daytona.api_key)).diagnose()

        assert [c.ok for c in missing] == [False]
        assert missing[0].fix == "arbe secret set DAYTONA_API_KEY"
        assert [c.ok for c in rejected] == [True, False]
        assert rejected[1].fix == "arbe secret set DAYTONA_API_KEY"
        assert [c.ok for c in healthy] == [True, True]


# --- Lifecycle -----------------------------------------------------------------


class TestLifecycle:
    def test_list_pages_and_filters_by_house(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        ours = {fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}).id for _ in range(5)}
        fake_daytona.add_sandbox({HOUSE_LABEL: "hse_other"})
        fake_daytona.add_sandbox({})

        listed = runtime.list()

        assert {info.id for info in listed} == ours
        assert len(fake_daytona.calls("GET", "/api/sandbox")) == 3

    def test_get_by_name_shows_details(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}, state="stopped", name="box")

        info = runtime.get("box")

        assert info.state == SandboxState.STOPPED
        assert info.raw_state == "stopped"
        assert info.created_at is not None
        assert info.details["cpu"] == 1
        assert info.details["memory_gib"] == 1
        assert info.details["disk_gib"] == 3
        assert info.details["auto_stop_minutes"] == 15

    def test_other_house_sandbox_is_not_found(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        theirs = fake_daytona.add_sandbox({HOUSE_LABEL: "hse_other"}).id

        with pytest.raises(SandboxNotFound):
            runtime.get(theirs)
        with pytest.raises(SandboxNotFound):
            runtime.start(theirs)
        assert runtime.destroy(theirs) is False
        assert theirs in fake_daytona.sandboxes

    def test_missing_sandbox_maps_to_not_found(self, runtime: DaytonaRuntime) -> None:
        with pytest.raises(
            SandboxNotFound, match="arbe sandbox list --runtime daytona"
        ):
            runtime.stop("nope")
        with pytest.raises(SandboxNotFound):
            runtime.start("nope")
        assert runtime.destroy("nope") is False

    def test_start_restores_archived_sandbox(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona
    ) -> None:
        archived = fake_daytona.add_sandbox({HOUSE_LABEL: HOUSE}, state="archived")

        info = runtime.start(archived.id)

        assert info.state == SandboxState.STARTED
        assert len(fake_daytona.calls("GET", SANDBOX_PATH)) > fake_daytona.restore_polls

    def test_start_stuck_in_starting_names_last_state(
        self, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        fake_daytona.find(sandbox_id).state = "stopped"  # type: ignore[union-attr]
        fake_daytona.stuck_states.add("starting")
        context = make_context(fake_daytona.api_url, fake_daytona.api_key)
        runtime = DaytonaRuntime(context, timeouts=Timeouts(start=0.5, grace=1.0))

        started = time.monotonic()
        with pytest.raises(OperationTimedOut) as caught:
            runtime.start(sandbox_id)

        assert time.monotonic() - started < 3.0
        assert caught.value.last_state == "starting"
        assert "'starting'" in caught.value.message

    def test_stop_waits_out_starting_sandbox(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        fake_daytona.find(sandbox_id).begin("starting", 2)  # type: ignore[union-attr]

        info = runtime.stop(sandbox_id)

        assert info.state == SandboxState.STOPPED

    def test_conflict_names_state(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        runtime.stop(sandbox_id)
        fake_daytona.fail("POST", SANDBOX_PATH + "/start", 409)

        with pytest.raises(Conflict, match="while it is stopped"):
            runtime.start(sandbox_id)

    def test_ping_reports_unreachable_api(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        context = make_context(f"http://127.0.0.1:{port}/api", "sk-test-123")

        health = DaytonaRuntime(context).ping("any")

        assert health.state == SandboxState.UNREACHABLE
        assert "DAYTONA_API_URL" in health.detail


# --- Exec ----------------------------------------------------------------------


class TestExec:
    def test_exec_sends_env_as_mapping(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        value = "sk-test-secret $HOME"

        result = runtime.exec(sandbox_id, 'printf %s "$TOKEN"', env={"TOKEN": value})

        [call] = fake_daytona.calls("POST", r"/toolbox/[^/]+/process/execute")
        assert result.stdout == value
        assert result.combined is True
        assert call.body["envs"] == {"TOKEN": value}
        assert value not in call.body["command"]
        assert isinstance(call.body["timeout"], int)

    def test_exec_408_means_timed_out(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        fake_daytona.fail("POST", r"/toolbox/.*", 408)

        result = runtime.exec(sandbox_id, "true")

        assert result.timed_out is True
        assert result.exit_code is None

    def test_exec_slow_reply_ends_at_arbe_deadline(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        fake_daytona.fail("POST", r"/toolbox/.*", 200, delay=3.0)

        started = time.monotonic()
        result = runtime.exec(sandbox_id, "true", timeout=0.2)
        elapsed = time.monotonic() - started

        assert result.timed_out is True
        assert elapsed < 2.0

    def test_exec_times_out_in_worker_thread(
        self, runtime: DaytonaRuntime, sandbox_id: str
    ) -> None:
        results = []

        def work() -> None:
            results.append(
                runtime.exec(sandbox_id, "echo early; sleep 30", timeout=0.5)
            )

        worker = threading.Thread(target=work)
        worker.start()
        worker.join(10)

        [result] = results
        assert result.timed_out is True
        assert result.exit_code == 124
        assert result.stdout == "early\n"

    def test_exec_retries_only_429(
        self, runtime: DaytonaRuntime, fake_daytona: FakeDaytona, sandbox_id: str
    ) -> None:
        execute = r"/toolbox/[^/]+/process/execute"
        fake_daytona.fail("POST", execute, 429, retry_after="1")
        fake_daytona.fail("POST", execute, 500)

        with pytest.raises(Transient):
            runtime.exec(sandbox_id, "true")

        assert len(fake_daytona.calls("POST", execute)) == 2

    def test_exec_rejects_non_positive_timeout(
        self, runtime: DaytonaRuntime, sandbox_id: str
    ) -> None:
        with pytest.raises(InvalidInput):
            runtime.exec(sandbox_id, "true", timeout=0)


# --- Error mapping and client setup --------------------------------------------


def sdk_exception_classes() -> list[type[BaseException]]:
    """Every exception class that the SDK and its generated clients export."""
    import daytona
    import daytona.common.errors
    import daytona_api_client.exceptions
    import daytona_toolbox_api_client.exceptions

    modules = [
        daytona,
        daytona.common.errors,
        daytona_api_client.exceptions,
        daytona_toolbox_api_client.exceptions,
    ]
    found: dict[str, type[BaseException]] = {}
    for module in modules:
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, BaseException):
                if value.__module__.split(".")[0].startswith("daytona"):
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def make_sdk_exception(cls: type[BaseException]) -> BaseException:
    if "status" in inspect.signature(cls.__init__).parameters:
        return cls(status=500, reason="boom")  # type: ignore[call-arg]
    return cls("boom")


class TestErrorMapping:
    def test_sdk_exports_many_exception_classes(self) -> None:
        assert len(sdk_exception_classes()) > 40

    @pytest.mark.parametrize("cls", sdk_exception_classes(), ids=lambda c: c.__name__)
    def test_every_sdk_exception_maps_to_arbe_error(
        self, cls: type[BaseException]
    ) -> None:
        exc = make_sdk_exception(cls)

        with pytest.raises(ArbeError) as caught:
            with daytona_errors("look up", "sb-1"):
                raise exc

        assert caught.value.__cause__ is exc

    @pytest.mark.parametrize(
        ("status", "expected"),
        [
            (400, InvalidInput),
            (401, CredentialRejected),
            (403, CredentialRejected),
            (404, SandboxNotFound),
            (408, Transient),
            (409, Conflict),
            (410, SandboxNotFound),
            (422, InvalidInput),
            (429, RateLimited),
            (500, Transient),
            (502, Transient),
            (503, Transient),
            (504, Transient),
        ],
    )
    def test_status_maps_to_arbe_error(
        self, status: int, expected: type[ArbeError]
    ) -> None:
        from daytona.common.errors import create_daytona_error

        with pytest.raises(expected):
            with daytona_errors("start", "sb-1", state=lambda: "stopping"):
                raise create_daytona_error("boom", status_code=status)

    def test_sdk_wait_timeout_is_operation_timed_out(self) -> None:
        from daytona import DaytonaTimeoutError

        with pytest.raises(OperationTimedOut) as caught:
            with daytona_errors("stop", "sb-1", state=lambda: "stopping"):
                raise DaytonaTimeoutError("Function 'stop' exceeded timeout")

        assert caught.value.last_state == "stopping"

    def test_bugs_pass_through_unmapped(self) -> None:
        with pytest.raises(KeyError):
            with daytona_errors("look up"):
                raise KeyError("not an SDK error")


class TestClientSetup:
    def test_client_disables_events_tracing_and_retries(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DAYTONA_OTEL_ENABLED", "true")
        context = make_context("http://127.0.0.1:9/api", "sk-test-123")

        client = build_client(context)

        pools = client._api_client.rest_client.pool_manager.connection_pool_kw
        assert client._event_dispatcher is None
        assert client._tracer_provider is None
        assert pools["retries"] is False

    def test_plugin_import_does_not_import_sdk(self) -> None:
        code = (
            "import sys\n"
            "import arbe_adapters.runtimes.daytona.plugin as plugin\n"
            "plugin.register_runtimes(lambda *args, **kwargs: None)\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('daytona'))\n"
            "assert not loaded, loaded\n"
        )

        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )

        assert done.returncode == 0, done.stderr


# --- Network isolation ---------------------------------------------------------


class ConnectAudit:
    """Records socket connects and name lookups while switched on.

    An audit hook cannot be removed, so one hook serves the whole session
    and does nothing while `active` is false.
    """

    installed: ConnectAudit | None = None

    def __init__(self) -> None:
        self.active = False
        self.addresses: list[object] = []
        self.lookups: list[object] = []

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if not self.active:
            return
        if event == "socket.connect":
            self.addresses.append(args[1])
        elif event == "socket.getaddrinfo":
            self.lookups.append(args[0])


@pytest.fixture
def connect_audit() -> Iterator[ConnectAudit]:
    if ConnectAudit.installed is None:
        ConnectAudit.installed = ConnectAudit()
        sys.addaudithook(ConnectAudit.installed)
    audit = ConnectAudit.installed
    audit.addresses.clear()
    audit.lookups.clear()
    audit.active = True
    try:
        yield audit
    finally:
        audit.active = False


def test_run_connects_only_to_localhost(
    fake_daytona: FakeDaytona, connect_audit: ConnectAudit
) -> None:
    """Provision, exec and destroy open no connection beyond 127.0.0.1."""
    context = make_context(fake_daytona.api_url, fake_daytona.api_key)
    runtime = DaytonaRuntime(context, retry=FAST_RETRY, timeouts=FAST_TIMEOUTS)

    info = runtime.provision(SandboxSpec(labels={}))
    runtime.exec(info.id, "true")
    runtime.stop(info.id)
    runtime.start(info.id)
    runtime.list()
    runtime.destroy(info.id)

    hosts = {address[0] for address in connect_audit.addresses}  # type: ignore[index]
    assert hosts == {"127.0.0.1"}
    assert set(connect_audit.lookups) <= {"127.0.0.1"}
    assert {request.peer for request in fake_daytona.requests} == {"127.0.0.1"}
    assert not [r for r in fake_daytona.requests if "socket.io" in r.path]
