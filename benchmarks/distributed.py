"""Distributed: 1, 2 and 4 `arbe worker` processes sharing one house.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/distributed.py [--threads 200] [--sleeps 0.2,0]

For each engine and number of workers, a fresh house gets `--threads`
threads on one local environment. On PostgreSQL the house is in a schema of
its own, on SQLite in a new home. Each thread has one entry for the
`builtin/shell` bot, a command that sleeps and then appends the thread's id
to a log file in the sandbox. The workers (`arbe worker --once
--concurrency C`) start together and share the queue. The wall time runs
from the first start to the last exit.

A sleep of 0.2 s stands for the time a bot waits on its model and commands,
so it shows how waiting work spreads over workers. A sleep of 0 leaves only
arbe's own work, which the machine's cores bound.

Exactly once is checked from the sandbox side. The log must contain each
thread's id once, and every dispatch must have completed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import (
    DEFAULT_POSTGRES_URL,
    add_wait_option,
    command_line,
    machine,
    wait_until_quiet,
    write_section,
)
from _workers import Outcome, WorkerRun, check, queue_house, run_workers

#: Worker counts per engine. SQLite allows one writer at a time, so it is
#: run with fewer workers.
WORKERS = {"PostgreSQL": (1, 2, 4), "SQLite": (1, 2)}


class Schema:
    """A PostgreSQL schema of one run, dropped on exit."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.name = f"arbe_bench_{secrets.token_hex(4)}"
        separator = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{separator}options=-csearch_path%3D{self.name}"

    def __enter__(self) -> str:
        self._run("CREATE SCHEMA {}")
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._run("DROP SCHEMA IF EXISTS {} CASCADE")

    def _run(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(self.name)))


@attrs.frozen
class Row:
    """One engine, command sleep and number of workers, and how it went."""

    engine: str
    sleep: float
    workers: int
    run: WorkerRun
    outcome: Outcome


def run_one(
    engine: str, postgres_url: str, workers: int, args: argparse.Namespace, sleep: float
) -> Row:
    """Queue a fresh house on `engine` and let `workers` workers empty it."""
    with tempfile.TemporaryDirectory(prefix="arbe-bench-distributed-") as tmp:
        if engine == "PostgreSQL":
            with Schema(postgres_url) as url:
                house = queue_house(Path(tmp), url, args.threads, sleep)
                run = run_workers(house, workers, args.concurrency)
                outcome = check(house)
        else:
            house = queue_house(Path(tmp), None, args.threads, sleep)
            run = run_workers(house, workers, args.concurrency)
            outcome = check(house)
    return Row(engine, sleep, workers, run, outcome)


def main() -> None:
    """Run each engine with each number of workers and record the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--sleeps", default="0.2,0", help="Seconds, comma-separated.")
    parser.add_argument(
        "--concurrency", type=int, default=1, help="--concurrency of each worker."
    )
    parser.add_argument("--engines", default="postgres,sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ARBE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to use; a schema is created there and dropped.",
    )
    add_wait_option(parser)
    args = parser.parse_args()
    names = {"postgres": "PostgreSQL", "sqlite": "SQLite"}
    engines = [names[e] for e in args.engines.split(",")]
    load = wait_until_quiet(timeout_s=args.wait_s)

    rows = []
    for sleep in (float(s) for s in args.sleeps.split(",")):
        for engine in engines:
            for workers in WORKERS[engine]:
                row = run_one(engine, args.postgres_url, workers, args, sleep)
                rows.append(row)
                print(
                    f"{engine}, sleep {sleep:g} s, {workers} workers: "
                    f"{args.threads / row.run.wall_s:.1f} dispatches/s, "
                    f"exactly once: {row.outcome.exactly_once}",
                    file=sys.stderr,
                )
    write_section("distributed", report(args, load, rows))


def report(args: argparse.Namespace, load: str, rows: list[Row]) -> str:
    lines = [
        "## Distributed workers",
        "",
        f"Machine: {machine()}; {load}. {args.threads} `builtin/shell` "
        "dispatches on the local runtime, shared by `arbe worker --once "
        f"--concurrency {args.concurrency}` processes started together on this "
        "machine; PostgreSQL 127.0.0.1:5432 in a schema of its own. Wall time "
        "runs from the first start to the last exit, start-up included. "
        f"Command: `{command_line()}`.",
        "",
        "*Cores used* is the CPU time of the workers and their commands "
        "divided by the wall time; the PostgreSQL server's own CPU time is not "
        "in it. *Runs* counts the commands' lines in the sandbox's log, "
        "*distinct* the threads among them, *completed* the dispatches that "
        "ended completed, and *per worker* the dispatches each worker reported.",
        "",
        "| engine | command sleep s | workers | wall s | dispatches/s "
        "| speed-up over 1 worker | cores used | runs | distinct | completed "
        "| per worker |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    single: dict[tuple[str, float], float] = {}
    all_once = True
    for row in rows:
        rate = args.threads / row.run.wall_s
        if row.workers == 1:
            single[(row.engine, row.sleep)] = rate
        speedup = rate / single.get((row.engine, row.sleep), rate)
        all_once = all_once and row.outcome.exactly_once
        outcome = row.outcome
        lines.append(
            f"| {row.engine} | {row.sleep:g} | {row.workers} | {row.run.wall_s:.2f} "
            f"| {rate:.1f} | {speedup:.2f} | {row.run.cpu_s / row.run.wall_s:.2f} "
            f"| {outcome.runs} | {outcome.distinct} "
            f"| {outcome.completed} | {', '.join(str(c) for c in row.run.counts)} |"
        )
    lines += [
        "",
        "Every dispatch ran exactly once and completed in every row."
        if all_once
        else "NOT every dispatch ran exactly once: see the rows above.",
        f"This machine has {os.cpu_count()} cores, shared by the workers, "
        "their commands and the PostgreSQL server. With sleeping commands the "
        "workers mostly wait, so more of them run more dispatches at once. "
        "Without sleeping, a dispatch is CPU work (compare *cores used* with "
        "the cores), and more workers add their start-ups and waits for each "
        "other's locks more than throughput.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
