"""Conversions between models and database rows, shared by the SQL adapters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

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

Row = Any


def ts(value: datetime | None) -> str | None:
    """Format a time as fixed-width UTC ISO text, so text order is time order."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def parse_ts(text: str | None) -> datetime | None:
    """Parse text written by `ts`."""
    return None if text is None else datetime.fromisoformat(text)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def house(row: Row) -> House:
    """Build a House from (id, name, created_at, active_env)."""
    return House(id=row[0], name=row[1], created_at=_ts(row[2]), active_env=row[3])


def secret(row: Row) -> Secret:
    """Build a Secret from its columns in table order."""
    return Secret(
        house_id=row[0],
        name=row[1],
        audience=SecretAudience(row[2]),
        shared=bool(row[3]),
        owner=row[4],
        version=int(row[5]),
        created_at=_ts(row[6]),
        updated_at=_ts(row[7]),
    )


def bindings_json(bindings: tuple[SecretBinding, ...]) -> str:
    """Encode bindings as JSON."""
    return json.dumps([{"name": b.name, "required": b.required} for b in bindings])


def environment(row: Row) -> Environment:
    """Build an Environment from its columns in table order."""
    return Environment(
        house_id=row[0],
        name=row[1],
        runtime=row[2],
        sandbox_id=row[3],
        allowed_repos=tuple(json.loads(row[4])),
        bindings=tuple(
            SecretBinding(b["name"], bool(b["required"])) for b in json.loads(row[5])
        ),
        auto_stop_minutes=row[6],
        created_at=_ts(row[7]),
        updated_at=_ts(row[8]),
    )


def agent(row: Row) -> Agent:
    """Build an Agent from its columns in table order."""
    return Agent(
        house_id=row[0],
        name=row[1],
        model=row[2],
        instructions=row[3],
        created_at=_ts(row[4]),
    )


def thread(row: Row) -> Thread:
    """Build a Thread from its columns in table order."""
    return Thread(
        id=row[0],
        house_id=row[1],
        parent_ref=row[2],
        env=row[3],
        model=row[4],
        created_at=_ts(row[5]),
    )


def entry(row: Row) -> Entry:
    """Build an Entry from its columns in table order."""
    return Entry(
        id=row[0],
        thread_id=row[1],
        seq=int(row[2]),
        author=row[3],
        kind=EntryKind(row[4]),
        body=row[5],
        data=json.loads(row[6]) if row[6] else {},
        created_at=_ts(row[7]),
    )


def dispatch(row: Row) -> Dispatch:
    """Build a Dispatch from its columns in table order."""
    return Dispatch(
        id=row[0],
        thread_id=row[1],
        house_id=row[2],
        trigger_seq=int(row[3]),
        state=DispatchState(row[4]),
        created_at=_ts(row[5]),
        updated_at=_ts(row[6]),
        lease_owner=row[7],
        lease_expires_at=parse_ts(row[8]),
        attempts=int(row[9]),
        error=row[10],
    )


def audit(row: Row) -> AuditEvent:
    """Build an AuditEvent from its columns in table order."""
    return AuditEvent(
        id=row[0],
        house_id=row[1],
        at=_ts(row[2]),
        actor=row[3],
        action=row[4],
        secret=row[5],
        env=row[6],
        sandbox_id=row[7],
        thread_id=row[8],
        details=json.loads(row[9]) if row[9] else {},
    )
