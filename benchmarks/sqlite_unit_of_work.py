"""SQLite unit of work: the cost of a transaction, with and without pooled connections.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/sqlite_unit_of_work.py [--runs 300]

`SqliteStorage` keeps idle connections in a pool and hands one to each unit
of work. Without the pool, every unit of work would open a connection and
close it at the end. SQLite reads and parses the schema on the first
statement of each new connection. And when the last connection to a database
in WAL mode closes, SQLite checkpoints the WAL into the database file, syncs
it and deletes it. This script times a small write transaction (one upsert and a
commit) and a read transaction both ways in the same run: on an open
storage, and on the same kind of storage after `close()`, whose units of
work each open and close a connection of their own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import (
    add_wait_option,
    command_line,
    machine,
    row,
    wait_until_quiet,
    write_section,
)

from arbe_adapters.storage import SqliteStorage


def write_once(storage: SqliteStorage, number: int) -> None:
    with storage.unit_of_work() as uow:
        uow.houses.set_setting(f"bench.{number % 10}", str(number))
        uow.commit()


def read_once(storage: SqliteStorage, number: int) -> None:
    with storage.unit_of_work(write=False) as uow:
        uow.houses.get_setting(f"bench.{number % 10}")


def timed(fn: Callable[[SqliteStorage, int], None], storage: SqliteStorage) -> float:
    started = time.perf_counter()
    fn(storage, int(started * 1000))
    return (time.perf_counter() - started) * 1000


def main() -> None:
    """Time both ways, taking turns, and record the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    add_wait_option(parser)
    args = parser.parse_args()
    load = wait_until_quiet(timeout_s=args.wait_s)

    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="arbe-bench-sqlite-") as tmp:
        pooled = SqliteStorage(Path(tmp) / "pooled.db")
        dropped = SqliteStorage(Path(tmp) / "dropped.db")
        dropped.close()
        ways = {
            "write, pooled connection (the default)": (write_once, pooled),
            "write, a new connection each time (after `close()`)": (
                write_once,
                dropped,
            ),
            "read, pooled connection (the default)": (read_once, pooled),
            "read, a new connection each time (after `close()`)": (read_once, dropped),
        }
        for index in range(args.runs + 5):
            for label, (fn, storage) in ways.items():
                elapsed = timed(fn, storage)
                if index >= 5:
                    times.setdefault(label, []).append(elapsed)
        pooled.close()

    lines = [
        "## SQLite unit of work",
        "",
        f"Machine: {machine()}; {load}. {args.runs} units of work each way, "
        f"taking turns, after 5 warm-ups. Command: `{command_line()}`.",
        "",
        "| unit of work | median ms | p10 ms | p90 ms |",
        "|---|---|---|---|",
        *(row(label, values, digits=2) for label, values in times.items()),
    ]
    write_section("sqlite-unit-of-work", "\n".join(lines))
    for label, values in times.items():
        print(f"{label}: {statistics.median(values):.2f} ms", file=sys.stderr)


if __name__ == "__main__":
    main()
