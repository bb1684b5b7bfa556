"""Storage growth: the hot queries stay flat as a house grows to 1,000,000 entries.

Run from the repository root with the project's venv:

    .venv/bin/python benchmarks/storage_growth.py [--small] [--engines sqlite,postgres]

One house per size gets, by default, 10,000, 100,000 and 1,000,000 entries
(100 entries per thread, so 100, 1,000 and 10,000 threads, each with one
completed dispatch), each in a database (SQLite) or schema (PostgreSQL) of
its own. Rows are seeded with bulk SQL (`executemany` on SQLite, `COPY` on
PostgreSQL) straight into arbe's own schema. `--small` divides every size by
10, which leaves the smallest house 10 threads, fewer than the 50 that
`thread list` shows, so its list is shorter than the others. The houses are then timed taking turns, one run of each operation on
each house per round, so that a change in the machine's speed during the
run hits every size alike.

On each house the script times, through arbe's services in this process:

- `thread list`: `ThreadService.list(50)`, what `arbe thread list` runs;
- `entries read`: all entries of one thread, what
  `arbe thread entries read ID --no-follow` runs;
- `append`: `ThreadService.post` of a new user entry to an existing thread,
  which also queues its dispatch;
- `claim`: a worker claiming that dispatch (it is then marked completed);

and `arbe thread list --json` and `arbe thread entries read ID --no-follow
--json` as whole processes. Every statement that these operations run is
shown with its query plan at the largest size (`EXPLAIN QUERY PLAN` on
SQLite, `EXPLAIN` on PostgreSQL), so a full scan shows up on the page.

PostgreSQL runs in a schema of its own on the server given by `--postgres-url`
(default: the local test server), dropped at the end. The PostgreSQL tables
are analyzed after seeding, as autovacuum would do after a bulk load; SQLite
gets no ANALYZE, because arbe runs none.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import (
    DEFAULT_POSTGRES_URL,
    OtherLoad,
    add_wait_option,
    command_line,
    machine,
    summary,
    time_command,
    wait_until_quiet,
    write_section,
)

from arbe_core.models import DispatchState
from arbe_entry.app import Arbe
from arbe_entry.config import Settings

ENTRIES_PER_THREAD = 100
OPERATIONS = ("thread list", "entries read", "append", "claim")
BASE_TIME = datetime(2025, 1, 1, tzinfo=UTC)
ARBE = str(Path(sys.executable).with_name("arbe"))


def ts(value: datetime) -> str:
    """Format a time as arbe stores it: fixed-width UTC text."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def seed_id(prefix: str, number: int) -> str:
    """Return an id shaped like arbe's time-ordered ids, ordered by `number`."""
    return f"{prefix}_{0x0190_0000_0000 + number:012x}{number:012x}"


# --- Engines -------------------------------------------------------------------


