"""PostgreSQL storage beyond the shared contract: many processes on one database.

Each test gets its own schema from `postgres_url`; separate `PostgresStorage`
objects stand in for separate worker processes, each with its own pool.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from arbe_adapters.crypto import AesGcmSealer
from arbe_adapters.storage._migrations import LATEST
from arbe_adapters.storage.postgres import (
    POLL_INTERVAL_S,
    PostgresStorage,
    _mapped_errors,
)
from arbe_adapters.system import TimeOrderedIds
from arbe_core.errors import (
    ConcurrentUpdate,
    InvalidInput,
    MasterKeyMismatch,
    SchemaTooNew,
    Unavailable,
)
from arbe_core.models import (
    Dispatch,
    DispatchState,
    Entry,
    EntryKind,
    House,
    Secret,
    SecretAudience,
    Thread,
)
from arbe_core.services import Deps
from arbe_core.services.threads import append_entry
from arbe_entry import open_house
from tests.helpers import FakeClock, run_arbe

OpenStorage = Callable[..., PostgresStorage]

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUSE_ID = "hse_1"
THREAD_ID = "thr_1"
TABLES = {
    "agents",
    "audit",
    "dispatches",
    "entries",
    "environments",
    "houses",
    "schema_migrations",
    "secret_versions",
    "secrets",
    "settings",
    "threads",
}
#: Seconds a background thread of a test may run before the test fails.
JOIN_TIMEOUT_S = 20


@contextmanager
def raw(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Open a plain autocommit connection on the test's schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def schema_state(url: str) -> tuple[list[str], list[int], list[str]]:
    """Return the schema's tables, recorded migrations and triggers."""
    with raw(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() ORDER BY table_name"
        ).fetchall()
        migrations: list[tuple[int]] = []
        if any(t[0] == "schema_migrations" for t in tables):
            migrations = conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
        triggers = conn.execute(
            "SELECT trigger_name FROM information_schema.triggers "
            "WHERE trigger_schema = current_schema() ORDER BY trigger_name"
        ).fetchall()
    return [t[0] for t in tables], [m[0] for m in migrations], [t[0] for t in triggers]


def seed_thread(storage: PostgresStorage) -> None:
    """Store the house `hse_1` with the thread `thr_1`."""
    with storage.unit_of_work() as uow:
        uow.houses.add(House(id=HOUSE_ID, name="acme", created_at=T0), b"key")
        uow.threads.add(
            Thread(
                id=THREAD_ID,
                house_id=HOUSE_ID,
                parent_ref=None,
                env=None,
                model=None,
                created_at=T0,
            )
        )
        uow.commit()


def append(storage: PostgresStorage, body: str) -> Entry:
    """Append a user entry to `thr_1` and commit it."""
    deps = Deps(storage, AesGcmSealer(bytes(32)), FakeClock(), TimeOrderedIds())
    with storage.unit_of_work() as uow:
        entry = append_entry(deps, uow, THREAD_ID, "user:ada", EntryKind.MESSAGE, body)
        uow.commit()
    return entry


def run_in_threads(
    count: int, target: Callable[[int], object]
) -> list[BaseException | None]:
    """Run `target(i)` in `count` threads that start together; return their errors."""
    barrier = threading.Barrier(count)
    errors: list[BaseException | None] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN_TIMEOUT_S)
            target(index)
        except BaseException as exc:  # reported by the test's assert
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    return errors


class WaitInThread:
    """Call `wait_for_entries` in a background thread and record when it returns."""

    def __init__(self, storage: PostgresStorage, timeout: float = 10.0) -> None:
        self.returned_at: float | None = None
        self.thread = threading.Thread(
            target=self._wait, args=(storage, timeout), daemon=True
        )
        self.thread.start()

    def _wait(self, storage: PostgresStorage, timeout: float) -> None:
        storage.wait_for_entries(THREAD_ID, 0, timeout)
        self.returned_at = time.monotonic()

    def join(self) -> float:
        self.thread.join(timeout=JOIN_TIMEOUT_S)
        assert self.returned_at is not None, "wait_for_entries did not return"
        return self.returned_at


