"""The runtime contract suite: a pytest plugin that checks any `Runtime`.

A runtime package runs the suite on its own adapter like this:

```python
import pytest

from arbe_adapters.testing import RuntimeContract

pytest_plugins = ["arbe_adapters.testing.runtime_contract"]


class TestMyRuntime(RuntimeContract):
    @pytest.fixture
    def runtime(self, contract_context):
        return MyRuntime(contract_context)
```

Fixtures the suite reads. Override any of them in the subclass or in a
`conftest.py`:

- `runtime` (required): the adapter under test. It must serve the house of
  `contract_house_id`.
- `contract_context`: a `RuntimeContext` for house `hse_contract` with a fresh
  state directory under `tmp_path` and no settings.
- `contract_house_id`: the house `runtime` serves; by default the house of
  `contract_context`.
- `contract_repo`: a repository URL that `runtime` can clone. By default a
  `file://` URL of a git repository made on this machine, with one commit that
  adds `README.md`. A remote runtime overrides it with a URL that its sandbox
  (or the fake server that replaces it in tests) can clone.
- `contract_other_runtime`: the same runtime for another house, sharing the
  backend, or None (the default) to skip the house isolation test.

Fixtures the suite provides to its tests: `contract_provision`, a function
that provisions a sandbox and destroys it at teardown, and `contract_sandbox`,
one sandbox provisioned with it.

Class attributes of `RuntimeContract` set the time limits and the expected
repository file; see their comments.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from arbe_core.errors import ArbeError, SandboxNotFound, Unsupported
from arbe_core.ports import Runtime
from arbe_core.runtime import (
    HOUSE_LABEL,
    Capabilities,
    Check,
    ExecResult,
    Health,
    RuntimeContext,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)

__all__ = [
    "CONTRACT_HOUSE_ID",
    "CONTRACT_LABEL",
    "CONTRACT_REPO_FILE",
    "CONTRACT_REPO_TEXT",
    "DEFAULT_TIMEOUT_GRACE_S",
    "Provision",
    "RuntimeContract",
]

CONTRACT_HOUSE_ID = "hse_contract"
#: A label that every sandbox the suite provisions carries, to find leftovers.
CONTRACT_LABEL = "arbe.contract"
CONTRACT_REPO_FILE = "README.md"
CONTRACT_REPO_TEXT = "arbe runtime contract repository\n"

#: GRACE: seconds past a command's timeout within which `exec` must return,
#: and within which the killed processes must be seen gone. It allows for a
#: network round trip, the kill and collecting the last output. A local
#: runtime can set `RuntimeContract.timeout_grace_s` much lower.
DEFAULT_TIMEOUT_GRACE_S = 10.0

#: A function that provisions a sandbox on `runtime`, or on the runtime given
#: as `on`, with the default spec unless one is given. The fixture destroys
#: every such sandbox at teardown.
Provision = Callable[..., SandboxInfo]

#: Values that a shell would split, expand or run if they passed through a
#: command line. Each must reach the command unchanged.
TRICKY_ENV_VALUES = {
    "spaces": "two  words\tand a tab",
    "quotes": 'it\'s "quoted"',
    "dollar": "$HOME ${PATH} $1",
    "backticks": "`echo injected` $(echo injected)",
    "equals": "a=b==c",
    "newlines": "line one\nline two\n",
    "non_ascii": "grüße ✓ 日本語",
    "backslashes": "back\\slash \\n \\\\",
    "glob": "* ? [a-z]",
    "semicolon": "; exit 3",
    "leading_dash": "-n",
}

#: Exits 0 when the process whose id is in `.arbe-contract-child.pid` is gone
#: or a zombie (it has ended and waits for its parent to reap it), 1 when it
#: still runs, 2 when the pid file is missing.
_CHILD_GONE_CHECK = """\
pid=$(cat .arbe-contract-child.pid 2>/dev/null) || exit 2
[ -n "$pid" ] || exit 2
kill -0 "$pid" 2>/dev/null || exit 0
state=
if [ -r "/proc/$pid/stat" ]; then
  state=$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)
elif command -v ps >/dev/null 2>&1; then
  state=$(ps -o stat= -p "$pid" | cut -c1)
