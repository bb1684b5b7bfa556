"""PostgreSQL storage: one database shared by many workers on many machines.

Units of work are READ COMMITTED transactions on pooled connections. Row locks,
not a stricter isolation level, close the races that matter. An entry append
locks its thread row (`FOR UPDATE`), so two writers never take the same seq.
A dispatch claim skips rows that another claim has locked
(`FOR UPDATE SKIP LOCKED`). Every entry insert sends `NOTIFY arbe_entries`
with the thread id (a trigger added by migration 2), which wakes
`wait_for_entries` when the inserting transaction commits.

This module imports psycopg at the top, so import it only when PostgreSQL is
selected. The package `arbe_adapters.storage` does not import it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Self, final

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from arbe_adapters.storage import _sql_repos as repos
from arbe_adapters.storage._migrations import LATEST, MIGRATIONS
from arbe_core.errors import (
    ConcurrentUpdate,
    InvalidInput,
    SchemaTooNew,
    Unavailable,
)

__all__ = ["PostgresStorage", "PostgresUnitOfWork"]

log = logging.getLogger("arbe.storage.postgres")

#: The notification channel that entry inserts send their thread id on.
# NOTE: channels are per database, not per schema, so arbe tables in several
# schemas of one database share this one. A waiter skips other thread ids and
# re-reads its thread on a match, so sharing costs work, not a wrong result.
CHANNEL = "arbe_entries"
#: Maximum seconds between reads of a thread's last seq while waiting, so a
#: missed notification delays a waiter by at most this long.
POLL_INTERVAL_S = 0.5
#: Seconds to wait for a new connection, and for the pool's first one.
CONNECT_TIMEOUT_S = 10
#: Key of the transaction-level advisory lock held while migrating.
#: Processes that open the same database at once apply migrations one by one.
MIGRATION_LOCK_KEY = 0x61726265  # "arbe" in ASCII

_LOCK_THREAD_SQL = "SELECT id FROM threads WHERE id = ? FOR UPDATE"

Connection = psycopg.Connection[Any]

# Errors that mean another transaction won a race, so the caller may retry.
# In psycopg 3.3 the deadlock and serialization errors are not subclasses of
# TransactionRollback (SQLSTATE class 40), so each is named.
_RACE_ERRORS = (
    pg_errors.UniqueViolation,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
    pg_errors.TransactionRollback,
)


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """Turn the shared repositories' `?` placeholders into psycopg's `%s`."""
    return sql.replace("%", "%%").replace("?", "%s")


def _scrub(text: str) -> str:
    """Remove passwords from text that may quote a URL or a conninfo string."""
    text = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)


def _reason(exc: BaseException) -> str:
    """Return the useful part of a psycopg error: its first line, no prefixes."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = text.rsplit(" failed: ", 1)[-1].removeprefix("connection is bad: ")
    text = re.sub(r"^FATAL:\s+", "", text)
    if text[:2].istitle():
        text = text[0].lower() + text[1:]
    return _scrub(text)


