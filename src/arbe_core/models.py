"""The domain models: frozen attrs classes that services return."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import final

import attrs

__all__ = [
    "Agent",
    "AuditEvent",
    "Dispatch",
    "DispatchState",
    "Entry",
    "EntryKind",
    "Environment",
    "House",
    "Secret",
    "SecretAudience",
    "SecretBinding",
    "SecretVersion",
    "Thread",
]

DEFAULT_MODEL = "openrouter/anthropic/claude-haiku-4.5"
DEFAULT_AGENT = "arbe"


class SecretAudience(enum.StrEnum):
    """The audience of a secret: a sandbox (`environment`) or arbe itself."""

    ENVIRONMENT = "environment"
    CAPABILITY = "capability"


class EntryKind(enum.StrEnum):
    """The kind of record an entry of a thread is."""

    MESSAGE = "message"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    STATUS = "status"


class DispatchState(enum.StrEnum):
    """The life of one dispatch; the last three are terminals."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        """Tell whether the dispatch has not reached a terminal yet."""
        return self in (DispatchState.QUEUED, DispatchState.RUNNING)


@final
@attrs.frozen
class House:
    """A tenant: one person's or one team's workspace."""

    id: str
    name: str
    created_at: datetime
    active_env: str | None = None


@final
@attrs.frozen
class Secret:
    """A secret's metadata; the sealed value stays in storage."""

    house_id: str
    name: str
    audience: SecretAudience
    shared: bool
    owner: str
    version: int
    created_at: datetime
    updated_at: datetime


@final
@attrs.frozen
class SecretVersion:
    """One kept version of a secret, as `secret history` lists it."""

    name: str
    version: int
    audience: SecretAudience
    shared: bool
    created_at: datetime
    current: bool


@final
@attrs.frozen
class SecretBinding:
    """A secret name that an environment needs (required) or may use."""

    name: str
    required: bool = True


@final
@attrs.frozen
class Environment:
    """A bot's workplace: one sandbox, its allowed repos and bound secrets."""

    house_id: str
    name: str
    runtime: str
    sandbox_id: str | None
    allowed_repos: tuple[str, ...]
    bindings: tuple[SecretBinding, ...]
    created_at: datetime
    updated_at: datetime
    auto_stop_minutes: int | None = None

    def binding(self, name: str) -> SecretBinding | None:
        """Find the binding of `name`, or None when it is not bound."""
        for binding in self.bindings:
            if binding.name == name:
                return binding
        return None


@final
@attrs.frozen
class Agent:
    """A bot of the house, with its model ref and instructions."""

    house_id: str
    name: str
    model: str
    instructions: str
    created_at: datetime


@final
@attrs.frozen
class Thread:
    """A conversation; its leading entry kicks off a dispatch."""

    id: str
    house_id: str
    parent_ref: str | None
    env: str | None
    model: str | None
    created_at: datetime


@final
@attrs.frozen
class Entry:
    """One numbered entry of a thread."""

    id: str
    thread_id: str
    seq: int
    author: str
    kind: EntryKind
    body: str
    created_at: datetime
    #: Structured details: tool name and arguments, exit code, call id.
    data: dict[str, object] = attrs.field(factory=dict)


@final
@attrs.frozen
class Dispatch:
    """One run of the bots on a thread, claimed by one worker at a time."""

    id: str
    thread_id: str
    house_id: str
    trigger_seq: int
    state: DispatchState
    created_at: datetime
    updated_at: datetime
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    attempts: int = 0
    error: str | None = None


@final
@attrs.frozen
class AuditEvent:
    """One append-only record of a change: who, what, when and which ids."""

    id: str
    house_id: str
    at: datetime
    actor: str
    action: str
    secret: str | None = None
    env: str | None = None
    sandbox_id: str | None = None
    thread_id: str | None = None
    details: dict[str, object] = attrs.field(factory=dict)