def closed_port() -> int:
    """Return a port on 127.0.0.1 that nothing listens on (it was just freed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.postgres
class TestPostgresMigrations:
    def test_concurrent_open_migrates_once(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        """Four processes opening a fresh schema at once create one set of tables."""
        errors = run_in_threads(4, lambda _: postgres_storage())

        tables, migrations, triggers = schema_state(postgres_url)
        assert errors == [None] * 4
        assert set(tables) == TABLES
        assert migrations == list(range(1, LATEST + 1))
        assert triggers == ["entries_notify"]

    def test_reopen_applies_nothing(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        seed_thread(postgres_storage())
        before = schema_state(postgres_url)

        reopened = postgres_storage()

        assert schema_state(postgres_url) == before
        with reopened.unit_of_work(write=False) as uow:
            assert uow.threads.get(THREAD_ID) is not None

    def test_schema_too_new_changes_nothing(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        postgres_storage().close()
        with raw(postgres_url) as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) "
                "VALUES (%s, now())",
                (LATEST + 1,),
            )
        before = schema_state(postgres_url)

        with pytest.raises(SchemaTooNew) as caught:
            PostgresStorage(postgres_url)

        assert caught.value.found == LATEST + 1
        assert caught.value.known == LATEST
        assert schema_state(postgres_url) == before

    def test_schema_too_new_creates_no_tables(self, postgres_url: str) -> None:
        """A schema that only records a newer migration gets no tables of ours."""
        with raw(postgres_url) as conn:
            conn.execute(
                "CREATE TABLE schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            conn.execute("INSERT INTO schema_migrations VALUES (%s, now())", (99,))

        with pytest.raises(SchemaTooNew):
            PostgresStorage(postgres_url)

        assert schema_state(postgres_url) == (["schema_migrations"], [99], [])

    def test_missing_schema_rejected(self, postgres_url: str) -> None:
        url = postgres_url.replace("arbe_test_", "arbe_missing_")

        with pytest.raises(InvalidInput) as caught:
            PostgresStorage(url)

        assert "search_path names none that exists" in caught.value.message


class TestPostgresConnectErrors:
    def test_unreachable_server_names_host_port(self) -> None:
        port = closed_port()
        url = f"postgresql://postgres:sk-test-123@127.0.0.1:{port}/test"

        with pytest.raises(Unavailable) as caught:
            PostgresStorage(url)

        message = caught.value.message
        assert message.startswith(
            f"Cannot connect to PostgreSQL at 127.0.0.1:{port} (database 'test'): "
            "connection refused;"
        )
        assert "ARBE_DATABASE_URL" in message
        assert "sk-test-123" not in message
        assert ". " not in message, "one sentence"

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://postgres:sk-test-123@127.0.0.1:5432/test?bogus=1",
            "postgresql://postgres:sk-test-123@[::1/test",
        ],
    )
    def test_invalid_url_rejected(self, url: str) -> None:
        with pytest.raises(InvalidInput) as caught:
            PostgresStorage(url)

        assert caught.value.message.startswith("Invalid PostgreSQL URL (")
        assert "postgresql://USER@HOST:PORT/DATABASE" in caught.value.message
        assert "sk-test-123" not in caught.value.message

    def test_mapped_errors_maps_races_and_lost_connections(self) -> None:
        with pytest.raises(ConcurrentUpdate), _mapped_errors("db:5432"):
            raise pg_errors.UniqueViolation("duplicate key")
        with pytest.raises(ConcurrentUpdate), _mapped_errors("db:5432"):
            raise pg_errors.DeadlockDetected("deadlock detected")
        with pytest.raises(Unavailable), _mapped_errors("db:5432"):
            raise psycopg.OperationalError("server closed the connection")
        with pytest.raises(pg_errors.QueryCanceled), _mapped_errors("db:5432"):
            raise pg_errors.QueryCanceled("canceling statement due to timeout")

    @pytest.mark.postgres
    def test_lost_connection_unavailable_then_recovers(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        """A connection killed mid-unit fails that unit; the next gets a new one."""
        storage = postgres_storage(max_size=1)
        seed_thread(storage)

        with pytest.raises(Unavailable) as caught, storage.unit_of_work() as uow:
            row = uow.houses.q("SELECT pg_backend_pid()").fetchone()
            with raw(postgres_url) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            uow.houses.list()

        assert "Lost the connection to PostgreSQL at 127.0.0.1:" in caught.value.message
        with storage.unit_of_work(write=False) as uow:
            assert [h.id for h in uow.houses.list()] == [HOUSE_ID]


@pytest.mark.postgres
class TestPostgresWaitForEntries:
    def test_notify_wakes_waiter_promptly(self, postgres_storage: OpenStorage) -> None:
        # The poll interval is longer than the test, so only a notification
        # can wake the waiter in time.
        waiter_storage = postgres_storage(poll_interval_s=60.0)
        writer = postgres_storage()
        seed_thread(writer)
        waiter = WaitInThread(waiter_storage)
        time.sleep(0.3)
        assert waiter.thread.is_alive(), "the waiter returned before any entry"

        append(writer, "hello")
        committed_at = time.monotonic()

        assert waiter.join() - committed_at < 0.3

    def test_notify_wakes_two_waiters(self, postgres_storage: OpenStorage) -> None:
        """A second waiter on one storage listens on a connection of its own."""
        waiter_storage = postgres_storage(poll_interval_s=60.0)
        writer = postgres_storage()
        seed_thread(writer)
        waiters = [WaitInThread(waiter_storage) for _ in range(2)]
        time.sleep(0.3)

        append(writer, "hello")
        committed_at = time.monotonic()

        assert [w.join() - committed_at < 0.3 for w in waiters] == [True, True]

    def test_poll_finds_entry_without_notify(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        """With the trigger off no notification comes, and polling still wakes."""
        waiter_storage = postgres_storage()
        writer = postgres_storage()
        seed_thread(writer)
        with raw(postgres_url) as conn:
            conn.execute("ALTER TABLE entries DISABLE TRIGGER entries_notify")
        with raw(postgres_url) as listener:
            listener.execute("LISTEN arbe_entries")
            waiter = WaitInThread(waiter_storage)
            time.sleep(0.3)

            append(writer, "hello")
            committed_at = time.monotonic()

            returned_at = waiter.join()
            notifications = list(listener.notifies(timeout=0.1))
        assert notifications == []
        assert returned_at - committed_at < POLL_INTERVAL_S + 0.3

    def test_wait_returns_at_timeout(self, postgres_storage: OpenStorage) -> None:
        storage = postgres_storage()
        seed_thread(storage)
        started = time.monotonic()

        storage.wait_for_entries(THREAD_ID, 0, 0.3)

        assert 0.3 <= time.monotonic() - started < 1.0

    def test_wait_returns_at_once_when_entry_exists(
        self, postgres_storage: OpenStorage
    ) -> None:
        storage = postgres_storage()
        seed_thread(storage)
        append(storage, "hello")
        started = time.monotonic()

        storage.wait_for_entries(THREAD_ID, 0, 10)

        assert time.monotonic() - started < 0.2


@pytest.mark.postgres
class TestPostgresConcurrency:
    NOW = T0 + timedelta(hours=1)
    LEASE = NOW + timedelta(minutes=5)

    def test_claims_skip_locked_exactly_once(
        self, postgres_url: str, postgres_storage: OpenStorage
    ) -> None:
        """Eight workers claim 50 dispatches: each is claimed once, by one worker."""
        storages = [postgres_storage() for _ in range(8)]
        seed_thread(storages[0])
        ids = [f"dsp_{n:02d}" for n in range(50)]
        with storages[0].unit_of_work() as uow:
            for n, dispatch_id in enumerate(ids):
                created = T0 + timedelta(seconds=n)
                uow.dispatches.add(
                    Dispatch(
                        id=dispatch_id,
                        thread_id=THREAD_ID,
                        house_id=HOUSE_ID,
                        trigger_seq=1,
                        state=DispatchState.QUEUED,
                        created_at=created,
                        updated_at=created,
                    )
                )
            uow.commit()
        claimed: list[list[str]] = [[] for _ in storages]

        def claim_all(index: int) -> None:
            while True:
                with storages[index].unit_of_work() as uow:
                    owner = f"worker-{index}"
                    got = uow.dispatches.claim(owner, self.NOW, self.LEASE, HOUSE_ID)
                    if got is None:
                        return
                    time.sleep(0.005)  # hold the row lock so claims overlap
                    uow.commit()
                claimed[index].append(got.id)

        errors = run_in_threads(len(storages), claim_all)

        every = [dispatch_id for ids_ in claimed for dispatch_id in ids_]
        assert errors == [None] * len(storages)
        assert sorted(every) == ids
        assert sum(1 for ids_ in claimed if ids_) > 1, "claims did not overlap"
        with raw(postgres_url) as conn:
            rows = conn.execute(
                "SELECT id, state, lease_owner, attempts FROM dispatches ORDER BY id"
            ).fetchall()
        owners = {d: f"worker-{i}" for i, ids_ in enumerate(claimed) for d in ids_}
        assert rows == [(d, "running", owners[d], 1) for d in ids]

    def test_appends_one_thread_gapless(self, postgres_storage: OpenStorage) -> None:
        """Four writers appending to one thread take seqs 1..N, none twice."""
        storages = [postgres_storage() for _ in range(4)]
        seed_thread(storages[0])
        per_writer = 25

        def append_many(index: int) -> None:
            for n in range(per_writer):
                append(storages[index], f"writer {index} entry {n}")

        errors = run_in_threads(len(storages), append_many)

        with storages[0].unit_of_work(write=False) as uow:
            entries = uow.entries.after(THREAD_ID, 0)
        total = per_writer * len(storages)
        assert errors == [None] * len(storages)
        assert [e.seq for e in entries] == list(range(1, total + 1))
        assert len({e.body for e in entries}) == total

    def secret(self, version: int) -> Secret:
        return Secret(
            house_id=HOUSE_ID,
            name="TOKEN",
            audience=SecretAudience.ENVIRONMENT,
            shared=False,
            owner="user:ada",
            version=version,
            created_at=T0,
            updated_at=T0 + timedelta(minutes=version),
        )

    def race_second_put(
        self, first: PostgresStorage, second: PostgresStorage, expected_version: int
    ) -> BaseException | None:
        """Put version `expected_version + 1` from both; the second waits, then fails."""
        secret = self.secret(expected_version + 1)
        errors: list[BaseException | None] = [None]

        def put_second() -> None:
            try:
                with second.unit_of_work() as uow:
                    uow.secrets.put(secret, b"sealed-second", expected_version)
                    uow.commit()
            except BaseException as exc:  # checked by the caller
                errors[0] = exc

        with first.unit_of_work() as uow:
            uow.secrets.put(secret, b"sealed-first", expected_version)
            racer = threading.Thread(target=put_second)
            racer.start()
            time.sleep(0.3)
            assert racer.is_alive(), "the second writer did not wait for the first"
            uow.commit()
        racer.join(timeout=JOIN_TIMEOUT_S)
        return errors[0]

    def test_secret_first_put_race_conflicts(
        self, postgres_storage: OpenStorage
    ) -> None:
        """Two first writes of one secret: the later one raises ConcurrentUpdate."""
        first, second = postgres_storage(), postgres_storage()
        seed_thread(first)

        error = self.race_second_put(first, second, expected_version=0)

        assert isinstance(error, ConcurrentUpdate)
        with first.unit_of_work(write=False) as uow:
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) == b"sealed-first"

    def test_secret_rotation_race_conflicts(
        self, postgres_storage: OpenStorage
    ) -> None:
        first, second = postgres_storage(), postgres_storage()
        seed_thread(first)
        with first.unit_of_work() as uow:
            uow.secrets.put(self.secret(1), b"sealed-1", 0)
            uow.commit()

        error = self.race_second_put(first, second, expected_version=1)

        assert isinstance(error, ConcurrentUpdate)
        with first.unit_of_work(write=False) as uow:
            current = uow.secrets.get(HOUSE_ID, "TOKEN")
            sealed = uow.secrets.sealed(HOUSE_ID, "TOKEN", 2)
        assert current == self.secret(2)
        assert sealed == b"sealed-first"

    def test_bytea_values_are_bytes(self, postgres_storage: OpenStorage) -> None:
        storage = postgres_storage()
        seed_thread(storage)
        with storage.unit_of_work() as uow:
            uow.secrets.put(self.secret(1), b"\x00sealed\xff", 0)
            uow.commit()

        with storage.unit_of_work(write=False) as uow:
            wrapped = uow.houses.wrapped_key(HOUSE_ID)
            sealed = uow.secrets.sealed(HOUSE_ID, "TOKEN", 1)

        assert type(wrapped) is bytes
        assert type(sealed) is bytes
        assert sealed == b"\x00sealed\xff"


@pytest.mark.postgres
class TestWorkerMasterKey:
    def test_worker_wrong_key_claims_nothing(
        self, postgres_url: str, postgres_storage: OpenStorage, arbe_home: Path
    ) -> None:
        """`arbe worker` with another master key exits before it claims a dispatch."""
        right_key, wrong_key = bytes(range(32)), bytes(range(1, 33))
        storage = postgres_storage()
        opened = open_house(
            home=arbe_home, storage=storage, sealer=AesGcmSealer(right_key)
        )
        thread = opened.threads.create()
        _, dispatch = opened.threads.post(thread.id, "echo hello")

        result = run_arbe(
            "worker",
            "--once",
            env={
                "ARBE_DATABASE_URL": postgres_url,
                "ARBE_MASTER_KEY": base64.b64encode(wrong_key).decode("ascii"),
            },
        )

        assert result.returncode == 1
        assert result.stderr == f"error: {MasterKeyMismatch().message}\n"
        assert result.stderr.startswith(
            "error: The master key does not match this database"
        )
        with storage.unit_of_work(write=False) as uow:
            after = uow.dispatches.get(dispatch.id)
        assert after is not None
        assert after.state is DispatchState.QUEUED
        assert after.attempts == 0
        assert after.lease_owner is None
