"""Run one command in a sprite over the exec websocket, under arbe's deadline."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Final, TypeVar

from sprites import Sprite
from sprites.exceptions import ExecError, NetworkError
from sprites.exceptions import TimeoutError as SpriteTimeoutError
from sprites.exec import Cmd

from arbe_core.runtime import ExecResult, cap_output

__all__ = ["EXEC_GRACE_S", "KILL_SLACK_S", "run_command"]

log = logging.getLogger("arbe.runtime.sprite")

T = TypeVar("T")

#: Seconds arbe waits past a command's timeout for sprites-py to return
#: before it gives up on the call: `exec` returns within timeout + 10 s.
EXEC_GRACE_S: Final = 10.0
#: Seconds past the timeout at which `timeout(1)` inside the sprite stops the
#: command's process group, then kills it 2 s later. It only matters when the
#: service keeps a command running after arbe closed the connection, which
#: Sprites documents as up to 10 s for commands without a TTY.
KILL_SLACK_S: Final = 2.0
#: Text in every sprites-py 0.7.2 exec error raised after the websocket opened.
#: NOTE: the SDK raises `NetworkError` both before the command could start and
#: after, so only this text distinguishes them. Check it on SDK upgrades.
_NO_EXIT_STATUS: Final = "command exit status"


class _DeadlinePassed(Exception):
    """The SDK call did not return before arbe's own deadline."""


def run_command(
    sprite: Sprite,
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str] | None,
    timeout: float,
    grace: float,
    guard: Callable[[], AbstractContextManager[None]],
) -> ExecResult:
    """Run `argv` in the sprite once, never retried, and return its result.

    A non-zero exit is a result. A timeout (the SDK's, or arbe's own
    `timeout + grace`) gives `timed_out=True` and `exit_code=None`. A
    websocket that closes before the exit status gives `exit_code=None`. In
    every case the output received so far is kept. Other failures raise the
    arbe error that `guard` maps them to.
    """
    stdout, stderr = io.BytesIO(), io.BytesIO()
    command = sprite.command(
        *_with_kill_backstop(argv, timeout),
        env=dict(env) if env else None,
        cwd=cwd,
        timeout=timeout,
        stdout=stdout,
        stderr=stderr,
    )
    started = time.monotonic()
    exit_code: int | None = None
    timed_out = False

    with guard():
        try:
            exit_code = _call_with_deadline(
                lambda: _exit_code(command), timeout + grace
            )
        except (_DeadlinePassed, SpriteTimeoutError):
            timed_out = True
            _log_no_exit(sprite.name, "timed out")
        except NetworkError as exc:
            if _NO_EXIT_STATUS not in str(exc):
                raise
            _log_no_exit(sprite.name, "lost its connection before the exit status")

    return _result(exit_code, stdout, stderr, time.monotonic() - started, timed_out)


def _with_kill_backstop(argv: Sequence[str], timeout: float) -> list[str]:
    """Prefix `argv` with `timeout(1)`, which signals its whole process group."""
    limit = f"{timeout + KILL_SLACK_S:g}"
    return ["timeout", "--kill-after=2", limit, *argv]


def _exit_code(command: Cmd) -> int:
    try:
        command.run()
    except ExecError as exc:
        return exc.exit_code()
    return 0


def _call_with_deadline(call: Callable[[], T], seconds: float) -> T:
    """Run `call` in a daemon thread and wait at most `seconds` for it.

    Raises:
        _DeadlinePassed: the call has not returned. Its thread is left to
            finish on its own.
    """
    done = threading.Event()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name="arbe-sprite-exec", daemon=True).start()
    if not done.wait(seconds):
        raise _DeadlinePassed
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _log_no_exit(sprite: str, outcome: str) -> None:
    log.warning("exec in sprite %s %s; exit code unknown, not re-run", sprite, outcome)


def _result(
    exit_code: int | None,
    stdout: io.BytesIO,
    stderr: io.BytesIO,
    duration_s: float,
    timed_out: bool,
) -> ExecResult:
    out_text, out_omitted = cap_output(stdout.getvalue())
    err_text, err_omitted = cap_output(stderr.getvalue())
    return ExecResult(
        exit_code=exit_code,
        stdout=out_text,
        stderr=err_text,
        duration_s=duration_s,
        timed_out=timed_out,
        omitted_bytes=out_omitted + err_omitted,
    )