fi
[ "$state" = Z ] && exit 0
exit 1
"""

#: Prints the command line of the shell and of each of its ancestors, as far
#: as /proc shows them.
_ANCESTOR_COMMAND_LINES = """\
pid=$$
while [ -n "$pid" ] && [ "$pid" -gt 1 ] && [ -r "/proc/$pid/cmdline" ]; do
  tr '\\0' ' ' < "/proc/$pid/cmdline"
  echo
  pid=$(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f2)
done
"""


# --- Fixtures ----------------------------------------------------------------


@pytest.fixture(scope="session")
def contract_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return a `file://` URL of a local git repository with one commit."""
    root = tmp_path_factory.mktemp("contract-repo")
    repo = root / "repo"
    repo.mkdir()
    (repo / CONTRACT_REPO_FILE).write_text(CONTRACT_REPO_TEXT, "utf-8")
    # A private HOME keeps the developer's git config (hooks, signing) out.
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C",
    }
    identity = ["-c", "user.name=arbe contract", "-c", "user.email=contract@invalid"]
    for args in (
        ["init", "--quiet"],
        ["add", CONTRACT_REPO_FILE],
        [*identity, "commit", "--quiet", "--no-gpg-sign", "-m", "Add README"],
    ):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo.as_uri()


@pytest.fixture
def contract_context(tmp_path: Path) -> RuntimeContext:
    """Return a context for house `hse_contract` with a fresh state directory."""
    return RuntimeContext(
        house_id=CONTRACT_HOUSE_ID,
        house_name="contract",
        state_dir=str(tmp_path / "runtime-state"),
        config=lambda name: None,
    )


@pytest.fixture
def contract_house_id(contract_context: RuntimeContext) -> str:
    """Return the id of the house that `runtime` serves."""
    return contract_context.house_id


@pytest.fixture
def contract_other_runtime() -> Runtime | None:
    """Return the runtime for another house, or None to skip isolation checks."""
    return None


@pytest.fixture
def contract_provision(runtime: Runtime, contract_repo: str) -> Iterator[Provision]:
    """Provide a function that provisions sandboxes and destroys them after."""
    provisioned: list[tuple[Runtime, str]] = []

    def provision(
        spec: SandboxSpec | None = None, on: Runtime | None = None
    ) -> SandboxInfo:
        target = on or runtime
        if spec is None:
            repo = contract_repo if target.capabilities.clone else None
            spec = SandboxSpec(labels={CONTRACT_LABEL: "true"}, repo=repo)
        info = target.provision(spec)
        provisioned.append((target, info.id))
        return info

    yield provision

    failures = []
    for target, sandbox_id in provisioned:
        try:
            target.destroy(sandbox_id)
        except Exception as exc:  # Report every leftover, not just the first.
            failures.append(f"{exc!r} @ {target.name}/{sandbox_id}")
    if failures:
        pytest.fail("Destroying contract sandboxes failed:\n" + "\n".join(failures))


@pytest.fixture
def contract_sandbox(contract_provision: Provision) -> SandboxInfo:
    """Return a started sandbox with the contract repository cloned in."""
    return contract_provision()


# --- The suite ---------------------------------------------------------------


