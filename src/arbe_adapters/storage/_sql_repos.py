"""Repositories over SQL, shared by SQLite and PostgreSQL.

Statements use `?` placeholders; the PostgreSQL adapter's executor turns them
into `%s`. Times are fixed-width UTC text (see `_codec.ts`), so comparing
them as text compares them as times on both engines.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from arbe_adapters.storage import _codec as codec
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
    SecretAudience,
    SecretVersion,
    Thread,
)


class Executor(Protocol):
    """Runs one statement in the current transaction."""

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> Any: ...


class SqlHouses:
    """Houses and settings over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def add(self, house: House, wrapped_key: bytes) -> None:
        """Insert a house; raise `Conflict` if its name is taken."""
        if self.get_by_name(house.name) is not None:
            raise Conflict(f"House {house.name!r} already exists.")
        self.q(
            "INSERT INTO houses (id, name, created_at, active_env, wrapped_key) "
            "VALUES (?, ?, ?, ?, ?)",
            (house.id, house.name, codec.ts(house.created_at), None, wrapped_key),
        )

    def get(self, house_id: str) -> House | None:
        """Return the house with this id, or None."""
        row = self.q(
            "SELECT id, name, created_at, active_env FROM houses WHERE id = ?",
            (house_id,),
        ).fetchone()
        return None if row is None else codec.house(row)

    def get_by_name(self, name: str) -> House | None:
        """Return the house with this name, or None."""
        row = self.q(
            "SELECT id, name, created_at, active_env FROM houses WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else codec.house(row)

    def list(self) -> list[House]:
        """Return every house by name."""
        rows = self.q(
            "SELECT id, name, created_at, active_env FROM houses ORDER BY name"
        ).fetchall()
        return [codec.house(r) for r in rows]

    def wrapped_key(self, house_id: str) -> bytes:
        """Return the house's wrapped data key."""
        row = self.q(
            "SELECT wrapped_key FROM houses WHERE id = ?", (house_id,)
        ).fetchone()
        return bytes(row[0])

    def set_wrapped_key(self, house_id: str, wrapped_key: bytes) -> None:
        """Replace the house's wrapped data key."""
        self.q(
            "UPDATE houses SET wrapped_key = ? WHERE id = ?", (wrapped_key, house_id)
        )

    def set_active_env(self, house_id: str, env: str | None) -> None:
        """Set or clear the active environment."""
        self.q("UPDATE houses SET active_env = ? WHERE id = ?", (env, house_id))

    def get_setting(self, key: str) -> str | None:
        """Return a home-wide setting, or None."""
        row = self.q("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        """Store a home-wide setting."""
        self.q(
            "INSERT INTO settings (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


_SECRET_COLUMNS = (
    "house_id, name, audience, shared, owner, version, created_at, updated_at"
)


class SqlSecrets:
    """Secrets and their kept versions over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def get(self, house_id: str, name: str) -> Secret | None:
        """Return the secret's current metadata, or None."""
        row = self.q(
            f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE house_id = ? AND name = ?",
            (house_id, name),
        ).fetchone()
        return None if row is None else codec.secret(row)

    def list(self, house_id: str) -> list[Secret]:
        """Return the house's secrets by name."""
        rows = self.q(
            f"SELECT {_SECRET_COLUMNS} FROM secrets WHERE house_id = ? ORDER BY name",
            (house_id,),
        ).fetchall()
        return [codec.secret(r) for r in rows]

    def sealed(self, house_id: str, name: str, version: int) -> bytes | None:
        """Return one kept version's sealed value, or None."""
        row = self.q(
            "SELECT sealed FROM secret_versions "
            "WHERE house_id = ? AND name = ? AND version = ?",
            (house_id, name, version),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, secret: Secret, sealed: bytes, expected_version: int) -> None:
        """Write a new current version, checking no other writer got there first."""
        values = (
            secret.audience.value,
            int(secret.shared),
            secret.owner,
            secret.version,
            codec.ts(secret.created_at),
            codec.ts(secret.updated_at),
        )
        if expected_version == 0:
            if self.get(secret.house_id, secret.name) is not None:
                raise ConcurrentUpdate(f"Secret {secret.name!r} was created meanwhile.")
            self.q(
                f"INSERT INTO secrets ({_SECRET_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (secret.house_id, secret.name, *values),
            )
        else:
            cursor = self.q(
                "UPDATE secrets SET audience = ?, shared = ?, owner = ?, version = ?, "
                "created_at = ?, updated_at = ? "
                "WHERE house_id = ? AND name = ? AND version = ?",
                (*values, secret.house_id, secret.name, expected_version),
            )
            if cursor.rowcount != 1:
                raise ConcurrentUpdate(f"Secret {secret.name!r} changed meanwhile.")
        self.q(
            "INSERT INTO secret_versions "
            "(house_id, name, version, sealed, audience, shared, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                secret.house_id,
                secret.name,
                secret.version,
                sealed,
                secret.audience.value,
                int(secret.shared),
                codec.ts(secret.updated_at),
            ),
        )

    def versions(self, house_id: str, name: str) -> builtins.list[SecretVersion]:
        """Return the kept versions, newest first."""
        current = self.get(house_id, name)
        rows = self.q(
            "SELECT version, audience, shared, created_at FROM secret_versions "
            "WHERE house_id = ? AND name = ? ORDER BY version DESC",
            (house_id, name),
        ).fetchall()
        return [
            SecretVersion(
                name=name,
                version=int(r[0]),
                audience=SecretAudience(r[1]),
                shared=bool(r[2]),
                created_at=datetime.fromisoformat(r[3]),
                current=current is not None and current.version == int(r[0]),
            )
            for r in rows
        ]

    def prune(self, house_id: str, name: str, keep: int) -> None:
        """Drop all but the newest `keep` versions."""
        self.q(
            "DELETE FROM secret_versions WHERE house_id = ? AND name = ? AND version <= "
            "(SELECT MAX(version) FROM secret_versions WHERE house_id = ? AND name = ?) - ?",
            (house_id, name, house_id, name, keep),
        )

    def delete(self, house_id: str, name: str) -> None:
        """Delete the secret and its history."""
        self.q(
            "DELETE FROM secret_versions WHERE house_id = ? AND name = ?",
            (house_id, name),
        )
        self.q("DELETE FROM secrets WHERE house_id = ? AND name = ?", (house_id, name))


_ENV_COLUMNS = (
    "house_id, name, runtime, sandbox_id, allowed_repos, bindings, "
    "auto_stop_minutes, created_at, updated_at"
)


class SqlEnvironments:
    """Environments over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def get(self, house_id: str, name: str) -> Environment | None:
        """Return the environment, or None."""
        row = self.q(
            f"SELECT {_ENV_COLUMNS} FROM environments WHERE house_id = ? AND name = ?",
            (house_id, name),
        ).fetchone()
        return None if row is None else codec.environment(row)

    def list(self, house_id: str) -> list[Environment]:
        """Return the house's environments by name."""
        rows = self.q(
            f"SELECT {_ENV_COLUMNS} FROM environments WHERE house_id = ? ORDER BY name",
            (house_id,),
        ).fetchall()
        return [codec.environment(r) for r in rows]

    def save(self, env: Environment) -> None:
        """Insert or replace the environment."""
        self.delete(env.house_id, env.name)
        self.q(
            f"INSERT INTO environments ({_ENV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                env.house_id,
                env.name,
                env.runtime,
                env.sandbox_id,
                json.dumps(list(env.allowed_repos)),
                codec.bindings_json(env.bindings),
                env.auto_stop_minutes,
                codec.ts(env.created_at),
                codec.ts(env.updated_at),
            ),
        )

    def delete(self, house_id: str, name: str) -> None:
        """Delete the environment."""
        self.q(
            "DELETE FROM environments WHERE house_id = ? AND name = ?", (house_id, name)
        )


