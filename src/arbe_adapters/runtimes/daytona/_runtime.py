"""The `daytona` runtime: Daytona cloud sandboxes through the `daytona` SDK."""

from __future__ import annotations

import builtins
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import final

from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    ListSandboxesQuery,
    Sandbox,
)

from arbe_adapters.runtimes.daytona import _lifecycle
from arbe_adapters.runtimes.daytona._client import (
    Caller,
    RetryPolicy,
    Timeouts,
    build_client,
)
from arbe_adapters.runtimes.daytona._errors import CREDENTIAL, RUNTIME, daytona_errors
from arbe_adapters.runtimes.daytona._sandbox import (
    CREATE_ID_LABEL,
    WORKDIR_LABEL,
    command_dir,
    house_labels,
    owned_by,
    raw_state,
    repo_dir,
    to_info,
)
from arbe_core.errors import (
    ArbeError,
    Conflict,
    CredentialMissing,
    CredentialRejected,
    InvalidInput,
    SandboxNotFound,
    Transient,
    Unavailable,
)
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

__all__ = ["DaytonaRuntime"]

logger = logging.getLogger("arbe.runtime.daytona")

DEFAULT_AUTO_STOP_MINUTES = 15
#: Seconds after a command ran in a sandbox during which `exec` takes the
#: sandbox to be still started and does not look it up again. The lookup is
#: one more API call per command (benchmarks/daytona_overhead.py times it).
#: Daytona's auto-stop interval is a whole number of minutes of inactivity.
#: NOTE: that a command counts as activity was not checked against the real
#: service. If it does not, an auto-stop can fall inside this window, and the
#: command then fails once with an arbe error.
STARTED_TTL_S = 30.0


