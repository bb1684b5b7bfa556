"""Concurrency: one `arbe worker` at several `--concurrency` settings.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/concurrency.py [--levels 1,2,4,8,16,32,64] [--threads 200]

For each setting, a fresh house on SQLite gets `--threads` threads on one
local environment. Each thread has one entry for the `builtin/shell` bot, a
command that sleeps `--sleep` seconds (0.2 by default) and then appends the
thread's id to a log file in the sandbox. Then one `arbe worker --once --concurrency N`
process runs them all. The wall time runs from the worker's start to its
exit, start-up included. The ideal time is the sleeping alone, spread over N
slots: threads x sleep / N.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import (
    add_wait_option,
    command_line,
    machine,
    wait_until_quiet,
    write_section,
)
from _workers import Outcome, WorkerRun, check, queue_house, run_workers


@attrs.frozen
class Row:
    """One concurrency setting's run."""

    level: int
    run: WorkerRun
    idle_s: float
    outcome: Outcome


def main() -> None:
    """Run one worker per concurrency setting and record the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,2,4,8,16,32,64")
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--sleep", type=float, default=0.2)
    add_wait_option(parser)
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    load = wait_until_quiet(timeout_s=args.wait_s)

    rows = []
    for level in levels:
        with tempfile.TemporaryDirectory(prefix="arbe-bench-concurrency-") as tmp:
            house = queue_house(Path(tmp), None, args.threads, args.sleep)
            run = run_workers(house, workers=1, concurrency=level)
            outcome = check(house)
            # The queue is empty now: this run is start-up and exit alone.
            idle = run_workers(house, workers=1, concurrency=level)
        rows.append(Row(level, run, idle.wall_s, outcome))
        print(
            f"concurrency {level}: {run.wall_s:.2f} s, "
            f"{args.threads / run.wall_s:.1f} dispatches/s, "
            f"exactly once: {outcome.exactly_once}",
            file=sys.stderr,
        )
    write_section("concurrency", report(args, load, rows))


def report(args: argparse.Namespace, load: str, rows: list[Row]) -> str:
    lines = [
        "## Concurrency",
        "",
        f"Machine: {machine()}; {load}. One `arbe worker --once` on SQLite, "
        f"{args.threads} `builtin/shell` dispatches on the local runtime whose "
        f"commands sleep {args.sleep:g} s. Command: `{command_line()}`.",
        "",
        "*Wall* is the worker process from start to exit. *Start-up* is the "
        "same worker run again on the empty queue, so *wall - start-up* is "
        "the time spent on dispatches. The *ideal* is the sleeping alone "
        "spread over the slots. *CPU per dispatch* is the CPU time of the "
        "worker and its commands divided by the dispatches. *Runs* counts the "
        "commands' lines in the sandbox's log, *distinct* the threads among "
        "them, and *completed* the dispatches that ended completed.",
        "",
        "| --concurrency | wall s | start-up s | dispatches/s | dispatches/s "
        "after start-up | ideal s | speed-up over the first row | CPU per "
        "dispatch ms | runs | distinct | completed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    first = rows[0]
    base_rate = args.threads / first.run.wall_s
    for row in rows:
        rate = args.threads / row.run.wall_s
        working_s = max(row.run.wall_s - row.idle_s, 1e-9)
        cpu_ms = row.run.cpu_s / args.threads * 1000
        lines.append(
            f"| {row.level} | {row.run.wall_s:.2f} | {row.idle_s:.2f} | {rate:.1f} | "
            f"{args.threads / working_s:.1f} | "
            f"{args.threads * args.sleep / row.level:.2f} | "
            f"{rate / base_rate:.1f} | {cpu_ms:.1f} | {row.outcome.runs} | "
            f"{row.outcome.distinct} | {row.outcome.completed} |"
        )
    cpu_ms = statistics.median(row.run.cpu_s for row in rows) / args.threads * 1000
    lines += [
        "",
        "A worker is one Python process whose dispatch threads share one "
        "interpreter lock, so its own work gets about one core; the commands "
        f"run in processes of their own. At {cpu_ms:.1f} ms of CPU per "
        "dispatch (the worker's and its commands' together), one core's worth "
        f"is about {1000 / cpu_ms:.0f} dispatches/s. "
        + stop_point(rows, args.threads)
        + " More worker processes use more cores (see Distributed workers).",
    ]
    if not all(row.outcome.exactly_once for row in rows):
        lines.append("NOT every dispatch ran exactly once: see the rows above.")
    return "\n".join(lines)


def stop_point(rows: list[Row], threads: int) -> str:
    """Say where doubling the concurrency stops paying, by the rows' rates."""
    for before, after in itertools.pairwise(rows):
        gain = before.run.wall_s / after.run.wall_s
        if after.level == 2 * before.level and gain < 1.5:
            return (
                f"Throughput stops growing near --concurrency {before.level}: "
                f"doubling it to {after.level} gave {gain:.2f} times the "
                "dispatches per second."
            )
    best = max(rows, key=lambda row: threads / row.run.wall_s)
    return f"Throughput still grew at --concurrency {best.level}, the highest tried."


if __name__ == "__main__":
    main()
