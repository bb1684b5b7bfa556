"""Views of Daytona sandboxes and the shell commands arbe runs in them."""

from __future__ import annotations

import posixpath
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from typing import Any

from arbe_adapters.runtimes.daytona._errors import RUNTIME
from arbe_core.errors import InvalidInput
from arbe_core.runtime import (
    HOUSE_LABEL,
    ExecResult,
    SandboxInfo,
    SandboxState,
    cap_output,
)

__all__ = [
    "CREATE_ID_LABEL",
    "TIMEOUT_EXIT_CODES",
    "WORKDIR_LABEL",
    "arbe_state",
    "clone_command",
    "command_dir",
    "exec_result",
    "house_labels",
    "owned_by",
    "raw_state",
    "redact_url",
    "repo_dir",
    "timed_command",
    "to_info",
]

#: The label that records the directory `provision` cloned the repo into.
WORKDIR_LABEL = "arbe.workdir"
#: A label with a random id per `provision` call. A retried create compares
#: it to tell the sandbox its earlier try made from one made by others.
CREATE_ID_LABEL = "arbe.create-id"

#: Exit codes of GNU `timeout` when it stopped the command (TERM, then KILL).
TIMEOUT_EXIT_CODES = (124, 137)

# Daytona's state names (daytona_api_client.SandboxState) as arbe states.
_STATES = {
    "creating": SandboxState.CREATING,
    "pending_build": SandboxState.CREATING,
    "building_snapshot": SandboxState.CREATING,
    "pulling_snapshot": SandboxState.CREATING,
    "started": SandboxState.STARTED,
    "starting": SandboxState.STARTING,
    "restoring": SandboxState.STARTING,
    "resuming": SandboxState.STARTING,
    "stopping": SandboxState.STOPPING,
    "archiving": SandboxState.STOPPING,
    "pausing": SandboxState.STOPPING,
    "stopped": SandboxState.STOPPED,
    "paused": SandboxState.STOPPED,
    "archived": SandboxState.ARCHIVED,
    "error": SandboxState.ERROR,
    "build_failed": SandboxState.ERROR,
    "destroying": SandboxState.GONE,
    "destroyed": SandboxState.GONE,
}


def raw_state(sandbox: Any) -> str:
    """Return Daytona's name for the sandbox's state, or `unknown`."""
    state = getattr(sandbox, "state", None)
    value = getattr(state, "value", state)
    return str(value) if value else "unknown"


def arbe_state(raw: str) -> SandboxState:
    """Map a Daytona state name to the arbe state."""
    return _STATES.get(raw, SandboxState.UNKNOWN)


def house_labels(
    labels: Mapping[str, str], house_id: str, house_name: str
) -> dict[str, str]:
    """Return `labels` with the house label added.

    Raises:
        InvalidInput: `labels` name another house.
    """
    result = dict(labels)
    if result.setdefault(HOUSE_LABEL, house_id) != house_id:
        raise InvalidInput(
            f"Invalid label {HOUSE_LABEL}={result[HOUSE_LABEL]!r}: sandboxes of "
            f"house {house_name!r} carry its id {house_id!r}."
        )
    return result


def owned_by(sandbox: Any, house_id: str) -> bool:
    """Tell whether the sandbox carries the house's label and still exists."""
    labels = getattr(sandbox, "labels", None) or {}
    return labels.get(HOUSE_LABEL) == house_id and raw_state(sandbox) != "destroyed"


def to_info(sandbox: Any) -> SandboxInfo:
    """Build arbe's view of an SDK `Sandbox`."""
    raw = raw_state(sandbox)
    labels = dict(sandbox.labels or {})
    details = {
        "cpu": sandbox.cpu,
        "memory_gib": sandbox.memory,
        "disk_gib": sandbox.disk,
        "gpu": sandbox.gpu,
        "auto_stop_minutes": sandbox.auto_stop_interval,
        "target": sandbox.target,
        "user": sandbox.user,
        "updated_at": sandbox.updated_at,
        "error_reason": sandbox.error_reason,
    }
    return SandboxInfo(
        id=sandbox.id,
        name=sandbox.name,
        runtime=RUNTIME,
        state=arbe_state(raw),
        labels=labels,
        created_at=sandbox.created_at,
        raw_state=raw,
        workdir=labels.get(WORKDIR_LABEL),
        details=details,
    )


def command_dir(labels: Mapping[str, str] | None, cwd: str | None) -> str | None:
    """Return where a command runs: `cwd` taken from the work directory.

    The work directory is the one `provision` recorded in the sandbox's
    labels. Without it, `cwd` goes to the daemon as given, and None means the
    daemon's own working directory.
    """
    workdir = (labels or {}).get(WORKDIR_LABEL)
    if workdir is None or (cwd is not None and posixpath.isabs(cwd)):
        return cwd
    return posixpath.join(workdir, cwd) if cwd else workdir


def repo_dir(home: str, repo: str) -> str:
    """Return the directory under `home` to clone `repo` into, named like git does."""
    path = urllib.parse.urlsplit(repo).path if "://" in repo else repo
    name = posixpath.basename(path.rstrip("/").removesuffix(".git").rstrip("/"))
    if ":" in name:  # scp-like URLs: git@host:org/repo
        name = name.rsplit(":", 1)[1]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".-")
    return posixpath.join(home, name or "work")


def clone_command(repo: str, dest: str) -> str:
    """Return the shell command that clones `repo` into `dest`."""
    return f"git clone --quiet -- {shlex.quote(repo)} {shlex.quote(dest)}"


def redact_url(url: str) -> str:
    """Return `url` with any user name and password replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def timed_command(command: str, timeout: float, kill_after: float) -> str:
    """Wrap `command` so that bash runs it under GNU `timeout` in the sandbox.

    `timeout` runs the command in a process group of its own and signals the
    whole group (TERM, then KILL after `kill_after` seconds). So a command
    over its time is stopped with everything it started, and the output made
    before the deadline still comes back.

    NOTE: this needs GNU `timeout` (coreutils) in the sandbox image, which was
    not checked against a real Daytona snapshot. Without it every command
    exits 127.
    """
    return (
        f"timeout --kill-after={kill_after:.3f}s {timeout:.3f}s "
        f"bash -c {shlex.quote(command)}"
    )


def exec_result(
    exit_code: int | None, output: str, duration: float, timeout: float
) -> ExecResult:
    """Build the result of a command whose combined output came back."""
    text, omitted = cap_output(output.encode("utf-8", errors="replace"))
    timed_out = exit_code in TIMEOUT_EXIT_CODES and duration >= timeout
    return ExecResult(
        exit_code=exit_code,
        stdout=text,
        stderr="",
        duration_s=duration,
        timed_out=timed_out,
        combined=True,
        omitted_bytes=omitted,
    )
