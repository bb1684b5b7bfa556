"""In-memory storage for unit tests and embedders that keep nothing."""

from __future__ import annotations

import builtins
import copy
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Any, Self, final

import attrs

from arbe_core.errors import ConcurrentUpdate, Conflict
from arbe_core.models import (
    Agent,
    AuditEvent,
    Dispatch,
    DispatchState,
    Entry,
    Environment,
    House,
    Secret,
    SecretVersion,
    Thread,
)


@attrs.define
class _State:
    houses: dict[str, House] = attrs.Factory(dict)
    keys: dict[str, bytes] = attrs.Factory(dict)
    settings: dict[str, str] = attrs.Factory(dict)
    secrets: dict[tuple[str, str], Secret] = attrs.Factory(dict)
    versions: dict[tuple[str, str], dict[int, tuple[bytes, SecretVersion]]] = (
        attrs.Factory(dict)
    )
    environments: dict[tuple[str, str], Environment] = attrs.Factory(dict)
    agents: dict[tuple[str, str], Agent] = attrs.Factory(dict)
    threads: dict[str, Thread] = attrs.Factory(dict)
    entries: dict[str, list[Entry]] = attrs.Factory(dict)
    dispatches: dict[str, Dispatch] = attrs.Factory(dict)
    audit: list[AuditEvent] = attrs.Factory(list)


class _Houses:
    def __init__(self, s: _State) -> None:
        self.s = s

    def add(self, house: House, wrapped_key: bytes) -> None:
        if self.get_by_name(house.name) is not None:
            raise Conflict(f"House {house.name!r} already exists.")
        self.s.houses[house.id] = house
        self.s.keys[house.id] = wrapped_key

    def get(self, house_id: str) -> House | None:
        return self.s.houses.get(house_id)

    def get_by_name(self, name: str) -> House | None:
        return next((h for h in self.s.houses.values() if h.name == name), None)

    def list(self) -> list[House]:
        return sorted(self.s.houses.values(), key=lambda h: h.name)

    def wrapped_key(self, house_id: str) -> bytes:
        return self.s.keys[house_id]

    def set_wrapped_key(self, house_id: str, wrapped_key: bytes) -> None:
        self.s.keys[house_id] = wrapped_key

    def set_active_env(self, house_id: str, env: str | None) -> None:
        self.s.houses[house_id] = attrs.evolve(self.s.houses[house_id], active_env=env)

    def get_setting(self, key: str) -> str | None:
        return self.s.settings.get(key)

    def set_setting(self, key: str, value: str) -> None:
        self.s.settings[key] = value


class _Secrets:
    def __init__(self, s: _State) -> None:
        self.s = s

    def get(self, house_id: str, name: str) -> Secret | None:
        return self.s.secrets.get((house_id, name))

    def list(self, house_id: str) -> list[Secret]:
        found = [v for (h, _), v in self.s.secrets.items() if h == house_id]
        return sorted(found, key=lambda v: v.name)

    def sealed(self, house_id: str, name: str, version: int) -> bytes | None:
        kept = self.s.versions.get((house_id, name), {}).get(version)
        return None if kept is None else kept[0]

    def put(self, secret: Secret, sealed: bytes, expected_version: int) -> None:
        key = (secret.house_id, secret.name)
        current = self.s.secrets.get(key)
        if (current.version if current else 0) != expected_version:
            raise ConcurrentUpdate(f"Secret {secret.name!r} changed meanwhile.")
        self.s.secrets[key] = secret
        record = SecretVersion(
            name=secret.name,
            version=secret.version,
            audience=secret.audience,
            shared=secret.shared,
            created_at=secret.updated_at,
            current=True,
        )
        self.s.versions.setdefault(key, {})[secret.version] = (sealed, record)

    def versions(self, house_id: str, name: str) -> builtins.list[SecretVersion]:
        current = self.s.secrets.get((house_id, name))
        kept = self.s.versions.get((house_id, name), {})
        return [
            attrs.evolve(
                record, current=current is not None and current.version == number
            )
            for number, (_, record) in sorted(kept.items(), reverse=True)
        ]

    def prune(self, house_id: str, name: str, keep: int) -> None:
        kept = self.s.versions.get((house_id, name), {})
        for number in sorted(kept)[:-keep]:
            del kept[number]

    def delete(self, house_id: str, name: str) -> None:
        self.s.secrets.pop((house_id, name), None)
        self.s.versions.pop((house_id, name), None)


