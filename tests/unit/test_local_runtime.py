"""Behaviour of the local runtime beyond the runtime contract."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import tracemalloc
from pathlib import Path

import attrs
import pytest

from arbe_adapters.runtimes.local import _clone
from arbe_adapters.runtimes.local._runtime import LocalRuntime
from arbe_core.errors import (
    Conflict,
    InvalidInput,
    InvalidName,
    OperationTimedOut,
    SandboxNotFound,
    Unavailable,
)
from arbe_core.runtime import (
    HOUSE_LABEL,
    RuntimeContext,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
    cap_output,
)


def make_context(
    tmp_path: Path, house_id: str = "hse_unit", **config: str
) -> RuntimeContext:
    return RuntimeContext(
        house_id=house_id,
        house_name="unit",
        state_dir=str(tmp_path / "state"),
        config=config.get,
    )


@pytest.fixture
def context(tmp_path: Path) -> RuntimeContext:
    return make_context(tmp_path)


@pytest.fixture
def runtime(context: RuntimeContext) -> LocalRuntime:
    return LocalRuntime(context)


@pytest.fixture
def sandbox(runtime: LocalRuntime) -> SandboxInfo:
    return runtime.provision(SandboxSpec(labels={}))


def sandbox_dirs(context: RuntimeContext) -> list[str]:
    root = Path(context.state_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


def process_ended(pid: int) -> bool:
    """Tell whether `pid` is gone or a zombie that only waits to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class TestLocalRuntimeExecEnvironment:
    def test_exec_hides_host_environment(
        self,
        runtime: LocalRuntime,
        sandbox: SandboxInfo,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setenv("ARBE_TEST_HOST_SECRET", "sk-test-123")

        printed = runtime.exec(sandbox.id, 'printf %s "${ARBE_TEST_HOST_SECRET-unset}"')
        listing = runtime.exec(sandbox.id, "env")

        assert printed.stdout == "unset"
        assert "sk-test-123" not in listing.stdout

    def test_exec_environment_is_minimal(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        result = runtime.exec(sandbox.id, "env -0", env={"GIVEN": "yes"})

        names = {item.partition("=")[0] for item in result.stdout.split("\0") if item}
        # bash itself adds PWD, SHLVL and `_`.
        assert names <= {"PATH", "HOME", "LANG", "TERM", "GIVEN", "PWD", "SHLVL", "_"}
        assert {"PATH", "HOME", "LANG", "TERM", "GIVEN"} <= names

    def test_exec_home_is_work_directory(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        result = runtime.exec(sandbox.id, 'printf %s "$HOME"')

        assert result.stdout == sandbox.workdir

    def test_exec_path_setting_replaces_default(
        self, tmp_path: Path, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        custom = LocalRuntime(make_context(tmp_path, ARBE_LOCAL_PATH="/usr/bin:/bin"))

        result = custom.exec(sandbox.id, 'printf %s "$PATH"')

        assert result.stdout == "/usr/bin:/bin"

    def test_exec_rejects_invalid_env_name(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        with pytest.raises(InvalidInput, match="environment variable name"):
            runtime.exec(sandbox.id, "true", env={"BAD=NAME": "x"})

    def test_exec_nul_value_error_hides_value(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            runtime.exec(sandbox.id, "true", env={"TOKEN": "sk-test-123\0rest"})

        assert "TOKEN" in str(caught.value)
        assert "sk-test-123" not in str(caught.value)

    def test_exec_rejects_non_positive_timeout(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        with pytest.raises(InvalidInput, match="timeout"):
            runtime.exec(sandbox.id, "true", timeout=0)


class TestLocalRuntimeStop:
    def test_exec_on_stopped_sandbox_names_start_command(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.stop(sandbox.id)

        with pytest.raises(Conflict) as caught:
            runtime.exec(sandbox.id, "true")

        assert f"arbe sandbox start {sandbox.id} --runtime local" in str(caught.value)

    def test_exec_leaves_background_process_running(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        """A command that ends in time returns without waiting for its children."""
        result = runtime.exec(sandbox.id, "sleep 1000 & echo $! > bg.pid", timeout=30)
        pid = int(Path(sandbox.workdir or "", "bg.pid").read_text())

        assert result.exit_code == 0
        assert result.timed_out is False
        assert result.duration_s < 5
        assert not process_ended(pid)
        runtime.stop(sandbox.id)

    def test_stop_kills_background_processes(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.exec(sandbox.id, "sleep 1000 & echo $! > bg.pid")
        pid = int(Path(sandbox.workdir or "", "bg.pid").read_text())

        runtime.stop(sandbox.id)

        deadline = time.monotonic() + 3
        while not process_ended(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_ended(pid)

    def test_exec_forgets_finished_process_groups(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.exec(sandbox.id, "true")

        groups = Path(str(sandbox.details["path"]), "groups")
        assert list(groups.iterdir()) == []

    def test_destroy_kills_background_processes(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.exec(sandbox.id, "sleep 1000 & echo $! > bg.pid")
        pid = int(Path(sandbox.workdir or "", "bg.pid").read_text())

        runtime.destroy(sandbox.id)

        deadline = time.monotonic() + 3
        while not process_ended(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_ended(pid)


class TestLocalRuntimePaths:
    @pytest.mark.parametrize("bad", ["../escape", "..", "a/b", "/etc", ".hidden", ""])
    def test_get_rejects_path_like_id(self, runtime: LocalRuntime, bad: str) -> None:
        with pytest.raises(InvalidName):
            runtime.get(bad)

    def test_destroy_rejects_path_like_id(self, runtime: LocalRuntime) -> None:
        with pytest.raises(InvalidName):
            runtime.destroy("../state")

    def test_provision_rejects_path_like_name(
        self, runtime: LocalRuntime, context: RuntimeContext
    ) -> None:
        with pytest.raises(InvalidName):
            runtime.provision(SandboxSpec(labels={}, name="../outside"))

        assert sandbox_dirs(context) == []

    @pytest.mark.parametrize("cwd", ["..", "../..", "/", "/tmp"])
    def test_exec_rejects_cwd_outside_sandbox(
        self, runtime: LocalRuntime, sandbox: SandboxInfo, cwd: str
    ) -> None:
        with pytest.raises(InvalidInput, match="outside sandbox"):
            runtime.exec(sandbox.id, "pwd", cwd=cwd)

    def test_exec_rejects_symlink_cwd_outside(
        self, runtime: LocalRuntime, sandbox: SandboxInfo, tmp_path: Path
    ) -> None:
        runtime.exec(sandbox.id, f"ln -s {tmp_path} link-out")

        with pytest.raises(InvalidInput, match="outside sandbox"):
            runtime.exec(sandbox.id, "pwd", cwd="link-out")

    def test_exec_accepts_absolute_cwd_inside(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.exec(sandbox.id, "mkdir sub")

        result = runtime.exec(sandbox.id, "pwd", cwd=f"{sandbox.workdir}/sub")

        assert result.stdout.strip() == f"{sandbox.workdir}/sub"

    def test_exec_rejects_missing_cwd(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        with pytest.raises(InvalidInput, match="does not exist"):
            runtime.exec(sandbox.id, "pwd", cwd="missing")

    def test_destroy_keeps_symlink_targets(
        self, runtime: LocalRuntime, sandbox: SandboxInfo, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep.txt").write_text("keep")
        runtime.exec(sandbox.id, f"ln -s {outside} link-out")

        runtime.destroy(sandbox.id)

        assert (outside / "keep.txt").read_text() == "keep"

    def test_destroy_removes_read_only_directories(
        self, runtime: LocalRuntime, sandbox: SandboxInfo, context: RuntimeContext
    ) -> None:
        runtime.exec(
            sandbox.id, "mkdir -p ro/deep && touch ro/deep/f && chmod 500 ro/deep ro"
        )

        destroyed = runtime.destroy(sandbox.id)

        assert destroyed is True
        assert sandbox_dirs(context) == []


class TestLocalRuntimeHouses:
    def test_other_house_sandbox_is_invisible(
        self, tmp_path: Path, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        other = LocalRuntime(make_context(tmp_path, house_id="hse_other"))

        assert other.list() == []
        with pytest.raises(SandboxNotFound):
            other.get(sandbox.id)
        with pytest.raises(SandboxNotFound):
            other.exec(sandbox.id, "true")
        assert other.destroy(sandbox.id) is False
        assert runtime.get(sandbox.id).id == sandbox.id

    def test_same_name_allowed_in_two_houses(
        self, tmp_path: Path, runtime: LocalRuntime
    ) -> None:
        other = LocalRuntime(make_context(tmp_path, house_id="hse_other"))

        mine = runtime.provision(SandboxSpec(labels={}, name="shared-name"))
        theirs = other.provision(SandboxSpec(labels={}, name="shared-name"))

        assert runtime.get("shared-name").id == mine.id
        assert other.get("shared-name").id == theirs.id

    def test_provision_rejects_duplicate_name(self, runtime: LocalRuntime) -> None:
        runtime.provision(SandboxSpec(labels={}, name="twice"))

        with pytest.raises(Conflict, match="twice"):
            runtime.provision(SandboxSpec(labels={}, name="twice"))

    def test_provision_keeps_labels_and_adds_house(self, runtime: LocalRuntime) -> None:
        info = runtime.provision(SandboxSpec(labels={"arbe.env": "dev"}))

        assert info.labels == {"arbe.env": "dev", HOUSE_LABEL: "hse_unit"}
        assert runtime.get(info.id).labels == info.labels

    def test_provision_rejects_foreign_house_label(
        self, runtime: LocalRuntime, context: RuntimeContext
    ) -> None:
        with pytest.raises(InvalidInput, match=HOUSE_LABEL):
            runtime.provision(SandboxSpec(labels={HOUSE_LABEL: "hse_other"}))

        assert sandbox_dirs(context) == []

    def test_provision_makes_prefixed_hex_id(self, runtime: LocalRuntime) -> None:
        info = runtime.provision(SandboxSpec(labels={}))

        assert re.fullmatch(r"lsb_[0-9a-f]{16}", info.id)
        assert info.name == info.id

    def test_list_skips_corrupt_metadata(
        self,
        runtime: LocalRuntime,
        sandbox: SandboxInfo,
        context: RuntimeContext,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        broken = Path(context.state_dir, "lsb_0000000000000000")
        broken.mkdir()
        (broken / "sandbox.json").write_text("{not json")

        listed = runtime.list()

        assert [info.id for info in listed] == [sandbox.id]
        assert "unreadable metadata" in caplog.text


class TestLocalRuntimeClone:
    def test_provision_clone_failure_removes_sandbox(
        self, runtime: LocalRuntime, context: RuntimeContext, tmp_path: Path
    ) -> None:
        missing = str(tmp_path / "no-such-repo")

        with pytest.raises(InvalidInput) as caught:
            runtime.provision(SandboxSpec(labels={}, repo=missing))

        assert missing in str(caught.value)
        assert sandbox_dirs(context) == []
        assert runtime.list() == []

    def test_provision_unreachable_repo_masks_credentials(
        self, runtime: LocalRuntime, context: RuntimeContext
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        repo = f"https://user:sk-test-123@127.0.0.1:{port}/owner/repo.git"

        with pytest.raises(Unavailable) as caught:
            runtime.provision(SandboxSpec(labels={}, repo=repo))

        assert f"127.0.0.1:{port}/owner/repo.git" in str(caught.value)
        assert "sk-test-123" not in str(caught.value)
        assert sandbox_dirs(context) == []

    def test_provision_clone_timeout_removes_sandbox(
        self,
        runtime: LocalRuntime,
        context: RuntimeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A server that accepts the connection and never replies times out."""
        monkeypatch.setattr(_clone, "CLONE_TIMEOUT_S", 1.0)
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
            repo = f"http://127.0.0.1:{port}/owner/repo.git"

            started = time.monotonic()
            with pytest.raises(OperationTimedOut, match="timed out"):
                runtime.provision(SandboxSpec(labels={}, repo=repo))
            elapsed = time.monotonic() - started

        assert elapsed < 5
        assert sandbox_dirs(context) == []

    def test_provision_clones_local_path(
        self, runtime: LocalRuntime, contract_repo: str
    ) -> None:
        path = contract_repo.removeprefix("file://")

        info = runtime.provision(SandboxSpec(labels={}, repo=path))
        result = runtime.exec(info.id, "git log --oneline | wc -l")

        assert result.stdout.strip() == "1"
        assert info.details["repo"] == path

    def test_provision_rejects_option_like_repo(
        self, runtime: LocalRuntime, context: RuntimeContext, tmp_path: Path
    ) -> None:
        """A repo that looks like a git option is taken as a path, never an option."""
        marker = tmp_path / "option-ran"
        repo = f"--upload-pack=touch {marker}"

        with pytest.raises(InvalidInput):
            runtime.provision(SandboxSpec(labels={}, repo=repo))

        assert not marker.exists()
        assert sandbox_dirs(context) == []


class TestLocalRuntimeOutput:
    def test_exec_cap_matches_cap_output(self, context: RuntimeContext) -> None:
        runtime = LocalRuntime(context, output_cap=1000)
        info = runtime.provision(SandboxSpec(labels={}))
        data = bytes(range(256)) * 20

        Path(info.workdir or "", "data.bin").write_bytes(data)
        result = runtime.exec(info.id, "cat data.bin; cat data.bin >&2")

        expected, omitted = cap_output(data, 1000)
        assert result.stdout == expected
        assert result.stderr == expected
        assert result.omitted_bytes == 2 * omitted

    def test_exec_large_output_uses_bounded_memory(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        command = "head -c 10485760 /dev/zero; head -c 10485760 /dev/zero >&2"

        tracemalloc.start()
        try:
            result = runtime.exec(sandbox.id, command)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert result.omitted_bytes > 20 * 1024 * 1024 - 256 * 1024
        assert peak < 2 * 1024 * 1024

    def test_exec_timeout_keeps_stderr(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        result = runtime.exec(sandbox.id, "echo early >&2; sleep 1000", timeout=0.5)

        assert result.timed_out is True
        assert result.stderr == "early\n"
        assert result.exit_code == 137


class TestLocalRuntimeHealth:
    def test_diagnose_passes_on_this_machine(self, runtime: LocalRuntime) -> None:
        checks = runtime.diagnose()

        assert [check.ok for check in checks] == [True, True, True], checks

    def test_diagnose_reports_missing_tools(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        runtime = LocalRuntime(make_context(tmp_path, ARBE_LOCAL_PATH=str(empty)))

        checks = {check.name: check for check in runtime.diagnose()}

        assert checks["bash installed"].ok is False
        assert checks["git installed"].ok is False
        assert "ARBE_LOCAL_PATH" in (checks["git installed"].fix or "")

    def test_exec_without_bash_raises_unavailable(
        self, tmp_path: Path, sandbox: SandboxInfo
    ) -> None:
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        runtime = LocalRuntime(make_context(tmp_path, ARBE_LOCAL_PATH=str(empty)))

        with pytest.raises(Unavailable, match="bash not found"):
            runtime.exec(sandbox.id, "true")

    def test_ping_missing_workdir_reports_error(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        os.rename(sandbox.workdir or "", f"{sandbox.workdir}-moved")

        health = runtime.ping(sandbox.id)

        assert health.state == SandboxState.ERROR
        assert "missing" in health.detail

    def test_metadata_records_state(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.stop(sandbox.id)

        metadata = json.loads(
            Path(str(sandbox.details["path"]), "sandbox.json").read_text()
        )

        assert metadata["state"] == "stopped"
        assert metadata["labels"][HOUSE_LABEL] == "hse_unit"
        assert metadata["created_at"] == sandbox.created_at

    def test_start_returns_started_after_stop(
        self, runtime: LocalRuntime, sandbox: SandboxInfo
    ) -> None:
        runtime.stop(sandbox.id)

        info = runtime.start(sandbox.id)

        assert info.state == SandboxState.STARTED
        assert attrs.evolve(info, state=sandbox.state) == sandbox