def _describe(url: str) -> str:
    """Return `HOST:PORT (database 'NAME')` for messages, without the password.

    Raises:
        InvalidInput: `url` is not a valid PostgreSQL URL.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        msg = (
            f"Invalid PostgreSQL URL ({_reason(exc)}); set ARBE_DATABASE_URL to "
            "postgresql://USER@HOST:PORT/DATABASE."
        )
        raise InvalidInput(msg) from exc
    port = params.get("port") or "5432"
    host = params.get("host")
    where = f"{host}:{port}" if host else f"the default socket (port {port})"
    database = params.get("dbname") or params.get("user") or "default"
    return f"{where} (database {database!r})"


def _connect(url: str, where: str, **kwargs: Any) -> Connection:
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **kwargs)
    except psycopg.OperationalError as exc:
        msg = (
            f"Cannot connect to PostgreSQL at {where}: {_reason(exc)}; start the "
            "server or correct the host, port, user and database in "
            "ARBE_DATABASE_URL."
        )
        raise Unavailable(msg) from exc


def _is_connection_error(exc: psycopg.OperationalError) -> bool:
    # Client-side failures have no SQLSTATE. Class 08 is a connection
    # exception and 57P a server shutdown. Other errors, such as a cancelled
    # statement (57014), are not about reaching the server.
    state = exc.sqlstate
    return state is None or state.startswith(("08", "57P"))


@contextlib.contextmanager
def _mapped_errors(where: str) -> Iterator[None]:
    """Map races to `ConcurrentUpdate` and lost connections to `Unavailable`.

    A unique violation means another transaction inserted the same key first
    (two first writes of one secret, for example). A deadlock or a
    serialization failure aborts one of two racing transactions. In every
    case the transaction is rolled back and the caller may retry.
    """
    try:
        yield
    except _RACE_ERRORS as exc:
        table = exc.diag.table_name
        what = f"the same {table} row" if table else "the same rows"
        msg = f"Another transaction changed {what} first; try again."
        raise ConcurrentUpdate(msg) from exc
    except PoolTimeout as exc:
        msg = (
            f"No connection to PostgreSQL at {where} became free in time: "
            f"{_reason(exc)}; check that the server is up, or open the storage "
            "with a larger max_size."
        )
        raise Unavailable(msg) from exc
    except psycopg.OperationalError as exc:
        if not _is_connection_error(exc):
            raise
        msg = (
            f"Lost the connection to PostgreSQL at {where}: {_reason(exc)}; check "
            "that the server is up and try again."
        )
        raise Unavailable(msg) from exc


@final
class PostgresUnitOfWork:
    """One READ COMMITTED transaction on a connection taken from the pool.

    With `write=True`, `entries.last_seq` locks the thread row until the
    transaction ends, so concurrent appends to one thread queue up instead of
    taking the same seq.
    """

    def __init__(self, pool: ConnectionPool[Connection], where: str, write: bool):
        self._pool = pool
        self._where = where
        self._write = write
        self._conn: Connection | None = None
        self._committed = False

    def _q(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        assert self._conn is not None, "use the unit of work in a with block"
        with _mapped_errors(self._where):
            return self._conn.execute(_placeholders(sql), params)

    def __enter__(self) -> Self:
        with _mapped_errors(self._where):
            self._conn = self._pool.getconn()
        q = self._q
        self.houses = repos.SqlHouses(q)
        self.secrets = repos.SqlSecrets(q)
        self.environments = repos.SqlEnvironments(q)
        self.agents = repos.SqlAgents(q)
        self.threads = repos.SqlThreads(q)
        lock_sql = _LOCK_THREAD_SQL if self._write else None
        self.entries = repos.SqlEntries(q, lock_thread_sql=lock_sql)
        self.dispatches = repos.SqlDispatches(q, skip_locked=True)
        self.audit = repos.SqlAudit(q)
        return self

    def commit(self) -> None:
        """Commit the transaction.

        Raises:
            ConcurrentUpdate: the commit lost a race with another transaction.
            Unavailable: the connection to the server was lost.
        """
        assert self._conn is not None, "use the unit of work in a with block"
        with _mapped_errors(self._where):
            self._conn.commit()
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
            if not self._committed and not conn.closed:
                conn.rollback()
        except psycopg.OperationalError:
            # The connection broke; the pool discards it when it comes back.
            log.debug("rollback failed on a broken connection", exc_info=True)
        finally:
            self._pool.putconn(conn)


@final
class PostgresStorage:
    """Storage in a PostgreSQL database, with a connection pool.

    Opening the storage applies pending migrations, so the first process to
    open an empty database creates the tables. Tables go into the first
    existing schema of the connection's `search_path`. Choose one with
    `?options=-csearch_path%3DNAME` in the URL.
    """

    def __init__(
        self,
        url: str,
        min_size: int = 1,
        max_size: int = 10,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        """Connect, apply pending migrations and open the pool.

        Args:
            url: a `postgresql://` URL.
            min_size: connections the pool keeps open.
            max_size: connections the pool opens at most. A unit of work
                waits up to 30 s for a free one.
            poll_interval_s: maximum seconds between reads of a thread's last
                seq in `wait_for_entries`.

        Raises:
            InvalidInput: `url` is not a valid PostgreSQL URL, or its
                `search_path` names no existing schema.
            Unavailable: the server cannot be reached or rejects the login.
            SchemaTooNew: the database was migrated by a newer arbe; nothing
                was changed.
        """
        self._url = url
        self._where = _describe(url)
        self._poll_interval_s = poll_interval_s
        with _connect(url, self._where, autocommit=True) as conn:
            _migrate(conn, self._where)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name="arbe",
            kwargs={"connect_timeout": CONNECT_TIMEOUT_S},
            configure=_configure,
            check=ConnectionPool.check_connection,
        )
        try:
            with _mapped_errors(self._where):
                self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            self._pool.close()
            raise
        self._listener: Connection | None = None
        self._listener_lock = threading.Lock()

    def unit_of_work(self, write: bool = True) -> PostgresUnitOfWork:
        """Return a unit of work. With `write=False`, `last_seq` locks no thread."""
        return PostgresUnitOfWork(self._pool, self._where, write)

    def wait_for_entries(self, thread_id: str, after_seq: int, timeout: float) -> None:
        """Block until the thread has an entry past `after_seq`, or `timeout` passes.

        A notification on `arbe_entries` wakes the wait as soon as an entry
        commits. The thread's last seq is also read at least every
        `poll_interval_s`, so a missed notification (for example after the
        listening connection dropped) delays the wake-up by at most that long.

        Raises:
            Unavailable: the connection to the server was lost.
        """
        deadline = time.monotonic() + timeout
        with self._listening() as conn, _mapped_errors(self._where):
            while _last_seq(conn, thread_id) <= after_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                _wait_for_notify(conn, thread_id, min(self._poll_interval_s, remaining))

    @contextlib.contextmanager
    def _listening(self) -> Iterator[Connection]:
        """Yield a connection that listens on `CHANNEL`.

        One listening connection is kept and reused across waits. A wait that
        finds it in use by another thread opens a connection of its own and
        closes it afterwards.
        """
        if not self._listener_lock.acquire(blocking=False):
            with self._listen() as private:
                yield private
            return
        try:
            if self._listener is None or self._listener.closed:
                self._listener = self._listen()
            yield self._listener
        except BaseException:
            # The connection may be broken or stuck mid-wait, so the next wait
            # opens a new one.
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            raise
        finally:
            self._listener_lock.release()

    def _listen(self) -> Connection:
        conn = _connect(self._url, self._where, autocommit=True)
        with _mapped_errors(self._where):
            conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def close(self) -> None:
        """Close the pool and the listening connection. Closing twice is harmless."""
        self._pool.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()


def _configure(conn: Connection) -> None:
    # Set it rather than rely on the server's default_transaction_isolation,
    # because the row locks above are what make READ COMMITTED safe here.
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED


def _last_seq(conn: Connection, thread_id: str) -> int:
    row = conn.execute(
        "SELECT MAX(seq) FROM entries WHERE thread_id = %s", (thread_id,)
    ).fetchone()
    return int(row[0] or 0) if row else 0


def _wait_for_notify(conn: Connection, thread_id: str, timeout: float) -> None:
    """Return when a notification for `thread_id` arrives, or after `timeout` s.

    Notifications for other threads are skipped. Ones that arrived while no
    wait was running are kept by psycopg and returned first.
    """
    for notify in conn.notifies(timeout=timeout):
        if notify.payload == thread_id:
            return


def _migrate(conn: Connection, where: str) -> None:
    """Apply pending migrations under an advisory lock, recording each one.

    Raises:
        InvalidInput: the `search_path` names no existing schema.
        SchemaTooNew: the database is newer than this arbe. Nothing is changed.
    """
    with _mapped_errors(where):
        row = conn.execute("SELECT current_schema()").fetchone()
        if row is None or row[0] is None:
            msg = (
                f"PostgreSQL at {where} has no schema for arbe's tables because "
                "the search_path names none that exists; create the schema or "
                "fix the options in ARBE_DATABASE_URL."
            )
            raise InvalidInput(msg)
        version = _schema_version(conn)
        if version > LATEST:
            raise SchemaTooNew(version, LATEST)
        if version == LATEST:
            return
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            # Read again under the lock, because another process may have
            # migrated meanwhile.
            version = _schema_version(conn)
            if version > LATEST:
                raise SchemaTooNew(version, LATEST)
            for number in sorted(n for n in MIGRATIONS if n > version):
                conn.execute(MIGRATIONS[number]["postgres"])
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) "
                    "VALUES (%s, now())",
                    (number,),
                )
                log.info("applied migration %d to PostgreSQL at %s", number, where)


def _schema_version(conn: Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if row is None or row[0] is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0) if row else 0
