"""The local runtime: sandboxes are directories on this machine.

A sandbox is `<state_dir>/<sandbox_id>/` with a `sandbox.json` metadata file
and a `work/` tree that commands run in. Each command runs with bash in a new
process group, so a timeout or `stop` can kill everything it started.

The local runtime isolates nothing. Commands run as the user who runs arbe and
can read and write whatever that user can. What it keeps out of a command is
arbe's own environment: a command gets only a minimal base environment and the
variables passed to `exec`.
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import attrs

from arbe_adapters.runtimes.local._clone import check_repo, clone_repo, mask_userinfo
from arbe_adapters.runtimes.local._exec import group_exists, kill_group, run_in_group
from arbe_adapters.runtimes.local._store import (
    SandboxRecord,
    SandboxStore,
    check_name,
    start_time,
)
from arbe_core.errors import (
    Conflict,
    InvalidInput,
    SandboxNotFound,
    Unavailable,
)
from arbe_core.runtime import (
    DEFAULT_OUTPUT_CAP,
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

__all__ = ["DEFAULT_PATH", "LocalRuntime"]

logger = logging.getLogger("arbe.runtime.local")

#: PATH of commands and of `git clone` unless the `ARBE_LOCAL_PATH` setting
#: gives another. Homebrew's directory comes first, so its bash and git win on
#: macOS. Directories that do not exist are skipped in the lookup.
DEFAULT_PATH = ":".join(
    (
        "/opt/homebrew/bin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
    )
)
ID_PREFIX = "lsb_"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LocalRuntime:
    """Sandboxes as directories under the runtime's state directory.

    Subclasses may set another `name`, which messages and commands in errors use.

    Args:
        context: the house and state directory to serve. The setting
            `ARBE_LOCAL_PATH` replaces `DEFAULT_PATH` as the PATH of commands.
        output_cap: bytes of output kept per stream, as a head and a tail.
    """

    name = "local"
    credential: str | None = None
    capabilities = Capabilities(
        stop_start=True, separate_streams=True, sleeps=False, clone=True
    )

    def __init__(
        self, context: RuntimeContext, *, output_cap: int = DEFAULT_OUTPUT_CAP
    ) -> None:
        self._house_id = context.house_id
        self._store = SandboxStore(Path(context.state_dir))
        self._path = context.config("ARBE_LOCAL_PATH") or DEFAULT_PATH
        self._ssh_auth_sock = context.config("SSH_AUTH_SOCK")
        self._output_cap = output_cap

    # --- Lifecycle -----------------------------------------------------------

    def provision(self, spec: SandboxSpec) -> SandboxInfo:
        """Create a started sandbox and clone the spec's repository into it.

        The spec's `auto_stop_minutes` is recorded but not acted on, because
        nothing runs in the background to stop a local sandbox.

        Raises:
            InvalidName: the spec's name breaks the naming rule.
            InvalidInput: the house label is another house's, or the
                repository was not found.
            Conflict: the house already has a sandbox of that name.
            Unavailable: git is missing or the clone failed.
            OperationTimedOut: the clone took longer than
                `_clone.CLONE_TIMEOUT_S`.
        """
        if spec.name is not None:
            check_name(spec.name, "sandbox")
        if spec.repo is not None:
            check_repo(spec.repo)
        sandbox_id = ID_PREFIX + secrets.token_hex(8)
        record = SandboxRecord(
            id=sandbox_id,
            name=spec.name or sandbox_id,
            labels=self._labels(spec.labels),
            state=SandboxState.CREATING,
            created_at=datetime.now(UTC).isoformat(),
            repo=mask_userinfo(spec.repo) if spec.repo else None,
            auto_stop_minutes=spec.auto_stop_minutes,
        )
        with self._store.lock():
            if self._find(record.name) is not None:
                raise Conflict(
                    f"Sandbox name {record.name!r} is taken on runtime {self.name!r}. "
                    f"Pick another name, or destroy the sandbox with "
                    f"`arbe sandbox destroy {record.name} --runtime {self.name}`."
                )
            self._store.create(record)

        try:
            self._fill_workdir(record, spec.repo)
        except BaseException:
            self._store.remove(record.id)
            raise

        record = attrs.evolve(record, state=SandboxState.STARTED)
        self._store.write(record)
        logger.info("provisioned sandbox %s (%s)", record.id, record.name)
        return self._info(record)

    def get(self, sandbox_id: str) -> SandboxInfo:
        """Return the house's sandbox with this id or name.

        Raises:
            InvalidName: `sandbox_id` is not a valid id or name.
            SandboxNotFound: the house has no such sandbox.
        """
        return self._info(self._require(sandbox_id))

    def list(self) -> builtins.list[SandboxInfo]:
        """Return the house's own sandboxes, oldest first."""
        records = [r for r in self._store.records() if self._owns(r)]
        records.sort(key=lambda r: (r.created_at, r.id))
        return [self._info(r) for r in records]

    def start(self, sandbox_id: str) -> SandboxInfo:
        """Mark the sandbox started so commands run in it again. Idempotent.

        Raises:
            SandboxNotFound: the house has no such sandbox.
            Conflict: the sandbox is still being created.
        """
        record = self._require(sandbox_id)
        self._check_created(record)
        if record.state is not SandboxState.STARTED:
            record = attrs.evolve(record, state=SandboxState.STARTED)
            self._store.write(record)
            logger.info("started sandbox %s", record.id)
        return self._info(record)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        """Mark the sandbox stopped and kill its running processes. Idempotent.

        Files stay. Processes that left their process group (with `setsid`,
        for example) are not tracked and keep running.

        Raises:
            SandboxNotFound: the house has no such sandbox.
            Conflict: the sandbox is still being created.
        """
        record = self._require(sandbox_id)
        self._check_created(record)
        if record.state is not SandboxState.STOPPED:
            record = attrs.evolve(record, state=SandboxState.STOPPED)
            self._store.write(record)
            logger.info("stopped sandbox %s", record.id)
        # The state is written before the kill, so an `exec` that registers its
        # group after this point reads the stopped state and kills its group.
        self._kill_groups(record.id)
        return self._info(record)

    def destroy(self, sandbox_id: str) -> bool:
        """Kill the sandbox's processes and delete its directory. Idempotent.

        Returns:
            True when this call destroyed the sandbox, False when the house
            has no sandbox of that id or name (already destroyed, say).

        Raises:
            InvalidName: `sandbox_id` is not a valid id or name.
        """
        check_name(sandbox_id)
        record = self._find(sandbox_id)
        if record is None:
            return False
        self._kill_groups(record.id)
        removed = self._store.remove(record.id)
        if removed:
            logger.info("destroyed sandbox %s", record.id)
        return removed

    def ping(self, sandbox_id: str) -> Health:
        """Report the sandbox's state. A stopped sandbox reports STOPPED, not an error.

        Raises:
            SandboxNotFound: the house has no such sandbox.
        """
        started = time.monotonic()
        record = self._require(sandbox_id)
        workdir = self._store.workdir(record.id)
        state, detail = record.state, ""
        if record.state is not SandboxState.CREATING and not workdir.is_dir():
            state = SandboxState.ERROR
            detail = f"The work directory {str(workdir)!r} is missing."
        return Health(state, (time.monotonic() - started) * 1000, detail)

    # --- Commands ------------------------------------------------------------

    def exec(
        self,
        sandbox_id: str,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        """Run `command` with `bash -c` in the sandbox and return its result.

        The command's environment is PATH, HOME (the work directory),
        LANG=C.UTF-8 and TERM=dumb, then `env` on top. Nothing else of the
        caller's environment is passed. Output beyond the cap is cut to a head
        and a tail per stream. At the deadline the whole process group is
        killed, and the result keeps the output made until then. Background
        processes of a command that ends in time keep running until `stop`.

        Args:
            sandbox_id: the sandbox's id or name.
            command: the bash command line.
            cwd: where to start, relative to the work directory or absolute.
                It must lie inside the work directory.
            env: extra environment variables, passed without expansion.
            timeout: seconds until the command is killed.

        Raises:
            SandboxNotFound: the house has no such sandbox.
            Conflict: the sandbox is stopped or still being created.
            InvalidInput: `cwd`, an `env` name or value, or `timeout` is invalid.
            Unavailable: bash is missing.
        """
        record = self._require(sandbox_id)
        self._check_runnable(record)
        workdir = self._store.workdir(record.id)
        run_cwd = self._resolve_cwd(record, workdir, cwd)
        run_env = self._command_env(workdir, env or {})
        if not timeout > 0:
            raise InvalidInput(f"Invalid timeout {timeout!r}: it must be above 0 s.")
        bash = self._tool("bash")

        groups: builtins.list[int] = []

        def track(pgid: int) -> None:
            groups.append(pgid)
            self._track_group(record.id, pgid)

        try:
            outcome = run_in_group(
                [bash, "-c", command],
                cwd=run_cwd,
                env=run_env,
                timeout=timeout,
                cap=self._output_cap,
                on_start=track,
            )
        finally:
            # A group whose processes all ended needs no `stop`; one with
            # background processes stays recorded until `stop` kills it.
            for pgid in groups:
                if not group_exists(pgid):
                    self._store.remove_group(record.id, pgid)
        if outcome.timed_out:
            logger.info(
                "command in sandbox %s timed out after %s s", record.id, timeout
            )

        return ExecResult(
            exit_code=outcome.exit_code,
            stdout=outcome.stdout.text(),
            stderr=outcome.stderr.text(),
            duration_s=outcome.duration_s,
            timed_out=outcome.timed_out,
            omitted_bytes=outcome.stdout.omitted + outcome.stderr.omitted,
        )

    def diagnose(self) -> builtins.list[Check]:
        """Check that bash and git are on the PATH and the state dir is writable."""
        return [
            self._tool_check("bash"),
            self._tool_check("git"),
            self._state_dir_check(),
        ]

    # --- Helpers -------------------------------------------------------------

    def _owns(self, record: SandboxRecord) -> bool:
        return record.labels.get(HOUSE_LABEL) == self._house_id

    def _find(self, key: str) -> SandboxRecord | None:
        """Return the house's sandbox whose id or name is `key`, or None."""
        record = self._store.read(key)
        if record is not None and self._owns(record):
            return record
        named = [r for r in self._store.records() if r.name == key and self._owns(r)]
        named.sort(key=lambda r: r.created_at)
        return named[0] if named else None

    def _require(self, sandbox_id: str) -> SandboxRecord:
        check_name(sandbox_id)
        record = self._find(sandbox_id)
        if record is None:
            raise SandboxNotFound(sandbox_id, self.name)
        return record

    def _labels(self, spec_labels: Mapping[str, str]) -> dict[str, str]:
        house = spec_labels.get(HOUSE_LABEL)
        if house is not None and house != self._house_id:
            raise InvalidInput(
                f"Label {HOUSE_LABEL!r} is {house!r}, but runtime {self.name!r} "
                f"serves house {self._house_id!r}. Leave the label out, and the "
                f"runtime sets it."
            )
        return {**spec_labels, HOUSE_LABEL: self._house_id}

    def _info(self, record: SandboxRecord) -> SandboxInfo:
        return SandboxInfo(
            id=record.id,
            name=record.name,
            runtime=self.name,
            state=record.state,
            labels=dict(record.labels),
            created_at=record.created_at,
            raw_state=str(record.state),
            workdir=str(self._store.workdir(record.id)),
            details={
                "path": str(self._store.sandbox_dir(record.id)),
                "repo": record.repo,
                "auto_stop_minutes": record.auto_stop_minutes,
            },
        )

    def _check_created(self, record: SandboxRecord) -> None:
        if record.state is SandboxState.CREATING:
            raise Conflict(
                f"Sandbox {record.id!r} on runtime {self.name!r} is still being "
                f"created, or its creation was interrupted. Retry shortly, or "
                f"destroy it with `arbe sandbox destroy {record.id} --runtime "
                f"{self.name}`."
            )

    def _check_runnable(self, record: SandboxRecord) -> None:
        self._check_created(record)
        if record.state is not SandboxState.STARTED:
            raise Conflict(
                f"Sandbox {record.id!r} on runtime {self.name!r} is "
                f"{record.state}, so it cannot run commands. Start it with "
                f"`arbe sandbox start {record.id} --runtime {self.name}`."
            )

    def _resolve_cwd(
        self, record: SandboxRecord, workdir: Path, cwd: str | None
    ) -> Path:
        if not workdir.is_dir():
            raise Unavailable(
                f"The work directory of sandbox {record.id!r} is missing, so it "
                f"cannot run commands. Destroy the sandbox with `arbe sandbox "
                f"destroy {record.id} --runtime {self.name}` and provision a new one."
            )
        if cwd is None:
            return workdir
        if "\0" in cwd:
            raise InvalidInput(f"Invalid working directory {cwd!r}: it has a NUL byte.")
        root = workdir.resolve()
        resolved = (workdir / cwd).resolve()  # An absolute `cwd` replaces workdir.
        if resolved != root and root not in resolved.parents:
            raise InvalidInput(
                f"Working directory {cwd!r} is outside sandbox {record.id!r}. "
                f"Give a path inside its work directory {str(root)!r}."
            )
        if not resolved.is_dir():
            raise InvalidInput(
                f"Working directory {cwd!r} does not exist in sandbox "
                f"{record.id!r}. Create it first, with `mkdir -p` for example."
            )
        return resolved

    def _command_env(self, workdir: Path, env: Mapping[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not _ENV_NAME.fullmatch(key):
                raise InvalidInput(
                    f"Invalid environment variable name {key!r}: it must match "
                    f"[A-Za-z_][A-Za-z0-9_]*."
                )
            if "\0" in value:
                raise InvalidInput(
                    f"The value of environment variable {key!r} has a NUL byte, "
                    f"which a process environment cannot hold."
                )
        base = {
            "PATH": self._path,
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
        }
        return {**base, **env}

    def _track_group(self, sandbox_id: str, pgid: int) -> None:
        """Record a new process group, unless the sandbox stopped meanwhile."""
        try:
            self._store.add_group(sandbox_id, pgid)
        except FileNotFoundError:
            raise SandboxNotFound(sandbox_id, self.name) from None
        record = self._store.read(sandbox_id)
        if record is None:
            raise SandboxNotFound(sandbox_id, self.name)
        # A `stop` since the first check may have missed this group; the
        # caller kills the group when this raises.
        self._check_runnable(record)

    def _kill_groups(self, sandbox_id: str) -> None:
        for pgid, recorded_start in self._store.groups(sandbox_id):
            current_start = start_time(pgid)
            # A leader that is alive with another start time is a newer
            # process that reused the id, so the recorded group is gone.
            # NOTE: without /proc (macOS) there is no start time to compare,
            # so a reused id is killed as well.
            reused = bool(recorded_start and current_start) and (
                recorded_start != current_start
            )
            if not reused:
                kill_group(pgid)
            self._store.remove_group(sandbox_id, pgid)

    def _tool(self, tool: str) -> str:
        found = shutil.which(tool, path=self._path)
        if found is None:
            raise Unavailable(
                f"{tool} not found on PATH {self._path!r}, and runtime "
                f"{self.name!r} needs it. Install {tool}, or set ARBE_LOCAL_PATH "
                f"to a PATH that contains it."
            )
        return found

    def _fill_workdir(self, record: SandboxRecord, repo: str | None) -> None:
        workdir = self._store.workdir(record.id)
        if repo is None:
            workdir.mkdir(mode=0o700)
            return
        clone_repo(
            repo,
            workdir,
            git=self._tool("git"),
            path=self._path,
            ssh_auth_sock=self._ssh_auth_sock,
            sandbox_id=record.id,
        )

    def _tool_check(self, tool: str) -> Check:
        found = shutil.which(tool, path=self._path)
        if found is None:
            return Check(
                name=f"{tool} installed",
                ok=False,
                detail=f"{tool} not found on PATH {self._path!r}.",
                fix=f"Install {tool}, or set ARBE_LOCAL_PATH to a PATH that has it.",
            )
        return Check(name=f"{tool} installed", ok=True, detail=f"Found {found}.")

    def _state_dir_check(self) -> Check:
        root = self._store.root
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=root) as probe:
                probe.write(b"ok")
        except OSError as exc:
            return Check(
                name="state directory writable",
                ok=False,
                detail=f"Cannot write to {str(root)!r}: {exc.strerror or exc}.",
                fix=f"Make {str(root)!r} writable, or choose another home with "
                f"`--home` or ARBE_HOME.",
            )
        return Check(
            name="state directory writable",
            ok=True,
            detail=f"{str(root)!r} is writable.",
        )
