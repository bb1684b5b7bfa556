"""Value types of the runtime port: specs, sandbox views, health and results."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import final

import attrs

__all__ = [
    "Capabilities",
    "Check",
    "ExecResult",
    "Health",
    "RuntimeContext",
    "SandboxInfo",
    "SandboxSpec",
    "SandboxState",
    "cap_output",
]

#: The label every sandbox carries: the id of the house that owns it.
HOUSE_LABEL = "arbe.house"
ENV_LABEL = "arbe.env"
THREAD_LABEL = "arbe.thread"

#: Bytes of output kept per stream by default: a head and a tail of half each.
DEFAULT_OUTPUT_CAP = 64 * 1024


class SandboxState(enum.StrEnum):
    """The sandbox states arbe distinguishes, whatever words a runtime uses."""

    CREATING = "creating"
    STARTED = "started"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    ARCHIVED = "archived"
    #: The sandbox sleeps by itself and wakes on the next exec (Sprites).
    SLEEPING = "sleeping"
    GONE = "gone"
    UNREACHABLE = "unreachable"
    ERROR = "error"
    UNKNOWN = "unknown"


@final
@attrs.frozen
class Capabilities:
    """The operations a runtime supports. One it lacks raises `Unsupported`."""

    #: `stop` and `start` change the sandbox. False means they are no-ops
    #: that report the real status (a runtime whose sandboxes sleep).
    stop_start: bool = True
    #: `exec` returns stdout and stderr apart, not as one combined stream.
    separate_streams: bool = True
    #: Sandboxes fall asleep when idle and wake on the next exec.
    sleeps: bool = False
    #: `provision` can clone a repository into the work directory.
    clone: bool = True

    def to_dict(self) -> dict[str, bool]:
        """Return the flags as a JSON-ready mapping."""
        return attrs.asdict(self)


@final
@attrs.frozen
class SandboxSpec:
    """The request to `provision`: labels, name, repo and auto-stop."""

    labels: Mapping[str, str]
    #: A name to create the sandbox under; the runtime picks one when None.
    name: str | None = None
    #: A repository URL (or local path) to clone into the work directory.
    repo: str | None = None
    auto_stop_minutes: int | None = None


@final
@attrs.frozen
class SandboxInfo:
    """A runtime's view of one sandbox."""

    id: str
    name: str
    runtime: str
    state: SandboxState
    labels: Mapping[str, str]
    created_at: str | None = None
    #: The runtime's own words for the state, such as `cold` or `archived`.
    raw_state: str | None = None
    #: The working directory that commands start in.
    workdir: str | None = None
    #: Runtime-specific facts for the detailed view (resources, auto-stop).
    details: Mapping[str, object] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the view as a JSON-ready mapping."""
        return {
            "id": self.id,
            "name": self.name,
            "runtime": self.runtime,
            "state": str(self.state),
            "raw_state": self.raw_state,
            "labels": dict(self.labels),
            "created_at": self.created_at,
            "workdir": self.workdir,
            "details": dict(self.details),
        }


@final
@attrs.frozen
class Health:
    """The result of `ping`: the state seen and the round-trip latency."""

    state: SandboxState
    latency_ms: float
    detail: str = ""


@final
@attrs.frozen
class ExecResult:
    """The outcome of one command.

    `exit_code` is None when the runtime could not learn it (a connection
    that closed before the exit status arrived). When `combined` is true the
    runtime gives only one stream: all output is in `stdout` and `stderr` is
    empty.
    """

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    combined: bool = False
    #: Bytes cut from the middle of stdout and stderr to keep within the cap.
    omitted_bytes: int = 0


@final
@attrs.frozen
class Check:
    """One line of a diagnosis: what was checked, whether it passed, the fix."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    #: A warning is reported but does not fail the diagnosis.
    warning: bool = False

    def to_dict(self) -> dict[str, object]:
        """Return the check as a JSON-ready mapping."""
        return attrs.asdict(self)


@final
@attrs.frozen
class RuntimeContext:
    """The inputs a runtime factory gets to build a runtime for one house.

    `config` looks a setting up by name: the process environment first, then
    a house secret of that name, else None. The composition root builds it,
    so runtimes never read the environment themselves.
    """

    house_id: str
    house_name: str
    #: A directory under the arbe home that the runtime may keep files in.
    state_dir: str
    config: Callable[[str], str | None]
    #: The runtime's credential, resolved from the house, or None.
    credential: str | None = None


def cap_output(data: bytes, cap: int = DEFAULT_OUTPUT_CAP) -> tuple[str, int]:
    """Cut `data` to a head and a tail of `cap` bytes in all, and decode it.

    Bytes that are not UTF-8 are decoded with replacement characters.

    Returns:
        The decoded text, with a marker where bytes were left out, and the
        number of bytes left out.
    """
    if len(data) <= cap:
        return data.decode("utf-8", errors="replace"), 0

    half = cap // 2
    omitted = len(data) - 2 * half
    head = data[:half].decode("utf-8", errors="replace")
    tail = data[-half:].decode("utf-8", errors="replace")
    return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}", omitted
