"""The storage contract: every `Storage` adapter must pass every test here.

Each test gets a fresh, empty storage from each factory in `STORAGE_FACTORIES`
and uses only the methods of the ports in `arbe_core.ports`. SQLite-only
behaviour (WAL, migrations, file modes) is tested at the end of the file.
"""

from __future__ import annotations

import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from arbe_adapters.storage import InMemoryStorage, SqliteStorage
from arbe_adapters.storage._migrations import LATEST
from arbe_core.errors import ConcurrentUpdate, Conflict, SchemaTooNew
from arbe_core.models import (
    Agent,
    AuditEvent,
    Dispatch,
    DispatchState,
    Entry,
    EntryKind,
    Environment,
    House,
    Secret,
    SecretAudience,
    SecretBinding,
    Thread,
)
from arbe_core.ports import Storage, UnitOfWork

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
HOUSE_ID = "hse_000001"
OTHER_HOUSE_ID = "hse_000002"
WRAPPED_KEY = b"\x01wrapped-key\x00\xff"


def memory_storage(tmp_path: Path) -> Storage:
    return InMemoryStorage()


def sqlite_storage(tmp_path: Path) -> Storage:
    return SqliteStorage(tmp_path / "arbe.db")


#: Every storage adapter the contract runs on. A new adapter adds one
#: `pytest.param(factory, id=...)` whose factory returns an empty storage. A
#: factory is a function of `tmp_path`, or the name of a fixture that returns
#: a function of no arguments (PostgreSQL's needs a fresh schema per test).
STORAGE_FACTORIES: list[object] = [
    pytest.param(memory_storage, id="memory"),
    pytest.param(sqlite_storage, id="sqlite"),
    pytest.param("postgres_storage", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=STORAGE_FACTORIES)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    factory: Callable[[Path], Storage] | str = request.param
    if isinstance(factory, str):
        opened: Storage = request.getfixturevalue(factory)()
    else:
        opened = factory(tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def houses(storage: Storage) -> tuple[House, House]:
    """Store two houses, so each test can check that data stays in its house."""
    first = make_house(HOUSE_ID, "acme")
    second = make_house(OTHER_HOUSE_ID, "other")
    with storage.unit_of_work() as uow:
        uow.houses.add(first, WRAPPED_KEY)
        uow.houses.add(second, WRAPPED_KEY + b"2")
        uow.commit()
    return first, second


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_house(house_id: str, name: str) -> House:
    return House(id=house_id, name=name, created_at=T0)


def make_secret(
    name: str = "TOKEN", version: int = 1, house_id: str = HOUSE_ID, **fields: object
) -> Secret:
    values: dict[str, object] = {
        "house_id": house_id,
        "name": name,
        "audience": SecretAudience.ENVIRONMENT,
        "shared": False,
        "owner": "user:ada",
        "version": version,
        "created_at": T0,
        "updated_at": at(version),
    }
    values.update(fields)
    return Secret(**values)  # type: ignore[arg-type]


def make_environment(name: str = "web", house_id: str = HOUSE_ID) -> Environment:
    return Environment(
        house_id=house_id,
        name=name,
        runtime="local",
        sandbox_id="sbx-1",
        allowed_repos=("https://example.test/acme/web.git",),
        bindings=(SecretBinding("TOKEN"), SecretBinding("OPTIONAL", required=False)),
        created_at=T0,
        updated_at=at(1),
        auto_stop_minutes=15,
    )


def make_agent(name: str = "coder", house_id: str = HOUSE_ID) -> Agent:
    return Agent(
        house_id=house_id,
        name=name,
        model="openrouter/anthropic/claude-haiku-4.5",
        instructions="Write tests first.\nKeep diffs small.",
        created_at=T0,
    )


def make_thread(
    thread_id: str = "thr_1",
    minutes: float = 0,
    house_id: str = HOUSE_ID,
    env: str | None = None,
) -> Thread:
    return Thread(
        id=thread_id,
        house_id=house_id,
        parent_ref=None,
        env=env,
        model=None,
        created_at=at(minutes),
    )


def make_entry(seq: int, thread_id: str = "thr_1", **fields: object) -> Entry:
    values: dict[str, object] = {
        "id": f"ent_{thread_id}_{seq}",
        "thread_id": thread_id,
        "seq": seq,
        "author": "user:ada",
        "kind": EntryKind.MESSAGE,
        "body": f"entry {seq}",
        "created_at": at(seq),
    }
    values.update(fields)
    return Entry(**values)  # type: ignore[arg-type]


def make_dispatch(
    dispatch_id: str,
    minutes: float = 0,
    thread_id: str = "thr_1",
    house_id: str = HOUSE_ID,
    **fields: object,
) -> Dispatch:
    values: dict[str, object] = {
        "id": dispatch_id,
        "thread_id": thread_id,
        "house_id": house_id,
        "trigger_seq": 1,
        "state": DispatchState.QUEUED,
        "created_at": at(minutes),
        "updated_at": at(minutes),
    }
    values.update(fields)
    return Dispatch(**values)  # type: ignore[arg-type]


def make_event(event_id: str, minutes: float, **fields: object) -> AuditEvent:
    values: dict[str, object] = {
        "id": event_id,
        "house_id": HOUSE_ID,
        "at": at(minutes),
        "actor": "user:ada",
        "action": "secret.set",
    }
    values.update(fields)
    return AuditEvent(**values)  # type: ignore[arg-type]


def commit(storage: Storage, write: Callable[[UnitOfWork], object]) -> None:
    """Run `write` in a unit of work and commit it."""
    with storage.unit_of_work() as uow:
        write(uow)
        uow.commit()


def put_versions(storage: Storage, count: int, name: str = "TOKEN") -> None:
    """Store versions 1 to `count` of a secret, each sealed as `sealed-N`."""
    for version in range(1, count + 1):
        secret = make_secret(name, version)
        commit(
            storage,
            lambda uow, s=secret: uow.secrets.put(
                s, f"sealed-{s.version}".encode(), s.version - 1
            ),
        )


class TestHouseRepository:
    def test_houses_add_then_get(self, storage: Storage) -> None:
        house = make_house(HOUSE_ID, "acme")

        commit(storage, lambda uow: uow.houses.add(house, WRAPPED_KEY))

        with storage.unit_of_work() as uow:
            assert uow.houses.get(HOUSE_ID) == house
            assert uow.houses.get_by_name("acme") == house

    def test_houses_missing_returns_none(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            assert uow.houses.get("hse_missing") is None
            assert uow.houses.get_by_name("missing") is None

    def test_houses_duplicate_name_conflicts(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        duplicate = make_house("hse_000003", "acme")

        with storage.unit_of_work() as uow, pytest.raises(Conflict):
            uow.houses.add(duplicate, WRAPPED_KEY)

    def test_houses_list_orders_by_name(self, storage: Storage) -> None:
        commit(
            storage,
            lambda uow: [
                uow.houses.add(make_house(f"hse_{n}", name), WRAPPED_KEY)
                for n, name in enumerate(["zeta", "alpha", "mid"])
            ],
        )

        with storage.unit_of_work() as uow:
            names = [h.name for h in uow.houses.list()]

        assert names == ["alpha", "mid", "zeta"]

    def test_houses_wrapped_key_round_trips(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        with storage.unit_of_work() as uow:
            assert uow.houses.wrapped_key(HOUSE_ID) == WRAPPED_KEY
            assert uow.houses.wrapped_key(OTHER_HOUSE_ID) == WRAPPED_KEY + b"2"

    def test_houses_set_wrapped_key_replaces(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.houses.set_wrapped_key(HOUSE_ID, b"new-key"))

        with storage.unit_of_work() as uow:
            assert uow.houses.wrapped_key(HOUSE_ID) == b"new-key"
            assert uow.houses.wrapped_key(OTHER_HOUSE_ID) == WRAPPED_KEY + b"2"

    def test_houses_set_active_env(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.houses.set_active_env(HOUSE_ID, "web"))

        with storage.unit_of_work() as uow:
            house = uow.houses.get(HOUSE_ID)
        assert house is not None
        assert house.active_env == "web"

    def test_houses_clear_active_env(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.houses.set_active_env(HOUSE_ID, "web"))

        commit(storage, lambda uow: uow.houses.set_active_env(HOUSE_ID, None))

        with storage.unit_of_work() as uow:
            house = uow.houses.get(HOUSE_ID)
        assert house is not None
        assert house.active_env is None

    def test_settings_missing_returns_none(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            assert uow.houses.get_setting("default_house") is None

    def test_settings_set_then_overwrite(self, storage: Storage) -> None:
        commit(storage, lambda uow: uow.houses.set_setting("default_house", "acme"))

        commit(storage, lambda uow: uow.houses.set_setting("default_house", "other"))

        with storage.unit_of_work() as uow:
            assert uow.houses.get_setting("default_house") == "other"


class TestSecretRepository:
    def test_secrets_put_then_get(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        secret = make_secret(audience=SecretAudience.CAPABILITY, shared=True)

        commit(storage, lambda uow: uow.secrets.put(secret, b"sealed-1", 0))

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "TOKEN") == secret
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) == b"sealed-1"

    def test_secrets_missing_returns_none(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 1)

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "MISSING") is None
            assert uow.secrets.get(OTHER_HOUSE_ID, "TOKEN") is None
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 2) is None
            assert uow.secrets.sealed(HOUSE_ID, "MISSING", 1) is None

    def test_secrets_list_orders_by_name(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        for name in ("ZED", "ALPHA", "MIDDLE"):
            put_versions(storage, 1, name)
        other = make_secret("ELSEWHERE", house_id=OTHER_HOUSE_ID)
        commit(storage, lambda uow: uow.secrets.put(other, b"sealed", 0))

        with storage.unit_of_work() as uow:
            names = [s.name for s in uow.secrets.list(HOUSE_ID)]

        assert names == ["ALPHA", "MIDDLE", "ZED"]

    def test_secrets_put_rotates_current(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 1)
        rotated = make_secret(version=2, shared=True)

        commit(storage, lambda uow: uow.secrets.put(rotated, b"sealed-2", 1))

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "TOKEN") == rotated
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) == b"sealed-1"
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 2) == b"sealed-2"

    def test_secrets_stale_version_conflicts(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 2)
        stale = make_secret(version=2)

        with storage.unit_of_work() as uow, pytest.raises(ConcurrentUpdate):
            uow.secrets.put(stale, b"sealed-stale", 1)

        with storage.unit_of_work() as uow:
            current = uow.secrets.get(HOUSE_ID, "TOKEN")
            assert current is not None
            assert current.version == 2
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 2) == b"sealed-2"

    def test_secrets_create_over_existing_conflicts(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 1)
        again = make_secret(version=1)

        with storage.unit_of_work() as uow, pytest.raises(ConcurrentUpdate):
            uow.secrets.put(again, b"sealed-again", 0)

        with storage.unit_of_work() as uow:
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) == b"sealed-1"

    def test_secrets_versions_newest_first(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 2)
        shared = make_secret(version=3, shared=True, audience=SecretAudience.CAPABILITY)
        commit(storage, lambda uow: uow.secrets.put(shared, b"sealed-3", 2))

        with storage.unit_of_work() as uow:
            versions = uow.secrets.versions(HOUSE_ID, "TOKEN")

        assert [v.version for v in versions] == [3, 2, 1]
        assert [v.current for v in versions] == [True, False, False]
        assert [v.shared for v in versions] == [True, False, False]
        assert versions[0].audience is SecretAudience.CAPABILITY
        assert versions[1].audience is SecretAudience.ENVIRONMENT
        assert [v.created_at for v in versions] == [at(3), at(2), at(1)]
        assert {v.name for v in versions} == {"TOKEN"}

    def test_secrets_versions_missing_empty(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        with storage.unit_of_work() as uow:
            assert uow.secrets.versions(HOUSE_ID, "MISSING") == []

    def test_secrets_prune_keeps_newest(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 5)

        commit(storage, lambda uow: uow.secrets.prune(HOUSE_ID, "TOKEN", 3))

        with storage.unit_of_work() as uow:
            kept = [v.version for v in uow.secrets.versions(HOUSE_ID, "TOKEN")]
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 2) is None
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 3) == b"sealed-3"
        assert kept == [5, 4, 3]

    def test_secrets_prune_under_limit_keeps_all(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 2)

        commit(storage, lambda uow: uow.secrets.prune(HOUSE_ID, "TOKEN", 10))

        with storage.unit_of_work() as uow:
            kept = [v.version for v in uow.secrets.versions(HOUSE_ID, "TOKEN")]
        assert kept == [2, 1]

    def test_secrets_prune_touches_one_secret(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 3, "TOKEN")
        put_versions(storage, 3, "OTHER")

        commit(storage, lambda uow: uow.secrets.prune(HOUSE_ID, "TOKEN", 1))

        with storage.unit_of_work() as uow:
            kept = [v.version for v in uow.secrets.versions(HOUSE_ID, "OTHER")]
        assert kept == [3, 2, 1]

    def test_secrets_delete_removes_history(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 3)
        other = make_secret(house_id=OTHER_HOUSE_ID)
        commit(storage, lambda uow: uow.secrets.put(other, b"sealed-other", 0))

        commit(storage, lambda uow: uow.secrets.delete(HOUSE_ID, "TOKEN"))

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "TOKEN") is None
            assert uow.secrets.versions(HOUSE_ID, "TOKEN") == []
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) is None
            assert uow.secrets.get(OTHER_HOUSE_ID, "TOKEN") == other

    def test_secrets_recreate_after_delete(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 2)
        commit(storage, lambda uow: uow.secrets.delete(HOUSE_ID, "TOKEN"))
        fresh = make_secret(version=1, owner="user:grace")

        commit(storage, lambda uow: uow.secrets.put(fresh, b"sealed-fresh", 0))

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "TOKEN") == fresh
            assert uow.secrets.sealed(HOUSE_ID, "TOKEN", 1) == b"sealed-fresh"


