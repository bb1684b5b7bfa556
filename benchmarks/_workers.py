"""Shared by the worker benchmarks: a house of queued `builtin/shell` threads.

Every thread's one entry is a command that sleeps, then appends the thread's
tag to `ran.log` in the environment's local sandbox. Counting the lines of
that log afterwards shows, from the sandbox side, how many commands ran and
whether any ran twice.
"""

from __future__ import annotations

import base64
import os
import resource
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import attrs

from arbe_core.models import DispatchState
from arbe_entry.app import Arbe
from arbe_entry.config import Settings

ARBE = str(Path(sys.executable).with_name("arbe"))
LOG_NAME = "ran.log"


@attrs.define
class QueuedHouse:
    """A house whose threads wait for workers, and how to reach it."""

    home: Path
    database_url: str | None
    master_key: str
    sandbox_dir: Path
    threads: list[str]

    def env(self) -> dict[str, str]:
        """Return the environment of an `arbe worker` process for this house."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBE_")}
        env.update(
            {
                "ARBE_HOME": str(self.home),
                "ARBE_PLUGINS": "",
                "ARBE_MASTER_KEY": self.master_key,
            }
        )
        if self.database_url:
            env["ARBE_DATABASE_URL"] = self.database_url
        return env

    def open(self) -> Arbe:
        return Arbe(
            Settings(
                home=self.home,
                database_url=self.database_url,
                master_key=self.master_key,
                plugins="",
            )
        )


def queue_house(
    home: Path, database_url: str | None, threads: int, sleep_s: float
) -> QueuedHouse:
    """Create a house with one local environment and `threads` queued dispatches."""
    master_key = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    house = QueuedHouse(home, database_url, master_key, home, [])
    arbe = house.open()
    try:
        env, _ = arbe.environments.create("bench", runtime="local")
        assert env.sandbox_id is not None
        info = arbe.runtimes.get("local").get(env.sandbox_id)
        assert info.workdir is not None
        house.sandbox_dir = Path(info.workdir)
        for _ in range(threads):
            thread = arbe.threads.create(env="bench", model="builtin/shell")
            command = f"sleep {sleep_s:g}; echo {thread.id} >> {LOG_NAME}"
            arbe.threads.post(thread.id, command)
            house.threads.append(thread.id)
    finally:
        arbe.close()
    return house


@attrs.frozen
class WorkerRun:
    """How long the workers took, and what each did."""

    #: Seconds from the first worker's start to the last one's exit.
    wall_s: float
    #: CPU seconds (user and system) of all workers and the commands they ran.
    cpu_s: float
    #: Dispatches each worker reported.
    counts: list[int]


def run_workers(
    house: QueuedHouse, workers: int, concurrency: int, timeout_s: float = 900.0
) -> WorkerRun:
    """Start `workers` `arbe worker --once` processes together; wait for all."""
    argv = [ARBE, "worker", "--once", "--concurrency", str(concurrency), "--json"]
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            argv,
            env=house.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(workers)
    ]
    counts = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(f"arbe worker exited {proc.returncode}: {err.strip()}")
        counts.append(int(_last_json(out)["dispatches"]))
    wall_s = time.perf_counter() - started
    return WorkerRun(wall_s, _children_cpu_s() - cpu_before, counts)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_json(text: str) -> dict[str, object]:
    import json

    lines = [line for line in text.splitlines() if line.strip()]
    result: dict[str, object] = json.loads(lines[-1])
    return result


@attrs.frozen
class Outcome:
    """Counts from the sandbox's log and from the database after a run."""

    runs: int
    distinct: int
    completed: int
    attempts_over_one: int

    @property
    def exactly_once(self) -> bool:
        return self.runs == self.distinct == self.completed


def check(house: QueuedHouse) -> Outcome:
    """Count the commands that ran (sandbox side) and the completed dispatches."""
    log = house.sandbox_dir / LOG_NAME
    lines = log.read_text().split() if log.exists() else []
    runs = Counter(lines)
    arbe = house.open()
    try:
        completed = 0
        retried = 0
        for thread_id in house.threads:
            dispatch = arbe.threads.dispatch(thread_id)
            if dispatch is not None and dispatch.state is DispatchState.COMPLETED:
                completed += 1
            if dispatch is not None and dispatch.attempts > 1:
                retried += 1
    finally:
        arbe.close()
    known = set(house.threads)
    return Outcome(
        runs=sum(n for tag, n in runs.items() if tag in known),
        distinct=len([tag for tag in runs if tag in known]),
        completed=completed,
        attempts_over_one=retried,
    )