class _Named:
    def __init__(self, table: dict[tuple[str, str], Any]) -> None:
        self.table = table

    def get(self, house_id: str, name: str) -> Any:
        return self.table.get((house_id, name))

    def list(self, house_id: str) -> list[Any]:
        found = [v for (h, _), v in self.table.items() if h == house_id]
        return sorted(found, key=lambda v: v.name)

    def save(self, item: Any) -> None:
        self.table[(item.house_id, item.name)] = item

    def delete(self, house_id: str, name: str) -> None:
        self.table.pop((house_id, name), None)


class _Threads:
    def __init__(self, s: _State) -> None:
        self.s = s

    def add(self, thread: Thread) -> None:
        self.s.threads[thread.id] = thread

    def get(self, thread_id: str) -> Thread | None:
        return self.s.threads.get(thread_id)

    def list(self, house_id: str, limit: int = 100) -> list[Thread]:
        found = [t for t in self.s.threads.values() if t.house_id == house_id]
        found.sort(key=lambda t: (t.created_at, t.id), reverse=True)
        return found[:limit]


class _Entries:
    def __init__(self, s: _State) -> None:
        self.s = s

    def last_seq(self, thread_id: str) -> int:
        entries = self.s.entries.get(thread_id, [])
        return entries[-1].seq if entries else 0

    def add(self, entry: Entry) -> None:
        entries = self.s.entries.setdefault(entry.thread_id, [])
        if entry.seq != (entries[-1].seq if entries else 0) + 1:
            raise ConcurrentUpdate(f"Entry seq {entry.seq} is taken.")
        entries.append(entry)

    def after(self, thread_id: str, seq: int, limit: int = 1000) -> list[Entry]:
        entries = self.s.entries.get(thread_id, [])
        return entries[seq : seq + limit]


