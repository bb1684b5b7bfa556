"""Sandbox directories and their metadata on the local disk.

Layout under the runtime's state directory:

```
.lock                  flock taken while a new sandbox's name is checked and reserved
<sandbox_id>/
    sandbox.json       id, name, labels, state, created_at, repo
    work/              the working tree that commands run in
    groups/<pgid>      one file per process group that may still run there
```
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, final

import attrs

from arbe_core.errors import InvalidName
from arbe_core.runtime import SandboxState

logger = logging.getLogger("arbe.runtime.local")

SANDBOX_FILE = "sandbox.json"
WORK_DIR = "work"
GROUPS_DIR = "groups"
#: Metadata format written by this version; newer formats are read as far as
#: their fields match.
FORMAT = 1

#: Sandbox ids and names. They become directory names, so they contain no `/`,
#: no leading `.` and nothing else that could leave the state directory.
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NAME_RULE = "it must match [a-z0-9][a-z0-9_-]* and have at most 63 characters"


def check_name(value: str, kind: str = "sandbox id or name") -> None:
    """Raise `InvalidName` unless `value` is a safe sandbox id or name."""
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidName(kind, value, NAME_RULE)


@final
@attrs.frozen
class SandboxRecord:
    """The metadata of one sandbox, as stored in `sandbox.json`."""

    id: str
    name: str
    labels: Mapping[str, str]
    state: SandboxState
    created_at: str
    #: The cloned repository, with any user and password in the URL masked.
    repo: str | None = None
    #: Copied from the spec. The local runtime never stops a sandbox by itself.
    auto_stop_minutes: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-ready mapping."""
        return {
            "format": FORMAT,
            "id": self.id,
            "name": self.name,
            "labels": dict(self.labels),
            "state": str(self.state),
            "created_at": self.created_at,
            "repo": self.repo,
            "auto_stop_minutes": self.auto_stop_minutes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SandboxRecord:
        """Build a record from `to_json` output; a missing field raises KeyError."""
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            labels={str(k): str(v) for k, v in dict(data["labels"]).items()},
            state=SandboxState(data["state"]),
            created_at=str(data["created_at"]),
            repo=data.get("repo"),
            auto_stop_minutes=data.get("auto_stop_minutes"),
        )


@final
class SandboxStore:
    """Sandbox directories under one state directory.

    Every method that takes a sandbox id checks it with `check_name` first, so
    no caller input can name a path outside the state directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def sandbox_dir(self, sandbox_id: str) -> Path:
        """Return the directory of sandbox `sandbox_id` (which may not exist)."""
        check_name(sandbox_id)
        return self.root / sandbox_id

    def workdir(self, sandbox_id: str) -> Path:
        """Return the working tree of sandbox `sandbox_id`."""
        return self.sandbox_dir(sandbox_id) / WORK_DIR

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the state directory while the block runs."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def create(self, record: SandboxRecord) -> None:
        """Make the directory of a new sandbox and write its first metadata."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sandbox_dir(record.id).mkdir(mode=0o700)
        self.write(record)

    def write(self, record: SandboxRecord) -> None:
        """Replace the sandbox's metadata atomically, so readers never see half."""
        path = self.sandbox_dir(record.id) / SANDBOX_FILE
        temp = path.with_name(f".{SANDBOX_FILE}.{secrets.token_hex(4)}")
        temp.write_text(json.dumps(record.to_json(), indent=2) + "\n", "utf-8")
        os.replace(temp, path)

    def read(self, sandbox_id: str) -> SandboxRecord | None:
        """Return the sandbox's metadata, or None when it is missing or corrupt."""
        path = self.sandbox_dir(sandbox_id) / SANDBOX_FILE
        try:
            data = json.loads(path.read_text("utf-8"))
            return SandboxRecord.from_json(data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping sandbox %s: unreadable metadata: %s", path, exc)
            return None

    def records(self) -> builtins.list[SandboxRecord]:
        """Return the metadata of every sandbox in the state directory."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if not NAME_PATTERN.fullmatch(entry.name):
                continue
            if not (entry / SANDBOX_FILE).is_file():
                continue
            record = self.read(entry.name)
            if record is not None:
                found.append(record)
        return found

    def remove(self, sandbox_id: str) -> bool:
        """Delete the sandbox's directory; return False if it was already gone.

        The directory is first renamed out of the way, so a listing never shows
        a half-deleted sandbox and two concurrent calls delete it once.
        """
        source = self.sandbox_dir(sandbox_id)
        trash = self.root / f".trash-{sandbox_id}-{secrets.token_hex(4)}"
        try:
            os.rename(source, trash)
        except FileNotFoundError:
            return False
        _remove_tree(trash)
        return True

    # --- Process groups ------------------------------------------------------

    def add_group(self, sandbox_id: str, pgid: int) -> None:
        """Record that process group `pgid` runs in the sandbox."""
        groups = self.sandbox_dir(sandbox_id) / GROUPS_DIR
        groups.mkdir(exist_ok=True)
        (groups / str(pgid)).write_text(start_time(pgid) or "", "ascii")

    def remove_group(self, sandbox_id: str, pgid: int) -> None:
        """Forget process group `pgid`, if it is recorded."""
        path = self.sandbox_dir(sandbox_id) / GROUPS_DIR / str(pgid)
        path.unlink(missing_ok=True)

    def groups(self, sandbox_id: str) -> builtins.list[tuple[int, str]]:
        """Return each recorded process group with its leader's start time.

        The start time is empty where the platform does not report one.
        """
        groups = self.sandbox_dir(sandbox_id) / GROUPS_DIR
        if not groups.is_dir():
            return []
        found = []
        for entry in groups.iterdir():
            if entry.name.isdigit():
                found.append((int(entry.name), entry.read_text("ascii").strip()))
        return found


def start_time(pid: int) -> str | None:
    """Return the start time of process `pid` from /proc, or None.

    A process id can be reused after its process ends. The start time
    distinguishes the recorded process from a newer one with the same id.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    # The command name in brackets may contain spaces, so split after the last
    # `)`. Field 22 of the line (starttime) is then the 20th field.
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _remove_tree(path: Path) -> None:
    """Delete `path`, even where commands took away write permission inside it."""
    try:
        shutil.rmtree(path)
    except OSError:
        _make_tree_writable(path)
        shutil.rmtree(path)


def _make_tree_writable(path: Path) -> None:
    os.chmod(path, os.lstat(path).st_mode | stat.S_IRWXU)
    # Top-down, so each directory is made readable before the walk lists it.
    # Symbolic links are never followed, so nothing outside `path` changes.
    for parent, dirs, _ in os.walk(path):
        for name in dirs:
            child = os.path.join(parent, name)
            if not os.path.islink(child):
                os.chmod(child, os.lstat(child).st_mode | stat.S_IRWXU)