@final
class DaytonaRuntime:
    """Sandboxes in Daytona's cloud, driven through the `daytona` SDK.

    The SDK client is built on first use from the house's `DAYTONA_API_KEY`
    and the `DAYTONA_API_URL` and `DAYTONA_TARGET` settings. API calls are
    retried on 429, 5xx and lost connections under the `retry` policy, and lifecycle
    waits end at the deadlines in `timeouts`. It is safe to share between
    threads.

    Args:
        context: The house, its settings and its resolved credential.
        retry: The retry policy; tests pass tiny delays.
        timeouts: The deadlines of waits.
        sleep: Waits between retries; tests pass a recorder.
    """

    name = RUNTIME
    credential: str | None = CREDENTIAL
    capabilities = Capabilities(
        stop_start=True, separate_streams=False, sleeps=False, clone=True
    )

    def __init__(
        self,
        context: RuntimeContext,
        *,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._context = context
        self._caller = Caller(retry or RetryPolicy(), timeouts or Timeouts(), sleep)
        self._lock = threading.Lock()
        self._sdk: Daytona | None = None
        #: Sandboxes that ran a command, by the id or name `exec` was given,
        #: with the monotonic time the command ended.
        self._started: dict[str, tuple[Sandbox, float]] = {}

    # --- Lifecycle -------------------------------------------------------------

    def provision(self, spec: SandboxSpec) -> SandboxInfo:
        """Create a started sandbox, clone the spec's repo into it, and return it.

        The sandbox is named `spec.name`, or `arbe-` and 12 hex digits, and
        carries the spec's labels plus the house label. Its creation
        environment stays empty because the API shows it to anyone with
        access; secrets go to each `exec` instead. A create that failed for a
        transient reason is retried only after looking the name up, so a
        retry never makes a second sandbox. A failure after the sandbox
        exists destroys it before raising.

        Raises:
            InvalidInput: the spec's house label names another house, or the
                clone failed.
            Conflict: a sandbox named `spec.name` exists already.
            OperationTimedOut: the sandbox did not start in time.
        """
        context = self._context
        labels = house_labels(spec.labels, context.house_id, context.house_name)
        name = spec.name or f"arbe-{secrets.token_hex(6)}"
        minutes = spec.auto_stop_minutes
        if minutes is None:
            minutes = DEFAULT_AUTO_STOP_MINUTES
        sandbox = self._create(name, labels, minutes)

        try:
            self._prepare(sandbox, spec.repo)
        except BaseException:
            self._discard(sandbox.id)
            raise
        logger.info("Provisioned Daytona sandbox %s (%s)", sandbox.id, name)
        return to_info(sandbox)

    def get(self, sandbox_id: str) -> SandboxInfo:
        """Return the house's sandbox with this id or name.

        Raises:
            SandboxNotFound: no such sandbox, or it is another house's.
        """
        return to_info(self._fetch(sandbox_id))

    def list(self) -> builtins.list[SandboxInfo]:
        """Return the house's sandboxes, found by the house label."""
        house = self._context.house_id
        query = ListSandboxesQuery(labels={HOUSE_LABEL: house})
        found = self._caller.call(
            lambda: builtins.list(self._client.list(query)), "list"
        )
        return [to_info(sandbox) for sandbox in found if owned_by(sandbox, house)]

    def start(self, sandbox_id: str) -> SandboxInfo:
        """Start the sandbox, from stopped or archived, and wait until it is started.

        Idempotent. A sandbox on its way to stopped is let stop first.

        Raises:
            SandboxNotFound: no such sandbox, or it is another house's.
            OperationTimedOut: not started in time. It names the last state.
        """
        sandbox = self._fetch(sandbox_id)
        _lifecycle.start(self._caller, sandbox)
        logger.info("Started Daytona sandbox %s", sandbox.id)
        return to_info(sandbox)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        """Stop the sandbox and wait until it is stopped. Idempotent.

        An archived sandbox counts as stopped.

        Raises:
            SandboxNotFound: no such sandbox, or it is another house's.
            OperationTimedOut: not stopped in time. It names the last state.
        """
        sandbox = self._fetch(sandbox_id)
        self._forget(sandbox.id)
        _lifecycle.stop(self._caller, sandbox)
        logger.info("Stopped Daytona sandbox %s", sandbox.id)
        return to_info(sandbox)

    def destroy(self, sandbox_id: str) -> bool:
        """Destroy the sandbox and wait until it is gone. Idempotent.

        Returns:
            True when this call destroyed it, False when it was already gone
            (or is another house's, which this house cannot see).

        Raises:
            OperationTimedOut: not gone in time. It names the last state.
        """
        try:
            sandbox = self._fetch(sandbox_id)
        except SandboxNotFound:
            logger.info("Daytona sandbox %s is already gone", sandbox_id)
            return False

        self._forget(sandbox.id)
        if not _lifecycle.destroy(self._caller, sandbox):
            logger.info("Daytona sandbox %s is already gone", sandbox_id)
            return False
        logger.info("Destroyed Daytona sandbox %s", sandbox.id)
        return True

    # --- Health and commands ---------------------------------------------------

    def ping(self, sandbox_id: str) -> Health:
        """Report the sandbox's state with one API call, not retried.

        A Daytona API that cannot be reached or fails is reported as
        `UNREACHABLE`, with the reason in `detail`.

        Raises:
            SandboxNotFound: no such sandbox, or it is another house's.
            CredentialMissing: the house has no `DAYTONA_API_KEY`.
            CredentialRejected: Daytona rejected the key.
        """
        started = time.monotonic()
        try:
            with daytona_errors("check", sandbox_id):
                sandbox = self._client.get(sandbox_id)
        except (CredentialMissing, CredentialRejected):
            raise
        except (Transient, Unavailable) as exc:
            latency = (time.monotonic() - started) * 1000
            return Health(SandboxState.UNREACHABLE, latency, exc.message)

        latency = (time.monotonic() - started) * 1000
        if not owned_by(sandbox, self._context.house_id):
            raise SandboxNotFound(sandbox_id, RUNTIME)
        state = to_info(sandbox).state
        return Health(state, latency, raw_state(sandbox))

    def exec(
        self,
        sandbox_id: str,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        """Run `command` with bash in the sandbox and return its combined output.

        A stopped or archived sandbox is started first, because Daytona stops
        idle sandboxes after their auto-stop interval. `cwd` defaults to the
        directory `provision` cloned the repo into, and a relative `cwd` is
        taken from there. `env` goes to the API as a mapping and never into
        the command line. The command runs under GNU `timeout` in the
        sandbox, so one over `timeout` seconds is killed with everything it
        started and keeps its output. When the sandbox's daemon or arbe's own
        deadline ends the call instead, the result has `timed_out` set and no
        output. The request is sent again only after a 429, because a resent
        command could run twice.

        A sandbox that ran a command through this object less than
        `STARTED_TTL_S` seconds ago is not looked up again. If something
        else stopped it meanwhile, the command fails with an arbe error, and
        the next call looks the sandbox up and starts it.

        Raises:
            SandboxNotFound: no such sandbox, or it is another house's.
        """
        if timeout <= 0:
            raise InvalidInput(f"Invalid timeout {timeout!r}: it must be positive.")
        sandbox = self._recently_started(sandbox_id)
        if sandbox is None:
            sandbox = self._fetch(sandbox_id)
            if raw_state(sandbox) != "started":
                _lifecycle.start(self._caller, sandbox)
                logger.info("Started Daytona sandbox %s to run a command", sandbox.id)
        workdir = command_dir(sandbox.labels, cwd)
        try:
            result = _lifecycle.run(
                self._caller, sandbox, command, workdir, dict(env or {}), timeout
            )
        except ArbeError:
            self._forget(sandbox.id)
            raise
        if result.timed_out:
            # No reply from the sandbox; look it up again next time.
            self._forget(sandbox.id)
        else:
            with self._lock:
                self._started[sandbox_id] = (sandbox, time.monotonic())
        return result

    def diagnose(self) -> builtins.list[Check]:
        """Check that the key is set and that the API responds and accepts it."""
        if not self._context.credential:
            missing = CredentialMissing(CREDENTIAL, "The daytona runtime")
            return [Check("credential", False, missing.message, _set_key_fix())]

        checks = [Check("credential", True, f"{CREDENTIAL} is set in the house")]
        url = self._context.config("DAYTONA_API_URL") or "the SDK's default URL"
        query = ListSandboxesQuery(labels={HOUSE_LABEL: self._context.house_id})
        query.limit = 1
        try:
            with daytona_errors("list sandboxes"):
                next(iter(self._client.list(query)), None)
        except CredentialRejected as exc:
            checks.append(Check("api", False, exc.message, _set_key_fix()))
        except ArbeError as exc:
            fix = f"Check DAYTONA_API_URL ({url}) and the network."
            checks.append(Check("api", False, exc.message, fix))
        else:
            detail = f"The Daytona API at {url} responded and accepted the key"
            checks.append(Check("api", True, detail))
        return checks

    # --- Helpers -----------------------------------------------------------------

    @property
    def _client(self) -> Daytona:
        with self._lock:
            if self._sdk is None:
                self._sdk = build_client(self._context)
            return self._sdk

    def _recently_started(self, sandbox_id: str) -> Sandbox | None:
        with self._lock:
            found = self._started.get(sandbox_id)
        if found is None or time.monotonic() - found[1] > STARTED_TTL_S:
            return None
        return found[0]

    def _forget(self, sandbox_id: str) -> None:
        """Drop the sandbox from `_started`, whatever id or name it is kept by."""
        with self._lock:
            for key, (sandbox, _) in list(self._started.items()):
                if sandbox.id == sandbox_id:
                    del self._started[key]

    def _fetch(self, sandbox_id: str) -> Sandbox:
        sandbox = self._caller.call(
            lambda: self._client.get(sandbox_id), "look up", sandbox_id
        )
        if not owned_by(sandbox, self._context.house_id):
            raise SandboxNotFound(sandbox_id, RUNTIME)
        return sandbox

    def _lookup(self, name: str) -> Sandbox | None:
        try:
            return self._fetch(name)
        except SandboxNotFound:
            return None

    def _create(self, name: str, labels: dict[str, str], minutes: int) -> Sandbox:
        create_id = secrets.token_hex(8)
        labels = {**labels, CREATE_ID_LABEL: create_id}
        deadline = time.monotonic() + self._caller.timeouts.create
        within = self._caller.within
        sent = False

        def attempt() -> Sandbox:
            nonlocal sent
            found = self._created_earlier(name, create_id) if sent else None
            if found is not None:
                within(deadline, lambda s: found.wait_for_sandbox_start(timeout=s))
                return found
            sent = True
            params = CreateSandboxFromSnapshotParams(
                name=name, labels=dict(labels), auto_stop_interval=minutes
            )
            created: Sandbox = within(
                deadline, lambda s: self._client.create(params, timeout=s)
            )
            return created

        try:
            return self._caller.call(attempt, "create", name)
        except Transient:
            # The sandbox may exist although the create or its wait failed.
            self._discard_created(name, create_id)
            raise

    def _created_earlier(self, name: str, create_id: str) -> Sandbox | None:
        """Return the sandbox that an earlier try of this create made, or None.

        Raises:
            Conflict: a sandbox of that name exists, but not from this create.
        """
        found = self._lookup(name)
        if found is None:
            return None
        if (found.labels or {}).get(CREATE_ID_LABEL) != create_id:
            raise Conflict(
                f"A Daytona sandbox named {name!r} exists already. Pick another "
                f"name or destroy it with `arbe sandbox destroy {name} "
                f"--runtime {RUNTIME}`."
            )
        logger.info("Found Daytona sandbox %s from an earlier try", name)
        return found

    def _prepare(self, sandbox: Sandbox, repo: str | None) -> None:
        home = self._caller.call(
            sandbox.get_work_dir, "read the work directory of", sandbox
        )
        workdir = home
        if repo:
            workdir = repo_dir(home, repo)
            _lifecycle.clone(self._caller, sandbox, repo, home, workdir)
        labels = {**(sandbox.labels or {}), WORKDIR_LABEL: workdir}
        self._caller.call(lambda: sandbox.set_labels(labels), "label", sandbox)

    def _discard_created(self, name: str, create_id: str) -> None:
        """Destroy the sandbox a failed create may have made, if it exists."""
        try:
            found = self._created_earlier(name, create_id)
        except ArbeError:
            logger.exception(
                "Could not check for a Daytona sandbox %s left by a failed create; "
                "list sandboxes with `arbe sandbox list --runtime daytona`",
                name,
            )
            return
        if found is not None:
            self._discard(found.id)

    def _discard(self, sandbox_id: str) -> None:
        """Destroy a sandbox that provisioning gave up on, logging any failure."""
        try:
            self.destroy(sandbox_id)
        except ArbeError:
            logger.exception(
                "Could not destroy Daytona sandbox %s after provisioning failed; "
                "destroy it with `arbe sandbox destroy %s --runtime daytona`",
                sandbox_id,
                sandbox_id,
            )


def _set_key_fix() -> str:
    return f"arbe secret set {CREDENTIAL}"