class SqlAgents:
    """Bots over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def get(self, house_id: str, name: str) -> Agent | None:
        """Return the bot, or None."""
        row = self.q(
            "SELECT house_id, name, model, instructions, created_at FROM agents "
            "WHERE house_id = ? AND name = ?",
            (house_id, name),
        ).fetchone()
        return None if row is None else codec.agent(row)

    def list(self, house_id: str) -> list[Agent]:
        """Return the house's bots by name."""
        rows = self.q(
            "SELECT house_id, name, model, instructions, created_at FROM agents "
            "WHERE house_id = ? ORDER BY name",
            (house_id,),
        ).fetchall()
        return [codec.agent(r) for r in rows]

    def save(self, agent: Agent) -> None:
        """Insert or replace the bot."""
        self.delete(agent.house_id, agent.name)
        self.q(
            "INSERT INTO agents (house_id, name, model, instructions, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                agent.house_id,
                agent.name,
                agent.model,
                agent.instructions,
                codec.ts(agent.created_at),
            ),
        )

    def delete(self, house_id: str, name: str) -> None:
        """Delete the bot."""
        self.q("DELETE FROM agents WHERE house_id = ? AND name = ?", (house_id, name))


class SqlThreads:
    """Threads over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def add(self, thread: Thread) -> None:
        """Insert a thread."""
        self.q(
            "INSERT INTO threads (id, house_id, parent_ref, env, model, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                thread.id,
                thread.house_id,
                thread.parent_ref,
                thread.env,
                thread.model,
                codec.ts(thread.created_at),
            ),
        )

    def get(self, thread_id: str) -> Thread | None:
        """Return the thread, or None."""
        row = self.q(
            "SELECT id, house_id, parent_ref, env, model, created_at FROM threads "
            "WHERE id = ?",
            (thread_id,),
        ).fetchone()
        return None if row is None else codec.thread(row)

    def list(self, house_id: str, limit: int = 100) -> list[Thread]:
        """Return the newest threads first."""
        rows = self.q(
            "SELECT id, house_id, parent_ref, env, model, created_at FROM threads "
            "WHERE house_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (house_id, limit),
        ).fetchall()
        return [codec.thread(r) for r in rows]


_ENTRY_COLUMNS = "id, thread_id, seq, author, kind, body, data, created_at"


class SqlEntries:
    """Entries over SQL, numbered per thread."""

    def __init__(self, q: Executor, lock_thread_sql: str | None = None) -> None:
        self.q = q
        self.lock_thread_sql = lock_thread_sql

    def last_seq(self, thread_id: str) -> int:
        """Return the highest seq of the thread, locking it where the engine needs."""
        if self.lock_thread_sql:
            self.q(self.lock_thread_sql, (thread_id,))
        row = self.q(
            "SELECT MAX(seq) FROM entries WHERE thread_id = ?", (thread_id,)
        ).fetchone()
        return int(row[0] or 0)

    def add(self, entry: Entry) -> None:
        """Insert an entry."""
        self.q(
            f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.id,
                entry.thread_id,
                entry.seq,
                entry.author,
                entry.kind.value,
                entry.body,
                json.dumps(entry.data) if entry.data else None,
                codec.ts(entry.created_at),
            ),
        )

    def after(self, thread_id: str, seq: int, limit: int = 1000) -> list[Entry]:
        """Return entries past `seq`, in order."""
        rows = self.q(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE thread_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (thread_id, seq, limit),
        ).fetchall()
        return [codec.entry(r) for r in rows]


_DISPATCH_COLUMNS = (
    "id, thread_id, house_id, trigger_seq, state, created_at, updated_at, "
    "lease_owner, lease_expires_at, attempts, error"
)


class SqlDispatches:
    """Dispatches over SQL; the engine supplies the claim's row lock clause."""

    def __init__(self, q: Executor, skip_locked: bool) -> None:
        self.q = q
        self.skip_locked = skip_locked

    def _one(self, where: str, params: Sequence[Any]) -> Dispatch | None:
        row = self.q(
            f"SELECT {_DISPATCH_COLUMNS} FROM dispatches WHERE {where} "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            params,
        ).fetchone()
        return None if row is None else codec.dispatch(row)

    def add(self, dispatch: Dispatch) -> None:
        """Insert a dispatch."""
        d = dispatch
        self.q(
            f"INSERT INTO dispatches ({_DISPATCH_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d.id,
                d.thread_id,
                d.house_id,
                d.trigger_seq,
                d.state.value,
                codec.ts(d.created_at),
                codec.ts(d.updated_at),
                d.lease_owner,
                codec.ts(d.lease_expires_at),
                d.attempts,
                d.error,
            ),
        )

    def get(self, dispatch_id: str) -> Dispatch | None:
        """Return the dispatch, or None."""
        return self._one("id = ?", (dispatch_id,))

    def live_for_thread(self, thread_id: str) -> Dispatch | None:
        """Return the thread's live dispatch, or None."""
        return self._one(
            "thread_id = ? AND state IN ('queued', 'running')", (thread_id,)
        )

    def latest_for_thread(self, thread_id: str) -> Dispatch | None:
        """Return the thread's newest dispatch, or None."""
        return self._one("thread_id = ?", (thread_id,))

    def claim(
        self, owner: str, now: datetime, lease_until: datetime, house_id: str | None
    ) -> Dispatch | None:
        """Claim the oldest queued (or lease-expired running) dispatch."""
        lock = " FOR UPDATE SKIP LOCKED" if self.skip_locked else ""
        house_clause = "" if house_id is None else " AND house_id = ?"
        params: list[Any] = [codec.ts(now)]
        if house_id is not None:
            params.append(house_id)
        row = self.q(
            "SELECT id FROM dispatches WHERE (state = 'queued' OR "
            "(state = 'running' AND lease_expires_at < ?))"
            f"{house_clause} ORDER BY created_at, id LIMIT 1{lock}",
            params,
        ).fetchone()
        if row is None:
            return None
        self.q(
            "UPDATE dispatches SET state = 'running', lease_owner = ?, "
            "lease_expires_at = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (owner, codec.ts(lease_until), codec.ts(now), row[0]),
        )
        return self.get(row[0])

    def renew(self, dispatch_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend a lease still held by `owner`."""
        cursor = self.q(
            "UPDATE dispatches SET lease_expires_at = ? "
            "WHERE id = ? AND lease_owner = ? AND state = 'running'",
            (codec.ts(lease_until), dispatch_id, owner),
        )
        return bool(cursor.rowcount == 1)

    def finish(
        self,
        dispatch_id: str,
        owner: str | None,
        state: DispatchState,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Move a live dispatch to `state`."""
        owner_clause = "" if owner is None else " AND lease_owner = ?"
        params: list[Any] = [state.value, error, codec.ts(now), dispatch_id]
        if owner is not None:
            params.append(owner)
        cursor = self.q(
            "UPDATE dispatches SET state = ?, error = ?, updated_at = ?, "
            "lease_expires_at = NULL WHERE id = ? AND state IN ('queued', 'running')"
            f"{owner_clause}",
            params,
        )
        return bool(cursor.rowcount == 1)

    def live_for_env(self, house_id: str, env: str) -> list[Dispatch]:
        """Return live dispatches of threads bound to `env`."""
        columns = ", ".join(f"d.{c.strip()}" for c in _DISPATCH_COLUMNS.split(","))
        rows = self.q(
            f"SELECT {columns} FROM dispatches d JOIN threads t ON t.id = d.thread_id "
            "WHERE d.house_id = ? AND t.env = ? AND d.state IN ('queued', 'running')",
            (house_id, env),
        ).fetchall()
        return [codec.dispatch(r) for r in rows]

    def has_live_lease(self, house_id: str, now: datetime) -> bool:
        """Tell whether a dispatch of the house runs under a live lease."""
        row = self.q(
            "SELECT 1 FROM dispatches WHERE house_id = ? AND state = 'running' "
            "AND lease_expires_at >= ? LIMIT 1",
            (house_id, codec.ts(now)),
        ).fetchone()
        return row is not None

    def count_queued(self, house_id: str) -> int:
        """Return how many dispatches of the house are queued."""
        row = self.q(
            "SELECT COUNT(*) FROM dispatches WHERE house_id = ? AND state = 'queued'",
            (house_id,),
        ).fetchone()
        return int(row[0])


_AUDIT_COLUMNS = (
    "id, house_id, at, actor, action, secret, env, sandbox_id, thread_id, details"
)


class SqlAudit:
    """The append-only audit trail over SQL."""

    def __init__(self, q: Executor) -> None:
        self.q = q

    def add(self, event: AuditEvent) -> None:
        """Append an event."""
        self.q(
            f"INSERT INTO audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.id,
                event.house_id,
                codec.ts(event.at),
                event.actor,
                event.action,
                event.secret,
                event.env,
                event.sandbox_id,
                event.thread_id,
                json.dumps(event.details) if event.details else None,
            ),
        )

    def list(
        self,
        house_id: str,
        secret: str | None = None,
        env: str | None = None,
        thread_id: str | None = None,
    ) -> builtins.list[AuditEvent]:
        """Return the house's events, oldest first, filtered by the given ids."""
        where = ["house_id = ?"]
        params: builtins.list[Any] = [house_id]
        for column, value in (
            ("secret", secret),
            ("env", env),
            ("thread_id", thread_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        rows = self.q(
            f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE {' AND '.join(where)} "
            "ORDER BY at, id",
            params,
        ).fetchall()
        return [codec.audit(r) for r in rows]
