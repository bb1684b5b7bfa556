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


#: Idle connections a storage keeps for later units of work; more are closed.
MAX_IDLE_CONNECTIONS = 16


@final
class _ConnectionPool:
    """Idle connections to one database file, reused by units of work.

    Opening a connection costs more than a small transaction, because SQLite
    reads and parses the schema on a connection's first statement. Keeping
    connections open also keeps the WAL file. When the last connection to a
    WAL database closes, SQLite copies the WAL into the database, syncs it to
    disk and deletes it. benchmarks/sqlite_unit_of_work.py times both ways.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    def take(self) -> sqlite3.Connection:
        """Return an idle connection, or a new one when none is idle."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not share its parent's connections.
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return _connect(self._path)

    def give_back(self, conn: sqlite3.Connection) -> None:
        """Keep `conn` for reuse, or close it when the pool is closed or full."""
        with self._lock:
            keep = (
                not self._closed
                and self._pid == os.getpid()
                and len(self._idle) < MAX_IDLE_CONNECTIONS
                and not conn.in_transaction
            )
            if keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; later ones are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


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

    def __init__(self, pool: _ConnectionPool, write: bool) -> None:
        self._pool = pool
        self._write = write
        self._conn: sqlite3.Connection | None = None
        self._committed = False

    def _q(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        assert self._conn is not None, "use the unit of work in a with block"
        return self._conn.execute(sql, params)

    def __enter__(self) -> Self:
        conn = self._pool.take()
        try:
            conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
        except BaseException:
            self._pool.give_back(conn)
            raise
        self._conn = conn
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
        except BaseException:
            conn.close()
            raise
        self._pool.give_back(conn)


@final
class SqliteStorage:
    """Storage in one SQLite file, in WAL mode, with numbered migrations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._create_private(path)
        self._migrate()
        self._lock = threading.Lock()
        self._pool = _ConnectionPool(path)
        # One idle connection from the start, so that the WAL stays open
        # between units of work (see `_ConnectionPool`).
        self._pool.give_back(self._pool.take())

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
        return SqliteUnitOfWork(self._pool, write)

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
        """Close the idle connections; idempotent.

        The storage still works after `close`, only slower, because each unit
        of work then opens a connection of its own and closes it at the end.
        """
        self._pool.close()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None