class TestEnvironmentRepository:
    def test_environments_save_then_get(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        env = make_environment()

        commit(storage, lambda uow: uow.environments.save(env))

        with storage.unit_of_work() as uow:
            assert uow.environments.get(HOUSE_ID, "web") == env

    def test_environments_save_replaces(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        env = make_environment()
        commit(storage, lambda uow: uow.environments.save(env))
        changed = attrs.evolve(
            env, sandbox_id=None, bindings=(), allowed_repos=(), auto_stop_minutes=None
        )

        commit(storage, lambda uow: uow.environments.save(changed))

        with storage.unit_of_work() as uow:
            assert uow.environments.get(HOUSE_ID, "web") == changed
            assert len(uow.environments.list(HOUSE_ID)) == 1

    def test_environments_list_orders_by_name(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(
            storage,
            lambda uow: [
                uow.environments.save(make_environment(name, house_id))
                for name, house_id in [
                    ("zeta", HOUSE_ID),
                    ("alpha", HOUSE_ID),
                    ("other", OTHER_HOUSE_ID),
                ]
            ],
        )

        with storage.unit_of_work() as uow:
            names = [e.name for e in uow.environments.list(HOUSE_ID)]

        assert names == ["alpha", "zeta"]

    def test_environments_delete_removes_one(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.environments.save(make_environment("web")))
        commit(storage, lambda uow: uow.environments.save(make_environment("api")))

        commit(storage, lambda uow: uow.environments.delete(HOUSE_ID, "web"))

        with storage.unit_of_work() as uow:
            assert uow.environments.get(HOUSE_ID, "web") is None
            assert [e.name for e in uow.environments.list(HOUSE_ID)] == ["api"]

    def test_environments_missing_returns_none(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.environments.delete(HOUSE_ID, "missing"))

        with storage.unit_of_work() as uow:
            assert uow.environments.get(HOUSE_ID, "missing") is None


class TestAgentRepository:
    def test_agents_save_then_get(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        agent = make_agent()

        commit(storage, lambda uow: uow.agents.save(agent))

        with storage.unit_of_work() as uow:
            assert uow.agents.get(HOUSE_ID, "coder") == agent

    def test_agents_save_replaces(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.agents.save(make_agent()))
        changed = attrs.evolve(make_agent(), model="builtin/shell", instructions="")

        commit(storage, lambda uow: uow.agents.save(changed))

        with storage.unit_of_work() as uow:
            assert uow.agents.get(HOUSE_ID, "coder") == changed
            assert len(uow.agents.list(HOUSE_ID)) == 1

    def test_agents_list_orders_by_name(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(
            storage,
            lambda uow: [
                uow.agents.save(make_agent(name, house_id))
                for name, house_id in [
                    ("reviewer", HOUSE_ID),
                    ("coder", HOUSE_ID),
                    ("other", OTHER_HOUSE_ID),
                ]
            ],
        )

        with storage.unit_of_work() as uow:
            names = [a.name for a in uow.agents.list(HOUSE_ID)]

        assert names == ["coder", "reviewer"]

    def test_agents_delete_removes(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.agents.save(make_agent()))

        commit(storage, lambda uow: uow.agents.delete(HOUSE_ID, "coder"))

        with storage.unit_of_work() as uow:
            assert uow.agents.get(HOUSE_ID, "coder") is None
            assert uow.agents.list(HOUSE_ID) == []


class TestThreadRepository:
    def test_threads_add_then_get(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        thread = attrs.evolve(
            make_thread(env="web"), parent_ref="gh:acme/web#12", model="builtin/shell"
        )

        commit(storage, lambda uow: uow.threads.add(thread))

        with storage.unit_of_work() as uow:
            assert uow.threads.get("thr_1") == thread
            assert uow.threads.get("thr_missing") is None

    def test_threads_list_newest_first(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(
            storage,
            lambda uow: [
                uow.threads.add(make_thread(thread_id, minutes))
                for thread_id, minutes in [("thr_b", 2), ("thr_a", 1), ("thr_c", 3)]
            ],
        )

        with storage.unit_of_work() as uow:
            ids = [t.id for t in uow.threads.list(HOUSE_ID)]

        assert ids == ["thr_c", "thr_b", "thr_a"]

    def test_threads_list_honours_limit(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(
            storage,
            lambda uow: [uow.threads.add(make_thread(f"thr_{n}", n)) for n in range(5)],
        )

        with storage.unit_of_work() as uow:
            ids = [t.id for t in uow.threads.list(HOUSE_ID, limit=2)]

        assert ids == ["thr_4", "thr_3"]

    def test_threads_list_only_own_house(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        commit(storage, lambda uow: uow.threads.add(make_thread("thr_mine")))
        commit(
            storage,
            lambda uow: uow.threads.add(
                make_thread("thr_theirs", house_id=OTHER_HOUSE_ID)
            ),
        )

        with storage.unit_of_work() as uow:
            ids = [t.id for t in uow.threads.list(HOUSE_ID)]

        assert ids == ["thr_mine"]


class TestEntryRepository:
    @pytest.fixture(autouse=True)
    def thread(self, storage: Storage, houses: tuple[House, House]) -> None:
        commit(storage, lambda uow: uow.threads.add(make_thread("thr_1")))
        commit(storage, lambda uow: uow.threads.add(make_thread("thr_2")))

    def test_entries_last_seq_empty_zero(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            assert uow.entries.last_seq("thr_1") == 0

    def test_entries_add_advances_last_seq(self, storage: Storage) -> None:
        commit(storage, lambda uow: uow.entries.add(make_entry(1)))
        commit(storage, lambda uow: uow.entries.add(make_entry(2)))

        with storage.unit_of_work() as uow:
            assert uow.entries.last_seq("thr_1") == 2
            assert uow.entries.last_seq("thr_2") == 0

    def test_entries_round_trip_fields(self, storage: Storage) -> None:
        entry = make_entry(
            1,
            author="bot:coder",
            kind=EntryKind.TOOL_CALL,
            body="run_command",
            data={"tool": "run_command", "arguments": {"command": "ls"}, "exit": 0},
        )

        commit(storage, lambda uow: uow.entries.add(entry))

        with storage.unit_of_work() as uow:
            assert uow.entries.after("thr_1", 0) == [entry]

    def test_entries_after_returns_later(self, storage: Storage) -> None:
        entries = [make_entry(seq) for seq in range(1, 6)]
        commit(storage, lambda uow: [uow.entries.add(e) for e in entries])
        commit(storage, lambda uow: uow.entries.add(make_entry(1, "thr_2")))

        with storage.unit_of_work() as uow:
            assert uow.entries.after("thr_1", 0) == entries
            assert uow.entries.after("thr_1", 3) == entries[3:]
            assert uow.entries.after("thr_1", 5) == []

    def test_entries_after_honours_limit(self, storage: Storage) -> None:
        entries = [make_entry(seq) for seq in range(1, 6)]
        commit(storage, lambda uow: [uow.entries.add(e) for e in entries])

        with storage.unit_of_work() as uow:
            page = uow.entries.after("thr_1", 1, limit=2)

        assert [e.seq for e in page] == [2, 3]


class TestDispatchRepository:
    NOW = at(60)
    LEASE = at(65)

    @pytest.fixture(autouse=True)
    def threads(self, storage: Storage, houses: tuple[House, House]) -> None:
        commit(
            storage,
            lambda uow: [
                uow.threads.add(thread)
                for thread in [
                    make_thread("thr_1", env="web"),
                    make_thread("thr_2", env="api"),
                    make_thread("thr_3", house_id=OTHER_HOUSE_ID, env="web"),
                ]
            ],
        )

    def add(self, storage: Storage, *dispatches: Dispatch) -> None:
        commit(storage, lambda uow: [uow.dispatches.add(d) for d in dispatches])

    def get(self, storage: Storage, dispatch_id: str) -> Dispatch:
        with storage.unit_of_work() as uow:
            found = uow.dispatches.get(dispatch_id)
        assert found is not None, f"{dispatch_id} is missing"
        return found

    def claim(
        self, storage: Storage, owner: str = "worker-a", house_id: str | None = HOUSE_ID
    ) -> Dispatch | None:
        with storage.unit_of_work() as uow:
            claimed = uow.dispatches.claim(owner, self.NOW, self.LEASE, house_id)
            uow.commit()
        return claimed

    def running(
        self, dispatch_id: str, lease_minutes: float, **fields: object
    ) -> Dispatch:
        return make_dispatch(
            dispatch_id,
            state=DispatchState.RUNNING,
            lease_owner="worker-old",
            lease_expires_at=at(lease_minutes),
            attempts=1,
            **fields,
        )

    def test_dispatches_add_then_get(self, storage: Storage) -> None:
        dispatch = self.running("dsp_1", 70, trigger_seq=4, error="earlier failure")

        self.add(storage, dispatch)

        assert self.get(storage, "dsp_1") == dispatch

    def test_dispatches_get_missing_none(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            assert uow.dispatches.get("dsp_missing") is None

    def test_claim_takes_oldest_first(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_new", 2),
            make_dispatch("dsp_old", 1, thread_id="thr_2"),
        )

        first = self.claim(storage)
        second = self.claim(storage)

        assert first is not None
        assert first.id == "dsp_old"
        assert second is not None
        assert second.id == "dsp_new"

    def test_claim_sets_lease_and_attempts(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))

        claimed = self.claim(storage, owner="worker-a")

        expected = attrs.evolve(
            make_dispatch("dsp_1"),
            state=DispatchState.RUNNING,
            lease_owner="worker-a",
            lease_expires_at=self.LEASE,
            attempts=1,
            updated_at=self.NOW,
        )
        assert claimed == expected
        assert self.get(storage, "dsp_1") == expected

    def test_claim_nothing_queued_returns_none(self, storage: Storage) -> None:
        assert self.claim(storage) is None

    def test_claim_skips_live_lease(self, storage: Storage) -> None:
        self.add(storage, self.running("dsp_1", 61))

        claimed = self.claim(storage)

        assert claimed is None
        assert self.get(storage, "dsp_1").lease_owner == "worker-old"

    def test_claim_takes_expired_lease(self, storage: Storage) -> None:
        """A worker that died leaves a running dispatch that another may claim."""
        self.add(storage, self.running("dsp_1", 59))

        claimed = self.claim(storage, owner="worker-b")

        assert claimed is not None
        assert claimed.lease_owner == "worker-b"
        assert claimed.lease_expires_at == self.LEASE
        assert claimed.attempts == 2

    def test_claim_skips_terminal_states(self, storage: Storage) -> None:
        self.add(
            storage,
            *[
                make_dispatch(f"dsp_{state.value}", state=state)
                for state in (
                    DispatchState.COMPLETED,
                    DispatchState.FAILED,
                    DispatchState.CANCELLED,
                )
            ],
        )

        assert self.claim(storage) is None

    def test_claim_filters_by_house(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_theirs", 1, thread_id="thr_3", house_id=OTHER_HOUSE_ID),
        )

        mine = self.claim(storage, house_id=HOUSE_ID)
        theirs = self.claim(storage, house_id=OTHER_HOUSE_ID)

        assert mine is None
        assert theirs is not None
        assert theirs.id == "dsp_theirs"

    def test_claim_any_house_without_filter(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_theirs", 1, thread_id="thr_3", house_id=OTHER_HOUSE_ID),
            make_dispatch("dsp_mine", 2),
        )

        claimed = self.claim(storage, house_id=None)

        assert claimed is not None
        assert claimed.id == "dsp_theirs"

    def test_renew_by_owner_extends(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))
        self.claim(storage, owner="worker-a")

        with storage.unit_of_work() as uow:
            renewed = uow.dispatches.renew("dsp_1", "worker-a", at(90))
            uow.commit()

        assert renewed is True
        assert self.get(storage, "dsp_1").lease_expires_at == at(90)

    def test_renew_by_other_fails(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))
        self.claim(storage, owner="worker-a")

        with storage.unit_of_work() as uow:
            renewed = uow.dispatches.renew("dsp_1", "worker-b", at(90))
            uow.commit()

        assert renewed is False
        assert self.get(storage, "dsp_1").lease_expires_at == self.LEASE

    def test_renew_finished_fails(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch(
                "dsp_1", state=DispatchState.COMPLETED, lease_owner="worker-a"
            ),
        )

        with storage.unit_of_work() as uow:
            renewed = uow.dispatches.renew("dsp_1", "worker-a", at(90))

        assert renewed is False

    def test_finish_by_owner_ends(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))
        self.claim(storage, owner="worker-a")

        with storage.unit_of_work() as uow:
            finished = uow.dispatches.finish(
                "dsp_1", "worker-a", DispatchState.FAILED, "model timed out", at(70)
            )
            uow.commit()

        ended = self.get(storage, "dsp_1")
        assert finished is True
        assert ended.state is DispatchState.FAILED
        assert ended.error == "model timed out"
        assert ended.updated_at == at(70)
        assert ended.lease_expires_at is None

    def test_finish_by_other_owner_fails(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))
        self.claim(storage, owner="worker-a")

        with storage.unit_of_work() as uow:
            finished = uow.dispatches.finish(
                "dsp_1", "worker-b", DispatchState.COMPLETED, None, at(70)
            )
            uow.commit()

        assert finished is False
        assert self.get(storage, "dsp_1").state is DispatchState.RUNNING

    def test_finish_without_owner_cancels(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))

        with storage.unit_of_work() as uow:
            finished = uow.dispatches.finish(
                "dsp_1", None, DispatchState.CANCELLED, None, at(70)
            )
            uow.commit()

        assert finished is True
        assert self.get(storage, "dsp_1").state is DispatchState.CANCELLED

    def test_finish_terminal_dispatch_fails(self, storage: Storage) -> None:
        done = make_dispatch("dsp_1", state=DispatchState.COMPLETED)
        self.add(storage, done)

        with storage.unit_of_work() as uow:
            finished = uow.dispatches.finish(
                "dsp_1", None, DispatchState.FAILED, "late", at(70)
            )
            uow.commit()

        assert finished is False
        assert self.get(storage, "dsp_1") == done

    def test_live_for_thread_newest_live(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_done", 1, state=DispatchState.COMPLETED),
            make_dispatch("dsp_live", 2),
            make_dispatch("dsp_other", 3, thread_id="thr_2"),
        )

        with storage.unit_of_work() as uow:
            live = uow.dispatches.live_for_thread("thr_1")

        assert live is not None
        assert live.id == "dsp_live"

    def test_live_for_thread_none_when_ended(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_done", 1, state=DispatchState.FAILED))

        with storage.unit_of_work() as uow:
            assert uow.dispatches.live_for_thread("thr_1") is None

    def test_latest_for_thread_any_state(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_live", 1),
            make_dispatch("dsp_done", 2, state=DispatchState.COMPLETED),
        )

        with storage.unit_of_work() as uow:
            latest = uow.dispatches.latest_for_thread("thr_1")
            assert uow.dispatches.latest_for_thread("thr_2") is None

        assert latest is not None
        assert latest.id == "dsp_done"

    def test_live_for_env_only_live(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_web_queued", 1),
            self.running("dsp_web_running", 70, created_at=at(2)),
            make_dispatch("dsp_web_done", 3, state=DispatchState.COMPLETED),
            make_dispatch("dsp_api", 4, thread_id="thr_2"),
            make_dispatch("dsp_theirs", 5, thread_id="thr_3", house_id=OTHER_HOUSE_ID),
        )

        with storage.unit_of_work() as uow:
            live = uow.dispatches.live_for_env(HOUSE_ID, "web")

        assert sorted(d.id for d in live) == ["dsp_web_queued", "dsp_web_running"]

    def test_has_live_lease_running(self, storage: Storage) -> None:
        self.add(storage, self.running("dsp_1", 61))

        with storage.unit_of_work() as uow:
            assert uow.dispatches.has_live_lease(HOUSE_ID, self.NOW) is True
            assert uow.dispatches.has_live_lease(OTHER_HOUSE_ID, self.NOW) is False

    def test_has_live_lease_until_expiry(self, storage: Storage) -> None:
        """A lease counts as live up to and including its expiry time."""
        self.add(storage, self.running("dsp_1", 60))

        with storage.unit_of_work() as uow:
            assert uow.dispatches.has_live_lease(HOUSE_ID, at(60)) is True
            assert uow.dispatches.has_live_lease(HOUSE_ID, at(60.5)) is False

    def test_has_live_lease_ignores_queued(self, storage: Storage) -> None:
        self.add(storage, make_dispatch("dsp_1"))

        with storage.unit_of_work() as uow:
            assert uow.dispatches.has_live_lease(HOUSE_ID, self.NOW) is False

    def test_count_queued_per_house(self, storage: Storage) -> None:
        self.add(
            storage,
            make_dispatch("dsp_1", 1),
            make_dispatch("dsp_2", 2, thread_id="thr_2"),
            self.running("dsp_3", 70),
            make_dispatch("dsp_4", 4, state=DispatchState.COMPLETED),
            make_dispatch("dsp_5", 5, thread_id="thr_3", house_id=OTHER_HOUSE_ID),
        )

        with storage.unit_of_work() as uow:
            assert uow.dispatches.count_queued(HOUSE_ID) == 2
            assert uow.dispatches.count_queued(OTHER_HOUSE_ID) == 1


class TestAuditRepository:
    def test_audit_add_then_list(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        event = make_event(
            "evt_1",
            1,
            secret="TOKEN",
            env="web",
            sandbox_id="sbx-1",
            thread_id="thr_1",
            details={"version": 2, "note": "rotated"},
        )

        commit(storage, lambda uow: uow.audit.add(event))

        with storage.unit_of_work() as uow:
            assert uow.audit.list(HOUSE_ID) == [event]

    def test_audit_list_oldest_first(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        events = [
            make_event("evt_b", 2),
            make_event("evt_c", 3),
            make_event("evt_a", 1),
        ]

        commit(storage, lambda uow: [uow.audit.add(e) for e in events])

        with storage.unit_of_work() as uow:
            ids = [e.id for e in uow.audit.list(HOUSE_ID)]
        assert ids == ["evt_a", "evt_b", "evt_c"]

    def test_audit_list_filters(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        events = [
            make_event("evt_1", 1, secret="TOKEN"),
            make_event("evt_2", 2, secret="OTHER"),
            make_event("evt_3", 3, env="web"),
            make_event("evt_4", 4, thread_id="thr_1", env="web"),
            make_event("evt_5", 5, secret="TOKEN", house_id=OTHER_HOUSE_ID),
        ]
        commit(storage, lambda uow: [uow.audit.add(e) for e in events])

        with storage.unit_of_work() as uow:
            by_secret = [e.id for e in uow.audit.list(HOUSE_ID, secret="TOKEN")]
            by_env = [e.id for e in uow.audit.list(HOUSE_ID, env="web")]
            by_thread = [e.id for e in uow.audit.list(HOUSE_ID, thread_id="thr_1")]
            both = [
                e.id for e in uow.audit.list(HOUSE_ID, env="web", thread_id="thr_1")
            ]
            other = [e.id for e in uow.audit.list(OTHER_HOUSE_ID)]

        assert by_secret == ["evt_1"]
        assert by_env == ["evt_3", "evt_4"]
        assert by_thread == ["evt_4"]
        assert both == ["evt_4"]
        assert other == ["evt_5"]


class TestUnitOfWork:
    def test_uow_without_commit_writes_nothing(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            uow.houses.add(make_house(HOUSE_ID, "acme"), WRAPPED_KEY)
            uow.houses.set_setting("default_house", "acme")
            uow.secrets.put(make_secret(), b"sealed-1", 0)
            uow.audit.add(make_event("evt_1", 1))

        with storage.unit_of_work() as uow:
            assert uow.houses.list() == []
            assert uow.houses.get_setting("default_house") is None
            assert uow.secrets.get(HOUSE_ID, "TOKEN") is None
            assert uow.audit.list(HOUSE_ID) == []

    def test_uow_error_rolls_back(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        with pytest.raises(RuntimeError), storage.unit_of_work() as uow:
            uow.secrets.put(make_secret(), b"sealed-1", 0)
            uow.threads.add(make_thread())
            raise RuntimeError("crash before commit")

        with storage.unit_of_work() as uow:
            assert uow.secrets.get(HOUSE_ID, "TOKEN") is None
            assert uow.threads.get("thr_1") is None

    def test_uow_sees_own_writes(self, storage: Storage) -> None:
        with storage.unit_of_work() as uow:
            uow.houses.add(make_house(HOUSE_ID, "acme"), WRAPPED_KEY)

            assert uow.houses.get_by_name("acme") is not None

    def test_uow_read_only_sees_committed(
        self, storage: Storage, houses: tuple[House, House]
    ) -> None:
        put_versions(storage, 1)

        with storage.unit_of_work(write=False) as uow:
            secret = uow.secrets.get(HOUSE_ID, "TOKEN")

        assert secret == make_secret()


class TestSqliteStorage:
    """Behaviour of the SQLite file itself, beyond the shared contract."""

    def read_pragma(self, path: Path, pragma: str) -> object:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        finally:
            conn.close()

    def migrations(self, path: Path) -> list[int]:
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT version FROM schema_migrations ORDER BY version"
            ).fetchall()
        finally:
            conn.close()
        return [row[0] for row in rows]

    def test_sqlite_uses_wal(self, tmp_path: Path) -> None:
        path = tmp_path / "arbe.db"

        SqliteStorage(path)

        assert self.read_pragma(path, "journal_mode") == "wal"

    def test_sqlite_creates_file_0600(self, tmp_path: Path) -> None:
        path = tmp_path / "arbe.db"

        SqliteStorage(path)

        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_sqlite_records_migrations(self, tmp_path: Path) -> None:
        path = tmp_path / "arbe.db"

        SqliteStorage(path)

        assert self.migrations(path) == list(range(1, LATEST + 1))

    def test_sqlite_reopen_applies_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "arbe.db"
        storage = SqliteStorage(path)
        commit(storage, lambda uow: uow.houses.set_setting("default_house", "acme"))

        reopened = SqliteStorage(path)

        assert self.migrations(path) == list(range(1, LATEST + 1))
        with reopened.unit_of_work() as uow:
            assert uow.houses.get_setting("default_house") == "acme"

    def test_sqlite_schema_too_new_unchanged(self, tmp_path: Path) -> None:
        path = tmp_path / "arbe.db"
        SqliteStorage(path)
        conn = sqlite3.connect(path)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 'later')",
            (LATEST + 1,),
        )
        conn.commit()
        conn.close()
        before = path.read_bytes()
        mtime = path.stat().st_mtime_ns

        with pytest.raises(SchemaTooNew) as caught:
            SqliteStorage(path)

        assert caught.value.found == LATEST + 1
        assert caught.value.known == LATEST
        assert "upgrade arbe" in caught.value.message
        assert path.read_bytes() == before
        assert path.stat().st_mtime_ns == mtime
        assert self.migrations(path) == [*range(1, LATEST + 1), LATEST + 1]

    def test_sqlite_writer_waits_for_lock(self, tmp_path: Path) -> None:
        """A second writer waits on the busy timeout instead of failing at once."""
        storage = SqliteStorage(tmp_path / "arbe.db")
        locked = threading.Event()

        def hold_lock() -> None:
            with storage.unit_of_work() as uow:
                uow.houses.set_setting("first", "1")
                locked.set()
                time.sleep(0.3)
                uow.commit()

        holder = threading.Thread(target=hold_lock)
        holder.start()
        locked.wait(timeout=10)
        with storage.unit_of_work() as uow:
            uow.houses.set_setting("second", "2")
            uow.commit()
        holder.join(timeout=10)

        with storage.unit_of_work(write=False) as uow:
            assert uow.houses.get_setting("first") == "1"
            assert uow.houses.get_setting("second") == "2"
