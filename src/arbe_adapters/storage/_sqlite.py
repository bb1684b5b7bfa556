"""SQLite storage: the embedded default, one file under the arbe home."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, final

from arbe_adapters.storage import _sql_repos as repos
from arbe_adapters.storage._migrations import LATEST, MIGRATIONS, statements
from arbe_core.errors import ArbeError, SchemaTooNew

#: Seconds a writer waits for another writer's lock before SQLite gives up.
BUSY_TIMEOUT_S = 60.0
#: Seconds between reads while tailing a thread (SQLite has no notifications).
POLL_INTERVAL_S = 0.05


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


@final
class SqliteUnitOfWork:
    """One SQLite transaction; writes take the lock up front (BEGIN IMMEDIATE).

    Taking the write lock at the start, not at the first write, means two
    writers queue on the busy timeout instead of one failing with
    "database is locked" when it tries to upgrade a read lock.
    """

    houses: repos.SqlHouses
    secrets: repos.SqlSecrets
    environments: repos.SqlEnvironments
    agents: repos.SqlAgents
    threads: repos.SqlThreads
    entries: repos.SqlEntries
    dispatches: repos.SqlDispatches
    audit: repos.SqlAudit

    def __init__(self, path: Path, write: bool) -> None:
        self._path = path
        self._write = write
        self._conn: sqlite3.Connection | None = None
        self._committed = False

    def _q(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        assert self._conn is not None, "use the unit of work in a with block"
        return self._conn.execute(sql, params)

    def __enter__(self) -> Self:
        self._conn = _connect(self._path)
        self._conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
        q = self._q
        self.houses = repos.SqlHouses(q)
        self.secrets = repos.SqlSecrets(q)
        self.environments = repos.SqlEnvironments(q)
        self.agents = repos.SqlAgents(q)
        self.threads = repos.SqlThreads(q)
        self.entries = repos.SqlEntries(q)
        self.dispatches = repos.SqlDispatches(q, skip_locked=False)
        self.audit = repos.SqlAudit(q)
        return self

    def commit(self) -> None:
        """Commit the transaction."""
        assert self._conn is not None
        self._conn.execute("COMMIT")
        self._committed = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not self._committed:
                conn.execute("ROLLBACK")
        finally:
            conn.close()


@final
class SqliteStorage:
    """Storage in one SQLite file, in WAL mode, with numbered migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._create_private(path)
        self._migrate()
        self._lock = threading.Lock()
        # When the last connection to a WAL database closes, SQLite copies
        # the WAL into the database and deletes it, and the next connection
        # creates it again. With one connection kept open here, a unit of
        # work's close is never the last, which cut a unit of work from about
        # 13 ms to 0.1 ms (benchmarks/dispatch_overhead.py). This connection
        # runs no statement, so it holds no lock.
        self._keeper: sqlite3.Connection | None = _connect(path)

    @staticmethod
    def _create_private(path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        os.close(fd)

    def _migrate(self) -> None:
        conn = _connect(self.path)
        try:
            version = self._schema_version(conn)
            if version > LATEST:
                raise SchemaTooNew(version, LATEST)
            if version == LATEST:
                return
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the lock: another process may have migrated.
                version = self._schema_version(conn)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                for number in sorted(MIGRATIONS):
                    if number > version:
                        for statement in statements(MIGRATIONS[number]["sqlite"]):
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO schema_migrations (version, applied_at) "
                            "VALUES (?, datetime('now'))",
                            (number,),
                        )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            msg = f"The database {str(self.path)!r} cannot be opened: {exc}."
            raise ArbeError(msg) from exc
        finally:
            conn.close()

    @staticmethod
    def _schema_version(conn: sqlite3.Connection) -> int:
        if not _has_table(conn, "schema_migrations"):
            return 0
        row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def unit_of_work(self, write: bool = True) -> SqliteUnitOfWork:
        """Return a unit of work; `write=False` reads without the write lock."""
        return SqliteUnitOfWork(self.path, write)

    def wait_for_entries(self, thread_id: str, after_seq: int, timeout: float) -> None:
        """Sleep up to `timeout` seconds, polling for an entry past `after_seq`."""
        deadline = time.monotonic() + timeout
        conn = _connect(self.path)
        try:
            while True:
                row = conn.execute(
                    "SELECT MAX(seq) FROM entries WHERE thread_id = ?", (thread_id,)
                ).fetchone()
                if (row[0] or 0) > after_seq:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                time.sleep(min(POLL_INTERVAL_S, remaining))
        finally:
            conn.close()

    def close(self) -> None:
        """Close the connection kept open for speed; idempotent.

        Each unit of work opens a connection of its own, so the storage still
        works after `close`, only slower.
        """
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None