class _Dispatches:
    def __init__(self, s: _State) -> None:
        self.s = s

    def add(self, dispatch: Dispatch) -> None:
        self.s.dispatches[dispatch.id] = dispatch

    def get(self, dispatch_id: str) -> Dispatch | None:
        return self.s.dispatches.get(dispatch_id)

    def _of_thread(self, thread_id: str) -> list[Dispatch]:
        found = [d for d in self.s.dispatches.values() if d.thread_id == thread_id]
        return sorted(found, key=lambda d: (d.created_at, d.id))

    def live_for_thread(self, thread_id: str) -> Dispatch | None:
        live = [d for d in self._of_thread(thread_id) if d.state.live]
        return live[-1] if live else None

    def latest_for_thread(self, thread_id: str) -> Dispatch | None:
        found = self._of_thread(thread_id)
        return found[-1] if found else None

    def claim(
        self, owner: str, now: datetime, lease_until: datetime, house_id: str | None
    ) -> Dispatch | None:
        def claimable(d: Dispatch) -> bool:
            expired = (
                d.state is DispatchState.RUNNING
                and d.lease_expires_at is not None
                and d.lease_expires_at < now
            )
            mine = house_id is None or d.house_id == house_id
            return mine and (d.state is DispatchState.QUEUED or expired)

        candidates = sorted(
            filter(claimable, self.s.dispatches.values()),
            key=lambda d: (d.created_at, d.id),
        )
        if not candidates:
            return None
        claimed = attrs.evolve(
            candidates[0],
            state=DispatchState.RUNNING,
            lease_owner=owner,
            lease_expires_at=lease_until,
            attempts=candidates[0].attempts + 1,
            updated_at=now,
        )
        self.s.dispatches[claimed.id] = claimed
        return claimed

    def renew(self, dispatch_id: str, owner: str, lease_until: datetime) -> bool:
        d = self.s.dispatches.get(dispatch_id)
        if d is None or d.lease_owner != owner or d.state is not DispatchState.RUNNING:
            return False
        self.s.dispatches[dispatch_id] = attrs.evolve(d, lease_expires_at=lease_until)
        return True

    def finish(
        self,
        dispatch_id: str,
        owner: str | None,
        state: DispatchState,
        error: str | None,
        now: datetime,
    ) -> bool:
        d = self.s.dispatches.get(dispatch_id)
        if d is None or not d.state.live:
            return False
        if owner is not None and d.lease_owner != owner:
            return False
        self.s.dispatches[dispatch_id] = attrs.evolve(
            d, state=state, error=error, updated_at=now, lease_expires_at=None
        )
        return True

    def live_for_env(self, house_id: str, env: str) -> list[Dispatch]:
        return [
            d
            for d in self.s.dispatches.values()
            if d.house_id == house_id
            and d.state.live
            and self.s.threads[d.thread_id].env == env
        ]

    def has_live_lease(self, house_id: str, now: datetime) -> bool:
        return any(
            d.house_id == house_id
            and d.state is DispatchState.RUNNING
            and d.lease_expires_at is not None
            and d.lease_expires_at >= now
            for d in self.s.dispatches.values()
        )

    def count_queued(self, house_id: str) -> int:
        return sum(
            1
            for d in self.s.dispatches.values()
            if d.house_id == house_id and d.state is DispatchState.QUEUED
        )


class _Audit:
    def __init__(self, s: _State) -> None:
        self.s = s

    def add(self, event: AuditEvent) -> None:
        self.s.audit.append(event)

    def list(
        self,
        house_id: str,
        secret: str | None = None,
        env: str | None = None,
        thread_id: str | None = None,
    ) -> builtins.list[AuditEvent]:
        found = [
            e
            for e in self.s.audit
            if e.house_id == house_id
            and (secret is None or e.secret == secret)
            and (env is None or e.env == env)
            and (thread_id is None or e.thread_id == thread_id)
        ]
        return sorted(found, key=lambda e: (e.at, e.id))


@final
class InMemoryUnitOfWork:
    """A transaction over a private copy of the state, swapped in on commit."""

    def __init__(self, storage: InMemoryStorage) -> None:
        self._storage = storage
        self._committed = False

    def __enter__(self) -> Self:
        self._storage._lock.acquire()
        self._state = copy.deepcopy(self._storage._state)
        s = self._state
        self.houses = _Houses(s)
        self.secrets = _Secrets(s)
        self.environments = _Named(s.environments)
        self.agents = _Named(s.agents)
        self.threads = _Threads(s)
        self.entries = _Entries(s)
        self.dispatches = _Dispatches(s)
        self.audit = _Audit(s)
        return self

    def commit(self) -> None:
        """Make this unit's changes the storage's state."""
        self._storage._state = self._state
        self._state = copy.deepcopy(self._state)
        self._committed = True
        with self._storage._changed:
            self._storage._changed.notify_all()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._storage._lock.release()


@final
class InMemoryStorage:
    """Storage in process memory: units of work run one at a time."""

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self._changed = threading.Condition()

    def unit_of_work(self, write: bool = True) -> InMemoryUnitOfWork:
        """Return a unit of work."""
        return InMemoryUnitOfWork(self)

    def wait_for_entries(self, thread_id: str, after_seq: int, timeout: float) -> None:
        """Block until a commit adds an entry past `after_seq`, or timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                entries = self._state.entries.get(thread_id, [])
                if entries and entries[-1].seq > after_seq:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)

    def close(self) -> None:
        """Nothing to release."""