class RuntimeContract:
    """The behaviour every `arbe_core.ports.Runtime` must show.

    Subclass it in a class named `Test...` and provide the `runtime` fixture.
    """

    #: GRACE: seconds past the timeout within which a timed-out `exec` returns
    #: and its processes are gone.
    timeout_grace_s: float = DEFAULT_TIMEOUT_GRACE_S
    #: The timeout of the command that must time out, in seconds.
    short_timeout_s: float = 1.0
    #: The timeout of every other command, in seconds.
    exec_timeout_s: float = 120.0
    #: Bytes the large-output check writes to stdout.
    large_output_bytes: int = 10 * 1024 * 1024
    #: The maximum UTF-8 bytes of stdout that the large-output check may return.
    max_kept_output_bytes: int = 1024 * 1024
    #: A file of `contract_repo` and its expected text. When `repo_text` is
    #: None, the suite checks only that the file exists.
    repo_file: str = CONTRACT_REPO_FILE
    repo_text: str | None = CONTRACT_REPO_TEXT
    #: An id or name that no sandbox has.
    missing_sandbox_id: str = "arbe-contract-missing"

    def exec_in(
        self,
        runtime: Runtime,
        sandbox: SandboxInfo,
        command: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run `command` in `sandbox`, by default with `exec_timeout_s`."""
        return runtime.exec(
            sandbox.id,
            command,
            cwd=cwd,
            env=env,
            timeout=timeout or self.exec_timeout_s,
        )

    # --- Identity ------------------------------------------------------------

    def test_runtime_declares_name_and_capabilities(self, runtime: Runtime) -> None:
        assert isinstance(runtime.name, str)
        assert runtime.name
        assert isinstance(runtime.capabilities, Capabilities)
        assert runtime.credential is None or isinstance(runtime.credential, str)

    def test_diagnose_returns_checks(self, runtime: Runtime) -> None:
        checks = runtime.diagnose()

        assert isinstance(checks, list)
        assert all(isinstance(check, Check) for check in checks), checks

    # --- Provision, get, list ------------------------------------------------

    def test_provision_returns_started_labelled_sandbox(
        self, runtime: Runtime, contract_sandbox: SandboxInfo, contract_house_id: str
    ) -> None:
        health = runtime.ping(contract_sandbox.id)

        assert contract_sandbox.state == SandboxState.STARTED
        assert contract_sandbox.labels.get(HOUSE_LABEL) == contract_house_id
        assert contract_sandbox.runtime == runtime.name
        assert isinstance(health, Health)
        assert health.state == SandboxState.STARTED

    def test_provision_clones_repo_into_workdir(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        if not runtime.capabilities.clone:
            pytest.skip("the runtime cannot clone (capabilities.clone is false)")

        result = self.exec_in(runtime, contract_sandbox, f"cat -- {self.repo_file}")

        assert result.exit_code == 0, result.stderr
        if self.repo_text is not None:
            assert result.stdout == self.repo_text

    def test_provision_without_clone_raises_unsupported(
        self, runtime: Runtime, contract_provision: Provision, contract_repo: str
    ) -> None:
        if runtime.capabilities.clone:
            pytest.skip("the runtime can clone (capabilities.clone is true)")
        spec = SandboxSpec(labels={CONTRACT_LABEL: "true"}, repo=contract_repo)

        with pytest.raises(Unsupported):
            contract_provision(spec)

    def test_provision_name_finds_sandbox(
        self, runtime: Runtime, contract_provision: Provision
    ) -> None:
        name = f"arbe-contract-{secrets.token_hex(4)}"
        spec = SandboxSpec(labels={CONTRACT_LABEL: "true"}, name=name)

        info = contract_provision(spec)
        found = runtime.get(name)

        assert info.name == name
        assert found.id == info.id

    def test_get_returns_sandbox_by_id(
        self, runtime: Runtime, contract_sandbox: SandboxInfo, contract_house_id: str
    ) -> None:
        found = runtime.get(contract_sandbox.id)

        assert found.id == contract_sandbox.id
        assert found.name == contract_sandbox.name
        assert found.labels.get(HOUSE_LABEL) == contract_house_id

    def test_list_includes_sandbox(
        self, runtime: Runtime, contract_sandbox: SandboxInfo, contract_house_id: str
    ) -> None:
        listed = {info.id: info for info in runtime.list()}

        assert contract_sandbox.id in listed
        assert listed[contract_sandbox.id].labels.get(HOUSE_LABEL) == contract_house_id

    def test_other_house_sandbox_is_invisible(
        self,
        runtime: Runtime,
        contract_other_runtime: Runtime | None,
        contract_provision: Provision,
    ) -> None:
        """Another house's sandbox is not listed, found, run in or destroyed."""
        if contract_other_runtime is None:
            pytest.skip("no `contract_other_runtime` fixture for another house")
        theirs = contract_provision(on=contract_other_runtime)

        listed = [info.id for info in runtime.list()]

        assert theirs.id not in listed
        with pytest.raises(SandboxNotFound):
            runtime.get(theirs.id)
        with pytest.raises(SandboxNotFound):
            runtime.ping(theirs.id)
        with pytest.raises(SandboxNotFound):
            runtime.exec(theirs.id, "true", timeout=self.exec_timeout_s)
        with pytest.raises(SandboxNotFound):
            runtime.stop(theirs.id)
        assert runtime.destroy(theirs.id) is False
        assert contract_other_runtime.get(theirs.id).id == theirs.id

    def test_unknown_sandbox_raises_not_found(self, runtime: Runtime) -> None:
        missing = self.missing_sandbox_id

        for operation in (runtime.get, runtime.ping, runtime.start, runtime.stop):
            with pytest.raises(SandboxNotFound):
                operation(missing)
        with pytest.raises(SandboxNotFound):
            runtime.exec(missing, "true", timeout=self.exec_timeout_s)
        assert runtime.destroy(missing) is False

    # --- Stop, start, destroy ------------------------------------------------

    def test_stop_and_start_are_idempotent(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        if not runtime.capabilities.stop_start:
            pytest.skip("stop and start are no-ops (capabilities.stop_start is false)")

        first_stop = runtime.stop(contract_sandbox.id)
        second_stop = runtime.stop(contract_sandbox.id)
        first_start = runtime.start(contract_sandbox.id)
        second_start = runtime.start(contract_sandbox.id)

        assert first_stop.state == SandboxState.STOPPED
        assert second_stop.state == SandboxState.STOPPED
        assert first_start.state == SandboxState.STARTED
        assert second_start.state == SandboxState.STARTED
        assert runtime.ping(contract_sandbox.id).state == SandboxState.STARTED

    def test_ping_stopped_sandbox_reports_stopped(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        if not runtime.capabilities.stop_start:
            pytest.skip("stop and start are no-ops (capabilities.stop_start is false)")
        runtime.stop(contract_sandbox.id)

        health = runtime.ping(contract_sandbox.id)

        assert health.state == SandboxState.STOPPED
        assert runtime.get(contract_sandbox.id).state == SandboxState.STOPPED

    def test_files_survive_stop_and_start(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        written = self.exec_in(
            runtime, contract_sandbox, "printf kept > arbe-contract-survivor"
        )
        assert written.exit_code == 0, written.stderr

        runtime.stop(contract_sandbox.id)
        runtime.start(contract_sandbox.id)
        result = self.exec_in(runtime, contract_sandbox, "cat arbe-contract-survivor")

        assert result.exit_code == 0, result.stderr
        assert result.stdout == "kept"

    def test_exec_stopped_sandbox_raises_or_wakes(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """A stopped sandbox either rejects commands with an arbe error or wakes."""
        runtime.stop(contract_sandbox.id)

        try:
            result = self.exec_in(runtime, contract_sandbox, "printf awake")
        except ArbeError as exc:
            assert str(exc)
        else:
            assert result.stdout == "awake"

    def test_stop_start_noops_report_status(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """Without stop_start, stop and start are no-ops that report the state."""
        if runtime.capabilities.stop_start:
            pytest.skip("the runtime can stop and start (capabilities.stop_start)")

        stopped = runtime.stop(contract_sandbox.id)
        started = runtime.start(contract_sandbox.id)
        health = runtime.ping(contract_sandbox.id)
        result = self.exec_in(runtime, contract_sandbox, "printf still-here")

        assert stopped.id == contract_sandbox.id
        assert started.id == contract_sandbox.id
        assert isinstance(health, Health)
        assert result.stdout == "still-here"

    def test_destroy_is_idempotent_and_final(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        first = runtime.destroy(contract_sandbox.id)
        second = runtime.destroy(contract_sandbox.id)

        assert first is True
        assert second is False
        assert contract_sandbox.id not in [info.id for info in runtime.list()]
        with pytest.raises(SandboxNotFound):
            runtime.get(contract_sandbox.id)
        with pytest.raises(SandboxNotFound):
            runtime.ping(contract_sandbox.id)
        with pytest.raises(SandboxNotFound):
            self.exec_in(runtime, contract_sandbox, "true")

    # --- Exec ----------------------------------------------------------------

    def test_exec_returns_exit_codes_unchanged(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        cases = {
            "true": 0,
            "false": 1,
            "exit 7": 7,
            "arbe-contract-no-such-command": 127,
        }

        results = {cmd: self.exec_in(runtime, contract_sandbox, cmd) for cmd in cases}

        for command, expected in cases.items():
            assert results[command].exit_code == expected, command
            assert results[command].timed_out is False, command
            assert results[command].duration_s >= 0, command

    def test_exec_keeps_stdout_and_stderr_apart(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        command = "printf to-stdout; printf to-stderr >&2"

        result = self.exec_in(runtime, contract_sandbox, command)

        if runtime.capabilities.separate_streams:
            assert result.stdout == "to-stdout"
            assert result.stderr == "to-stderr"
            assert result.combined is False
        else:
            assert result.combined is True
            assert "to-stdout" in result.stdout
            assert "to-stderr" in result.stdout
            assert result.stderr == ""

    def test_exec_env_values_arrive_unchanged(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """Env values reach the command byte for byte and are never expanded."""
        for case, value in TRICKY_ENV_VALUES.items():
            result = self.exec_in(
                runtime,
                contract_sandbox,
                'printf %s "$ARBE_CONTRACT_VALUE"',
                env={"ARBE_CONTRACT_VALUE": value},
            )

            assert result.exit_code == 0, (case, result.stderr)
            assert result.stdout == value, case

    def test_exec_env_stays_off_command_lines(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """No process from the shell up to init has an env value in its argv."""
        value = f"sk-test-contract-{secrets.token_hex(8)}"

        result = self.exec_in(
            runtime,
            contract_sandbox,
            _ANCESTOR_COMMAND_LINES,
            env={"ARBE_CONTRACT_SECRET": value},
        )

        if not result.stdout.strip():
            pytest.skip("the sandbox shows no /proc command lines")
        assert value not in result.stdout

    def test_exec_honours_cwd(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        made = self.exec_in(runtime, contract_sandbox, "mkdir -p contract-sub/inner")
        assert made.exit_code == 0, made.stderr

        pwd = self.exec_in(runtime, contract_sandbox, "pwd", cwd="contract-sub/inner")
        write = self.exec_in(
            runtime, contract_sandbox, "printf here > marker", cwd="contract-sub"
        )
        read = self.exec_in(runtime, contract_sandbox, "cat contract-sub/marker")

        assert pwd.stdout.strip().endswith("/contract-sub/inner"), pwd.stdout
        assert write.exit_code == 0, write.stderr
        assert read.stdout == "here"

    def test_exec_timeout_kills_process_group(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """A command over its timeout is killed with its background child."""
        command = (
            "echo before-timeout; "
            "sleep 1000 & echo $! > .arbe-contract-child.pid; "
            "sleep 1000"
        )

        started = time.monotonic()
        result = self.exec_in(
            runtime, contract_sandbox, command, timeout=self.short_timeout_s
        )
        elapsed = time.monotonic() - started

        assert result.timed_out is True
        assert elapsed < self.short_timeout_s + self.timeout_grace_s
        assert "before-timeout" in result.stdout
        self.assert_child_gone(runtime, contract_sandbox)

    def assert_child_gone(self, runtime: Runtime, sandbox: SandboxInfo) -> None:
        """Assert that the background child of the timed-out command ended.

        The check runs in the sandbox, so it works for remote runtimes too. It
        retries until the grace period ends, because a kill takes effect
        asynchronously.
        """
        deadline = time.monotonic() + self.timeout_grace_s
        while True:
            check = self.exec_in(runtime, sandbox, _CHILD_GONE_CHECK)
            assert check.exit_code != 2, "the child never wrote its pid file"
            if check.exit_code == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        assert check.exit_code == 0, "the background child still runs"

    def test_exec_replaces_invalid_utf8(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        result = self.exec_in(runtime, contract_sandbox, r"printf 'ok-\377\376-end'")

        assert result.exit_code == 0, result.stderr
        assert result.stdout == "ok-\ufffd\ufffd-end"

    def test_exec_caps_large_output(
        self, runtime: Runtime, contract_sandbox: SandboxInfo
    ) -> None:
        """Large output comes back as a head, a tail and the omitted count."""
        size = self.large_output_bytes
        command = (
            f"printf HEAD-MARK; head -c {size} /dev/zero | tr '\\0' x; printf TAIL-MARK"
        )

        result = self.exec_in(runtime, contract_sandbox, command)

        assert result.exit_code == 0, result.stderr
        assert result.timed_out is False
        assert result.stdout.startswith("HEAD-MARK")
        assert result.stdout.endswith("TAIL-MARK")
        assert len(result.stdout.encode()) <= self.max_kept_output_bytes
        assert 0 < result.omitted_bytes <= size
        assert str(result.omitted_bytes) in result.stdout
