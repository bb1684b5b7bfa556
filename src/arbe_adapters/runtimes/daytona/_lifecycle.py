"""The SDK calls that start, stop and destroy a sandbox and run commands in it.

Each lifecycle function looks at the sandbox's last known state and does
only what is still needed, so a retry after a lost reply, or a second call,
finishes the work instead of failing on a state conflict.
"""

from __future__ import annotations

import math
import time

from daytona import Sandbox

from arbe_adapters.runtimes.daytona._client import Caller, run_bounded
from arbe_adapters.runtimes.daytona._errors import DeadlineExceeded, is_exec_timeout
from arbe_adapters.runtimes.daytona._sandbox import (
    clone_command,
    exec_result,
    raw_state,
    redact_url,
    timed_command,
)
from arbe_core.errors import InvalidInput, RateLimited, SandboxNotFound
from arbe_core.runtime import ExecResult

__all__ = ["clone", "destroy", "run", "start", "stop"]

_STOPPED = frozenset({"stopped", "archived", "paused"})
_STOPPING = frozenset({"stopping", "archiving", "pausing"})
_STARTING = frozenset(
    {
        "creating",
        "starting",
        "restoring",
        "resuming",
        "pending_build",
        "building_snapshot",
        "pulling_snapshot",
    }
)


def start(caller: Caller, sandbox: Sandbox) -> None:
    """Start the sandbox and wait until it is started.

    A sandbox on its way to stopped is let stop first, and one already on its
    way to started is waited for.

    Raises:
        OperationTimedOut: not started before `timeouts.start`.
    """
    deadline = time.monotonic() + caller.timeouts.start
    fresh = True

    def attempt() -> None:
        nonlocal fresh
        if not fresh:
            sandbox.refresh_data()
        fresh = False
        if raw_state(sandbox) in _STOPPING:
            caller.within(deadline, lambda s: sandbox.wait_for_sandbox_stop(timeout=s))
        if raw_state(sandbox) in _STARTING:
            caller.within(deadline, lambda s: sandbox.wait_for_sandbox_start(timeout=s))
        elif raw_state(sandbox) != "started":
            caller.within(deadline, lambda s: sandbox.start(timeout=s))

    caller.call(attempt, "start", sandbox)


def stop(caller: Caller, sandbox: Sandbox) -> None:
    """Stop the sandbox and wait until it is stopped.

    An archived sandbox counts as stopped. A sandbox on its way to started is let start first, because Daytona
    rejects a stop then.

    Raises:
        OperationTimedOut: not stopped before `timeouts.stop`.
    """
    deadline = time.monotonic() + caller.timeouts.stop
    fresh = True

    def attempt() -> None:
        nonlocal fresh
        if not fresh:
            sandbox.refresh_data()
        fresh = False
        if raw_state(sandbox) in _STARTING:
            caller.within(deadline, lambda s: sandbox.wait_for_sandbox_start(timeout=s))
        if raw_state(sandbox) in _STOPPING:
            caller.within(deadline, lambda s: sandbox.wait_for_sandbox_stop(timeout=s))
        elif raw_state(sandbox) not in _STOPPED:
            caller.within(deadline, lambda s: sandbox.stop(timeout=s))

    caller.call(attempt, "stop", sandbox)


def destroy(caller: Caller, sandbox: Sandbox) -> bool:
    """Delete the sandbox and wait until the API no longer has it.

    Returns:
        False when the API did not have it any more.

    Raises:
        OperationTimedOut: not gone before `timeouts.destroy`.
    """
    deadline = time.monotonic() + caller.timeouts.destroy

    def attempt() -> None:
        caller.within(deadline, lambda s: sandbox.delete(timeout=s, wait=True))

    try:
        caller.call(attempt, "destroy", sandbox)
    except SandboxNotFound:
        return False
    return True


def run(
    caller: Caller,
    sandbox: Sandbox,
    command: str,
    cwd: str | None,
    env: dict[str, str],
    timeout: float,
) -> ExecResult:
    """Run `command` with bash under GNU `timeout` and return its output.

    When the daemon's timeout, the HTTP read timeout or arbe's own deadline
    (`timeouts.grace` after the command's timeout and kill time) ends the
    call instead, the result has `timed_out` set and no output. The request
    is sent again only after a 429, because a resent command could run twice.
    """
    kill_after = caller.timeouts.kill_after
    wrapped = timed_command(command, timeout, kill_after)
    # GNU timeout ends the command first and keeps its output. The daemon's
    # timeout and the SDK's read timeout (the daemon's plus 5 s) back it up,
    # and arbe's own deadline backs up all three.
    daemon_timeout = math.ceil(timeout + kill_after) + 2
    deadline = timeout + kill_after + caller.timeouts.grace
    started = time.monotonic()

    def send() -> tuple[int | None, str] | None:
        def execute() -> tuple[int | None, str]:
            response = sandbox.process.exec(
                wrapped, cwd=cwd, env=env, timeout=daemon_timeout
            )
            return response.exit_code, response.result

        try:
            return run_bounded(execute, deadline)
        except DeadlineExceeded:
            return None
        except Exception as exc:
            if is_exec_timeout(exc):
                return None
            raise

    reply = caller.call(send, "run a command in", sandbox, retry_on=(RateLimited,))
    duration = time.monotonic() - started
    if reply is None:
        return ExecResult(None, "", "", duration, timed_out=True, combined=True)
    return exec_result(reply[0], reply[1], duration, timeout)


def clone(caller: Caller, sandbox: Sandbox, repo: str, home: str, dest: str) -> None:
    """Clone `repo` into `dest`, running git from `home`.

    Raises:
        InvalidInput: git failed or timed out. The message shows the URL
            without credentials and git's last line of output.
    """
    command = clone_command(repo, dest)
    env = {"GIT_TERMINAL_PROMPT": "0"}
    result = run(caller, sandbox, command, home, env, caller.timeouts.clone)
    if result.exit_code == 0 and not result.timed_out:
        return

    reason = "timed out" if result.timed_out else f"exited {result.exit_code}"
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    detail = lines[-1].replace(repo, redact_url(repo)) if lines else "no output"
    raise InvalidInput(
        f"Cloning {redact_url(repo)!r} into Daytona sandbox {sandbox.id!r} "
        f"failed: git {reason}: {detail}. Check the URL and that the "
        f"repository is reachable from Daytona."
    )