class Engine:
    """One storage engine: how to open a house on it and bulk-load rows."""

    name = ""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.arbe: Arbe | None = None

    def settings(self) -> Settings:
        return Settings(home=self.home, plugins="")

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBE_")}
        env.update({"ARBE_HOME": str(self.home), "ARBE_PLUGINS": ""})
        return env

    def open(self) -> Arbe:
        self.arbe = Arbe(self.settings())
        return self.arbe

    def bulk(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def explain(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        raise NotImplementedError

    def recorder(self) -> type:
        raise NotImplementedError

    def close(self) -> None:
        if self.arbe is not None:
            self.arbe.close()


class SqliteEngine(Engine):
    name = "SQLite"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "arbe.db", isolation_level=None)

    def bulk(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            marks = ", ".join("?" for _ in columns)
            # The table and column names are this script's constants.
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            conn.executemany(insert, rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def explain(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        conn = self._connect()
        try:
            rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        finally:
            conn.close()
        return [str(r[3]) for r in rows]

    def recorder(self) -> type:
        from arbe_adapters.storage._sqlite import SqliteUnitOfWork

        return SqliteUnitOfWork


class PostgresEngine(Engine):
    name = "PostgreSQL"

    def __init__(self, home: Path, base_url: str) -> None:
        super().__init__(home)
        import psycopg
        from psycopg import sql

        self.base_url = base_url
        self.schema = f"arbe_bench_{secrets.token_hex(4)}"
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
            )
        separator = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{separator}options=-csearch_path%3D{self.schema}"

    def settings(self) -> Settings:
        return Settings(home=self.home, database_url=self.url, plugins="")

    def cli_env(self) -> dict[str, str]:
        return {**super().cli_env(), "ARBE_DATABASE_URL": self.url}

    def bulk(self, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        import psycopg

        with psycopg.connect(self.url) as conn:
            # Seeding turns triggers off, because one NOTIFY per seeded entry
            # would only slow the load. The rows meet the foreign keys anyway.
            conn.execute("SET session_replication_role = replica")
            with conn.cursor().copy(
                f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            ) as copy:
                for values in rows:
                    copy.write_row(values)
            conn.commit()

    def analyze(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("ANALYZE")

    def explain(self, sql: str, params: tuple[Any, ...]) -> list[str]:
        import psycopg

        from arbe_adapters.storage.postgres import _placeholders

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute("EXPLAIN " + _placeholders(sql), params).fetchall()
        return [re.sub(r"\s+\(cost=[^)]*\)", "", str(r[0])).strip() for r in rows]

    def recorder(self) -> type:
        from arbe_adapters.storage.postgres import PostgresUnitOfWork

        return PostgresUnitOfWork

    def close(self) -> None:
        super().close()
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(self.schema)
                )
            )


# --- Seeding -------------------------------------------------------------------


def seed(engine: Engine, house_id: str, first: int, last: int) -> None:
    """Add threads `first` to `last - 1`, each with its entries and a dispatch."""
    threads, entries, dispatches = [], [], []
    for number in range(first, last):
        thread_id = seed_id("thr", number)
        created = BASE_TIME + timedelta(seconds=number)
        threads.append((thread_id, house_id, f"seed-{number}", None, None, ts(created)))
        for seq in range(1, ENTRIES_PER_THREAD + 1):
            at = ts(created + timedelta(milliseconds=seq))
            if seq % 2:
                author, kind, body, data = "user:bench", "message", "echo seed", None
            else:
                author, kind, body = "bot:arbe", "message", "Exit code 0.\nseed"
                data = json.dumps({"model": "builtin/shell"})
            entry_id = seed_id("ent", number * ENTRIES_PER_THREAD + seq)
            entries.append((entry_id, thread_id, seq, author, kind, body, data, at))
        done = ts(created + timedelta(milliseconds=ENTRIES_PER_THREAD + 1))
        dispatches.append(
            (
                seed_id("dsp", number),
                thread_id,
                house_id,
                1,
                "completed",
                ts(created),
                done,
                "seed-worker",
                None,
                1,
                None,
            )
        )
    engine.bulk(
        "threads",
        ["id", "house_id", "parent_ref", "env", "model", "created_at"],
        threads,
    )
    engine.bulk(
        "entries",
        ["id", "thread_id", "seq", "author", "kind", "body", "data", "created_at"],
        entries,
    )
    engine.bulk(
        "dispatches",
        [
            "id",
            "thread_id",
            "house_id",
            "trigger_seq",
            "state",
            "created_at",
            "updated_at",
            "lease_owner",
            "lease_expires_at",
            "attempts",
            "error",
        ],
        dispatches,
    )


# --- Measuring -----------------------------------------------------------------


@contextlib.contextmanager
def recording(unit_of_work: type) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Record every statement that units of work of this class run."""
    seen: list[tuple[str, tuple[Any, ...]]] = []
    original = unit_of_work._q

    def q(self: Any, sql: str, params: Any = ()) -> Any:
        seen.append((sql, tuple(params)))
        return original(self, sql, params)

    unit_of_work._q = q
    try:
        yield seen
    finally:
        unit_of_work._q = original


def operations(arbe: Arbe, thread_count: int) -> dict[str, Callable[[], None]]:
    """Return the timed operations; `append` and `claim` alternate."""
    worker = arbe.worker(owner="bench-worker")
    rng = random.Random(7)

    def thread_list() -> None:
        assert len(arbe.threads.list(50)) == min(50, thread_count)

    def entries_read() -> None:
        thread_id = seed_id("thr", rng.randrange(thread_count))
        assert len(arbe.threads.entries(thread_id, 0, 1_000_000)) >= 100

    def append() -> None:
        thread_id = seed_id("thr", rng.randrange(thread_count))
        arbe.threads.post(thread_id, "echo bench")

    def claim() -> None:
        dispatch = worker.claim()
        assert dispatch is not None
        with arbe.deps.storage.unit_of_work() as uow:
            uow.dispatches.finish(
                dispatch.id,
                worker.owner,
                DispatchState.COMPLETED,
                None,
                arbe.deps.clock.now(),
            )
            uow.commit()

    return {
        "thread list": thread_list,
        "entries read": entries_read,
        "append": append,
        "claim": claim,
    }


def time_operations(
    arbes: list[Arbe], thread_counts: list[int], runs: int
) -> list[dict[str, list[float]]]:
    """Time each house's operations, taking turns between the houses.

    Taking turns spreads any change in the machine's speed over all sizes
    alike, so a difference between sizes comes from the sizes.
    """
    ops = [operations(a, n) for a, n in zip(arbes, thread_counts, strict=True)]
    times: list[dict[str, list[float]]] = [
        {name: [] for name in OPERATIONS} for _ in ops
    ]
    for index in range(runs + 3):
        for house_ops, house_times in zip(ops, times, strict=True):
            for name in OPERATIONS:
                started = time.perf_counter()
                house_ops[name]()
                elapsed = (time.perf_counter() - started) * 1000
                if index >= 3:
                    house_times[name].append(elapsed)
    return times


def time_cli(
    engines: list[Engine], thread_counts: list[int], runs: int
) -> list[dict[str, list[float]]]:
    """Time the CLI commands on each house, taking turns between the houses."""
    commands: list[dict[str, list[str]]] = []
    for engine, threads in zip(engines, thread_counts, strict=True):
        thread_id = seed_id("thr", threads // 2)
        house_commands = {
            "cli thread list": [ARBE, "thread", "list", "--json"],
            "cli entries read": [
                ARBE,
                "thread",
                "entries",
                "read",
                thread_id,
                "--no-follow",
                "--json",
            ],
        }
        if isinstance(engine, PostgresEngine):
            house_commands["cli: import psycopg alone"] = [
                sys.executable,
                "-c",
                "import psycopg, psycopg_pool",
            ]
        commands.append(house_commands)
    times: list[dict[str, list[float]]] = [{name: [] for name in c} for c in commands]
    for index in range(runs + 1):
        for engine, house_commands, house_times in zip(
            engines, commands, times, strict=True
        ):
            env = engine.cli_env()
            for name, argv in house_commands.items():
                elapsed = time_command(argv, 1, env, warmup=0)[0]
                if index >= 1:
                    house_times[name].append(elapsed)
    return times


def plans(engine: Engine, arbe: Arbe, thread_count: int) -> dict[str, list[str]]:
    """Return each operation's statements with their query plans."""
    ops = operations(arbe, thread_count)
    found: dict[str, list[str]] = {}
    for name in OPERATIONS:
        with recording(engine.recorder()) as seen:
            ops[name]()
        lines: list[str] = []
        done: set[str] = set()
        for sql, params in seen:
            verb = sql.split(None, 1)[0].upper()
            if verb not in ("SELECT", "UPDATE", "DELETE") or sql in done:
                continue
            done.add(sql)
            plan = "; ".join(engine.explain(sql, params))
            lines.append(f"`{shorten(sql)}` → {plan}")
        found[name] = lines
    return found


def shorten(sql: str) -> str:
    sql = re.sub(r"SELECT .*? FROM", "SELECT … FROM", " ".join(sql.split()))
    return sql if len(sql) < 150 else sql[:147] + "…"


def full_scans(plan_lines: list[str]) -> list[str]:
    """Return the plan lines that read a whole table."""
    bad = []
    for line in plan_lines:
        plan = line.split(" → ", 1)[1]
        if re.search(r"\bSCAN \w+(?! USING)(?:;|$)", plan) or "Seq Scan" in plan:
            bad.append(line)
    return bad


def run_engine(
    engines: list[Engine], sizes: list[int], runs: int, cli_runs: int
) -> dict[str, Any]:
    """Seed one house per size, one engine each, then time them taking turns."""
    arbes, thread_counts, seeded = [], [], []
    for engine, size in zip(engines, sizes, strict=True):
        arbe = engine.open()
        threads = size // ENTRIES_PER_THREAD
        started = time.perf_counter()
        seed(engine, arbe.house.id, 0, threads)
        if isinstance(engine, PostgresEngine):
            engine.analyze()
        seeded.append(time.perf_counter() - started)
        print(
            f"{engine.name}: {size:,} entries seeded in {seeded[-1]:.1f} s",
            file=sys.stderr,
        )
        arbes.append(arbe)
        thread_counts.append(threads)

    with OtherLoad() as other:
        times = time_operations(arbes, thread_counts, runs)
    for house_times, cli_times in zip(
        times, time_cli(engines, thread_counts, cli_runs), strict=True
    ):
        house_times.update(cli_times)
    for size, house_times in zip(sizes, times, strict=True):
        print(f"{engines[0].name}, {size:,} entries:", file=sys.stderr)
        for name, values in house_times.items():
            print(f"  {name}: {statistics.median(values):.2f} ms", file=sys.stderr)
    return {
        "sizes": list(zip(sizes, thread_counts, seeded, times, strict=True)),
        "load": other.cores,
        "plans": plans(engines[-1], arbes[-1], thread_counts[-1]),
    }


# --- Report --------------------------------------------------------------------


def report(
    args: argparse.Namespace, load: str, results: dict[str, dict[str, Any]]
) -> str:
    lines = [
        "## Storage growth",
        "",
        f"Machine: {machine()}; {load}. One house per size "
        f"({ENTRIES_PER_THREAD} entries per thread, one completed dispatch per "
        f"thread), timed taking turns: {args.runs} runs of each operation per "
        f"size after 3 warm-ups, and {args.cli_runs} runs of each CLI command "
        f"after 1. Command: `{command_line()}`.",
        "",
        "In-process operations time arbe's services alone. The CLI rows are "
        "whole processes, start-up included. On PostgreSQL, *import psycopg "
        "alone* is a Python process that only imports the PostgreSQL driver "
        "and its pool, which the CLI does when `ARBE_DATABASE_URL` is set. "
        "*Other processes' load* is the CPU time that processes other than "
        "this script and its children used while the in-process operations "
        "were timed, in cores. On PostgreSQL it includes the server answering "
        "the script. Times in ms: median (p10 to p90).",
    ]
    for engine, result in results.items():
        names = [name for name in result["sizes"][0][3] if name in OPERATIONS]
        names += [name for name in result["sizes"][0][3] if name.startswith("cli")]
        sizes = result["sizes"]
        lines += [
            "",
            f"### {engine}",
            "",
            "| operation | "
            + " | ".join(f"{s:,} entries, {t:,} threads" for s, t, _, _ in sizes)
            + " | largest / smallest |",
            "|---|" + "---|" * (len(sizes) + 1),
        ]
        for name in names:
            cells = []
            for _, _, _, times in sizes:
                median, low, high = summary(times[name])
                cells.append(f"{median:.2f} ({low:.2f} to {high:.2f})")
            first = statistics.median(sizes[0][3][name])
            last = statistics.median(sizes[-1][3][name])
            lines.append(f"| {name} | {' | '.join(cells)} | {last / first:.2f} |")
        cores = result["load"]
        lines += [
            "",
            "Other processes' load while the in-process operations were timed: "
            + ("not measured." if cores is None else f"{cores:.2f} cores."),
        ]
        seeding = ", ".join(f"{s:,} in {sec:.0f} s" for s, _, sec, _ in sizes)
        lines += [
            "",
            f"Seeding took: {seeding}.",
            "",
            "Query plans at the largest size:",
            "",
        ]
        scans: list[str] = []
        for name in OPERATIONS:
            for plan in result["plans"][name]:
                lines.append(f"- {name}: {plan}")
            scans += full_scans(result["plans"][name])
        worst = max(
            statistics.median(sizes[-1][3][name]) / statistics.median(sizes[0][3][name])
            for name in OPERATIONS
        )
        lines += [
            "",
            "Full table scans: " + ("none." if not scans else "; ".join(scans)),
            f"At {sizes[-1][0] // sizes[0][0]} times the smallest size, each "
            f"in-process operation took at most {worst:.2f} times as long at the "
            "median.",
        ]
    return "\n".join(lines)


def main() -> None:
    """Grow a house on each engine, time it, and record the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="Divide sizes by 10.")
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ARBE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="PostgreSQL server to use; a schema is created there and dropped.",
    )
    add_wait_option(parser)
    args = parser.parse_args()
    scale = 10 if args.small else 1
    sizes = [10_000 // scale, 100_000 // scale, 1_000_000 // scale]
    load = wait_until_quiet(timeout_s=args.wait_s)

    results: dict[str, dict[str, Any]] = {}
    for name in args.engines.split(","):
        if name not in ("sqlite", "postgres"):
            parser.error(f"unknown engine {name!r}; use sqlite or postgres")
        with tempfile.TemporaryDirectory(prefix="arbe-bench-storage-") as tmp:
            engines: list[Engine] = []
            try:
                for size in sizes:
                    home = Path(tmp) / str(size)
                    home.mkdir()
                    if name == "sqlite":
                        engines.append(SqliteEngine(home))
                    else:
                        engines.append(PostgresEngine(home, args.postgres_url))
                result = run_engine(engines, sizes, args.runs, args.cli_runs)
                results[engines[0].name] = result
            finally:
                for engine in engines:
                    engine.close()
    write_section("storage-growth", report(args, load, results))


if __name__ == "__main__":
    main()
