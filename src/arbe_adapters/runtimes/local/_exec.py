"""Run one command in its own process group, with a deadline and capped output."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, final

import attrs

from arbe_core.runtime import DEFAULT_OUTPUT_CAP

#: Seconds that reading goes on after the command's shell exits. Background
#: children that still hold the output pipes open are left running after that,
#: and whatever they write later is not collected.
EXIT_DRAIN_S = 0.25
#: Seconds that reading goes on after the process group is killed at the
#: deadline, for output that was already in the pipes.
KILL_DRAIN_S = 0.5
#: Seconds between checks for the shell's exit while its output pipes stay open.
POLL_S = 0.05
READ_SIZE = 64 * 1024


@final
class CappedStream:
    """The bytes of one output stream, kept as a bounded head and tail.

    Memory stays within `cap` bytes however much the command writes. The text
    has the same shape as `arbe_core.runtime.cap_output` gives for the whole
    output.
    """

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        self._half = cap // 2
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        """Add the next bytes of the stream."""
        self.total += len(chunk)
        room = self._half - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk
            excess = len(self._tail) - self._half
            if excess > 0:
                del self._tail[:excess]

    @property
    def omitted(self) -> int:
        """Bytes left out between the head and the tail."""
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """Decode the kept bytes, with replacement characters for bad UTF-8."""
        if not self.omitted:
            return bytes(self._head + self._tail).decode("utf-8", errors="replace")
        head = bytes(self._head).decode("utf-8", errors="replace")
        tail = bytes(self._tail).decode("utf-8", errors="replace")
        # The marker matches `cap_output`, so every runtime's output reads alike.
        return f"{head}\n[... {self.omitted} bytes omitted ...]\n{tail}"


@final
@attrs.frozen
class Outcome:
    """The exit code, output and duration of a finished or killed command."""

    pgid: int
    #: The exit status; 128 + N when signal N ended the shell, as bash reports.
    exit_code: int
    stdout: CappedStream
    stderr: CappedStream
    duration_s: float
    timed_out: bool


def run_in_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    cap: int = DEFAULT_OUTPUT_CAP,
    on_start: Callable[[int], None] = lambda pgid: None,
) -> Outcome:
    """Run `argv` in a new session and collect its output until the deadline.

    The command runs with exactly `env` as its environment and with stdin
    closed. At the deadline its whole process group is killed with SIGKILL.

    Args:
        argv: the program and its arguments.
        cwd: the directory the command starts in.
        env: the complete environment of the command.
        timeout: seconds until the process group is killed.
        cap: bytes kept per stream, as a head and a tail of half each.
        on_start: called with the process group id once the command runs. If
            it raises, the group is killed and the error propagates.

    Returns:
        The outcome. It has `timed_out` set when the deadline killed the group.
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stdout, stderr = CappedStream(cap), CappedStream(cap)
    try:
        with selectors.DefaultSelector() as selector:
            _register(selector, proc.stdout, stdout)
            _register(selector, proc.stderr, stderr)
            on_start(proc.pid)
            timed_out = _pump(proc, selector, started + timeout)
            if timed_out:
                kill_group(proc.pid)
                _read_until(selector, time.monotonic() + KILL_DRAIN_S)
    except BaseException:
        kill_group(proc.pid)
        raise
    finally:
        _close(proc.stdout)
        _close(proc.stderr)
        returncode = proc.wait()

    return Outcome(
        pgid=proc.pid,
        exit_code=returncode if returncode >= 0 else 128 - returncode,
        stdout=stdout,
        stderr=stderr,
        duration_s=time.monotonic() - started,
        timed_out=timed_out,
    )


def kill_group(pgid: int) -> None:
    """Send SIGKILL to every process of group `pgid`, if the group still exists."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def group_exists(pgid: int) -> bool:
    """Tell whether any process, a zombie included, is in group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The group exists but belongs to another user, so it is not one of ours.
        return False
    return True


def _register(
    selector: selectors.BaseSelector, pipe: IO[bytes] | None, stream: CappedStream
) -> None:
    if pipe is not None:
        selector.register(pipe, selectors.EVENT_READ, stream)


def _pump(
    proc: subprocess.Popen[bytes], selector: selectors.BaseSelector, deadline: float
) -> bool:
    """Read output until the command is done; return True if the deadline came first."""
    exited_at: float | None = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            return True
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if not selector.get_map():
            try:
                proc.wait(timeout=deadline - now)
            except subprocess.TimeoutExpired:
                return True
            return False
        if exited_at is not None and now - exited_at >= EXIT_DRAIN_S:
            return False
        _read_ready(selector, min(deadline - now, POLL_S))


def _read_until(selector: selectors.BaseSelector, until: float) -> None:
    while selector.get_map():
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        _read_ready(selector, remaining)


def _read_ready(selector: selectors.BaseSelector, wait: float) -> None:
    for key, _ in selector.select(wait):
        chunk = os.read(key.fd, READ_SIZE)
        if chunk:
            key.data.feed(chunk)
        else:
            selector.unregister(key.fileobj)


def _close(pipe: IO[bytes] | None) -> None:
    if pipe is not None:
        pipe.close()
