"""Helpers shared by test tiers: a fake clock and ids, and ways to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
from typer.testing import CliRunner

from arbe_entry.cli import main

#: The default start time of a `FakeClock`.
EPOCH = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)

#: The `arbe` console script installed beside the interpreter running the tests.
ARBE_SCRIPT = Path(sys.executable).parent / "arbe"

#: Seconds a CLI subprocess may run before the test fails.
SUBPROCESS_TIMEOUT_S = 60


class FakeClock:
    """A clock whose time changes only when a test advances it."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.current = start

    def now(self) -> datetime:
        """Return the current fake time."""
        return self.current

    def advance(self, seconds: float = 1.0) -> datetime:
        """Move the clock forward and return the new time."""
        self.current += timedelta(seconds=seconds)
        return self.current


class SequentialIds:
    """An id factory that numbers ids per prefix: `hse_000001`, `hse_000002`."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def new(self, prefix: str) -> str:
        """Return the next id of `prefix`, even when several threads call at once."""
        with self._lock:
            self.counts[prefix] = self.counts.get(prefix, 0) + 1
            return f"{prefix}_{self.counts[prefix]:06d}"


def arbe_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for an `arbe` subprocess.

    It is this process's environment (which must name `ARBE_HOME`, so no test
    touches the user's real home), with plugins blocked and `env` on top.
    """
    merged = dict(os.environ)
    merged["ARBE_PLUGINS"] = ""
    merged.update(env or {})
    if not merged.get("ARBE_HOME"):
        msg = "ARBE_HOME is not set; use the arbe_home fixture."
        raise RuntimeError(msg)
    return merged


def run_arbe(
    *args: str,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `arbe` console script and return its completed process.

    Args:
        args: the command line after `arbe`.
        input: bytes or text for stdin, which is empty when None.
        env: variables set on top of `arbe_env()`.

    Returns:
        The process, with stdout and stderr decoded as UTF-8 text.
    """
    data = input.encode("utf-8") if isinstance(input, str) else (input or b"")
    completed = subprocess.run(
        [str(ARBE_SCRIPT), *args],
        input=data,
        capture_output=True,
        env=arbe_env(env),
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    return subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


@attrs.frozen
class CliResult:
    """What one in-process CLI run printed and its exit code."""

    exit_code: int
    stdout: str
    stderr: str


def invoke(
    *args: str,
    input: bytes | str | None = None,
    env: Mapping[str, str | None] | None = None,
) -> CliResult:
    """Run the CLI's `main` in this process, with Typer's runner isolating stdio.

    Going through `main` (not the bare Typer app) exercises the same error
    handling and exit codes as the console script.
    """
    runner = CliRunner()
    exit_code = 0
    with runner.isolation(input=input, env=env) as (stdout, stderr, _):
        try:
            main(list(args))
        except SystemExit as exc:
            exit_code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        return CliResult(
            exit_code=exit_code,
            stdout=stdout.getvalue().decode("utf-8", "replace"),
            stderr=stderr.getvalue().decode("utf-8", "replace"),
        )
