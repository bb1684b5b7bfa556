"""The ports: what the core needs from the world, as protocols.

Adapters in `arbe_adapters` implement these; services take them in their
constructors. Nothing here does I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, final

import attrs

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

if TYPE_CHECKING:
    # Only annotations use these, so importing the ports (which every CLI
    # command does) need not load the chat and runtime models.
    from arbe_core.chat import ChatMessage, ChatReply, ToolSpec
    from arbe_core.runtime import (
        Capabilities,
        Check,
        ExecResult,
        Health,
        SandboxInfo,
        SandboxSpec,
    )

__all__ = [
    "AgentRepository",
    "AuditRepository",
    "ChatModel",
    "Clock",
    "DispatchRepository",
    "EntryRepository",
    "EnvironmentRepository",
    "HouseRepository",
    "IdFactory",
    "Models",
    "Runtime",
    "Runtimes",
    "SealContext",
    "Sealer",
    "SecretRepository",
    "Storage",
    "ThreadRepository",
    "UnitOfWork",
]


# --- Time and ids ------------------------------------------------------------


class Clock(Protocol):
    """The source of the current time."""

    def now(self) -> datetime:
        """Return the current time, timezone-aware in UTC."""
        ...


class IdFactory(Protocol):
    """The source of new ids."""

    def new(self, prefix: str) -> str:
        """Return a new unique id that starts with `prefix` and `_`."""
        ...


# --- Crypto ------------------------------------------------------------------


@final
@attrs.frozen
class SealContext:
    """The binding of a sealed value, and the house key that seals it.

    The house id, secret name and version are bound as associated data, so a
    sealed value copied onto another secret, version or house does not open.
    """

    house_id: str
    name: str
    version: int
    #: The house's data key, wrapped by the master key.
    wrapped_key: bytes


class Sealer(Protocol):
    """Envelope encryption: per-house data keys wrapped by one master key."""

    def new_data_key(self) -> bytes:
        """Make a new random data key and return it wrapped by the master key."""
        ...

    def check(self, wrapped_key: bytes) -> None:
        """Check that the master key opens `wrapped_key`.

        Raises:
            MasterKeyMismatch: the key was wrapped under another master key.
        """
        ...

    def seal(self, plaintext: str, context: SealContext) -> bytes:
        """Encrypt `plaintext` under the context's data key."""
        ...

    def open(self, sealed: bytes, context: SealContext) -> str:
        """Decrypt a value sealed under the same context.

        Raises:
            MasterKeyMismatch: the data key does not open under the master key.
            CryptoError: the value was sealed for another context or altered.
        """
        ...

    def rewrap(self, wrapped_key: bytes, new_master_key: bytes) -> bytes:
        """Return `wrapped_key`'s data key wrapped by `new_master_key` instead."""
        ...


# --- Storage -----------------------------------------------------------------


class HouseRepository(Protocol):
    """Houses, their wrapped data keys and home-wide settings."""

    def add(self, house: House, wrapped_key: bytes) -> None:
        """Store a new house; raise `Conflict` if the name is taken."""
        ...

    def get(self, house_id: str) -> House | None:
        """Return the house with this id, or None."""
        ...

    def get_by_name(self, name: str) -> House | None:
        """Return the house with this name, or None."""
        ...

    def list(self) -> list[House]:
        """Return every house, ordered by name."""
        ...

    def wrapped_key(self, house_id: str) -> bytes:
        """Return the house's data key, wrapped by the master key."""
        ...

    def set_wrapped_key(self, house_id: str, wrapped_key: bytes) -> None:
        """Replace the house's wrapped data key (master key rotation)."""
        ...

    def set_active_env(self, house_id: str, env: str | None) -> None:
        """Set or clear the house's active environment."""
        ...

    def get_setting(self, key: str) -> str | None:
        """Return a home-wide setting such as the default house, or None."""
        ...

    def set_setting(self, key: str, value: str) -> None:
        """Store a home-wide setting."""
        ...


class SecretRepository(Protocol):
    """Secrets: current metadata plus the kept sealed versions."""

    def get(self, house_id: str, name: str) -> Secret | None:
        """Return the secret's current metadata, or None."""
        ...

    def list(self, house_id: str) -> list[Secret]:
        """Return the house's secrets, ordered by name."""
        ...

    def sealed(self, house_id: str, name: str, version: int) -> bytes | None:
        """Return the sealed value of one kept version, or None."""
        ...

    def put(self, secret: Secret, sealed: bytes, expected_version: int) -> None:
        """Make `secret` (with its sealed value) the current version.

        `expected_version` is the version the caller read (0 for a new
        secret). Raises `ConcurrentUpdate` when another writer got there first.
        """
        ...

    def versions(self, house_id: str, name: str) -> builtins.list[SecretVersion]:
        """Return the kept versions, newest first."""
        ...

    def prune(self, house_id: str, name: str, keep: int) -> None:
        """Drop all but the newest `keep` versions."""
        ...

    def delete(self, house_id: str, name: str) -> None:
        """Delete the secret and every kept version."""
        ...


class EnvironmentRepository(Protocol):
    """Environments of a house."""

    def get(self, house_id: str, name: str) -> Environment | None:
        """Return the environment, or None."""
        ...

    def list(self, house_id: str) -> list[Environment]:
        """Return the house's environments, ordered by name."""
        ...

    def save(self, env: Environment) -> None:
        """Insert or replace the environment."""
        ...

    def delete(self, house_id: str, name: str) -> None:
        """Delete the environment."""
        ...


class AgentRepository(Protocol):
    """Bots of a house."""

    def get(self, house_id: str, name: str) -> Agent | None:
        """Return the bot, or None."""
        ...

    def list(self, house_id: str) -> list[Agent]:
        """Return the house's bots, ordered by name."""
        ...

    def save(self, agent: Agent) -> None:
        """Insert or replace the bot."""
        ...

    def delete(self, house_id: str, name: str) -> None:
        """Delete the bot."""
        ...


class ThreadRepository(Protocol):
    """Threads of a house."""

    def add(self, thread: Thread) -> None:
        """Store a new thread."""
        ...

    def get(self, thread_id: str) -> Thread | None:
        """Return the thread, or None."""
        ...

    def list(self, house_id: str, limit: int = 100) -> list[Thread]:
        """Return the house's newest threads first, at most `limit`."""
        ...


class EntryRepository(Protocol):
    """Entries of threads, numbered per thread."""

    def last_seq(self, thread_id: str) -> int:
        """Return the highest seq of the thread (0 when empty).

        Inside a unit of work that will append, this also locks the thread so
        two writers cannot take the same seq.
        """
        ...

    def add(self, entry: Entry) -> None:
        """Store an entry whose seq is `last_seq + 1`."""
        ...

    def after(self, thread_id: str, seq: int, limit: int = 1000) -> list[Entry]:
        """Return the thread's entries with a seq above `seq`, in order."""
        ...


class DispatchRepository(Protocol):
    """Dispatches and their leases."""

    def add(self, dispatch: Dispatch) -> None:
        """Store a new dispatch."""
        ...

    def get(self, dispatch_id: str) -> Dispatch | None:
        """Return the dispatch, or None."""
        ...

    def live_for_thread(self, thread_id: str) -> Dispatch | None:
        """Return the thread's queued or running dispatch, or None."""
        ...

    def latest_for_thread(self, thread_id: str) -> Dispatch | None:
        """Return the thread's newest dispatch, or None."""
        ...

    def claim(
        self, owner: str, now: datetime, lease_until: datetime, house_id: str | None
    ) -> Dispatch | None:
        """Claim the oldest claimable dispatch, exclusively.

        Claimable means queued, or running with an expired lease (its worker
        died). The claim sets `running`, the lease and `attempts + 1`. Two
        callers never claim the same dispatch. `house_id` limits the claim to
        one house; None claims from any.
        """
        ...

    def renew(self, dispatch_id: str, owner: str, lease_until: datetime) -> bool:
        """Extend a lease that `owner` still holds; False when it was lost."""
        ...

    def finish(
        self,
        dispatch_id: str,
        owner: str | None,
        state: DispatchState,
        error: str | None,
        now: datetime,
    ) -> bool:
        """Move a live dispatch to `state`; with an owner, only if it holds the lease.

        Returns False when the dispatch is no longer live or the lease was lost.
        """
        ...

    def live_for_env(self, house_id: str, env: str) -> list[Dispatch]:
        """Return the live dispatches of threads bound to `env`."""
        ...

    def has_live_lease(self, house_id: str, now: datetime) -> bool:
        """Tell whether any dispatch of the house is running under a live lease."""
        ...

    def count_queued(self, house_id: str) -> int:
        """Return how many dispatches of the house are queued."""
        ...


class AuditRepository(Protocol):
    """The append-only audit trail."""

    def add(self, event: AuditEvent) -> None:
        """Append an event."""
        ...

    def list(
        self,
        house_id: str,
        secret: str | None = None,
        env: str | None = None,
        thread_id: str | None = None,
    ) -> list[AuditEvent]:
        """Return the house's events, oldest first, filtered by any given id."""
        ...


class UnitOfWork(Protocol):
    """One transaction over every repository.

    Use it as a context manager: leaving the block without `commit()` rolls
    back, so a failure midway writes nothing.
    """

    @property
    def houses(self) -> HouseRepository: ...

    @property
    def secrets(self) -> SecretRepository: ...

    @property
    def environments(self) -> EnvironmentRepository: ...

    @property
    def agents(self) -> AgentRepository: ...

    @property
    def threads(self) -> ThreadRepository: ...

    @property
    def entries(self) -> EntryRepository: ...

    @property
    def dispatches(self) -> DispatchRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None:
        """Make the changes of this unit durable."""
        ...


class Storage(Protocol):
    """The store of a home's houses, which hands out units of work."""

    def unit_of_work(self, write: bool = True) -> UnitOfWork:
        """Return a new unit of work; a transaction starts when it is entered.

        `write=False` promises that the unit only reads, so engines that lock
        for writing (SQLite) need not take the write lock.
        """
        ...

    def wait_for_entries(self, thread_id: str, after_seq: int, timeout: float) -> None:
        """Block until the thread may have an entry past `after_seq`, or timeout.

        A spurious wake-up is allowed; callers read again after it returns.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


# --- Models and runtimes -----------------------------------------------------


class ChatModel(Protocol):
    """One chat model behind a provider."""

    def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ChatReply:
        """Call the model once and return its reply.

        Raises:
            CredentialRejected: the provider rejected the key.
            RateLimited: retries ran out on 429.
            Transient: retries ran out on 5xx or transport errors.
            InvalidInput: the request was rejected (400, no tool support).
        """
        ...


class Runtime(Protocol):
    """A place where sandboxes live and commands run.

    Every method that takes a sandbox id raises `SandboxNotFound` for an id
    the runtime does not know or that carries another house's label.
    """

    name: str
    #: The house secret the runtime needs, or None (the local runtime).
    credential: str | None
    capabilities: Capabilities

    def provision(self, spec: SandboxSpec) -> SandboxInfo:
        """Create a started sandbox, clone the spec's repo, and return it.

        A failure after the sandbox exists destroys it before raising.
        """
        ...

    def get(self, sandbox_id: str) -> SandboxInfo:
        """Return the sandbox with this id or name."""
        ...

    def list(self) -> list[SandboxInfo]:
        """Return the house's own sandboxes."""
        ...

    def start(self, sandbox_id: str) -> SandboxInfo:
        """Start the sandbox and wait until it is started; idempotent."""
        ...

    def stop(self, sandbox_id: str) -> SandboxInfo:
        """Stop the sandbox and wait until it is stopped; idempotent."""
        ...

    def destroy(self, sandbox_id: str) -> bool:
        """Destroy the sandbox; idempotent. False when it was already gone."""
        ...

    def ping(self, sandbox_id: str) -> Health:
        """Report the sandbox's state; a stopped sandbox is not an error."""
        ...

    def exec(
        self,
        sandbox_id: str,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        """Run `command` with bash and return its result.

        `env` values arrive byte for byte and are never expanded; they are
        never placed on a command line. A command over `timeout` seconds is
        killed with every process it started, and its result reports that it timed
        out and keeps the output made before the deadline.
        """
        ...

    def diagnose(self) -> builtins.list[Check]:
        """Check the runtime's credential and reachability."""
        ...


class Runtimes(Protocol):
    """The runtimes that plugins registered, built for one house."""

    def names(self) -> list[str]:
        """Return the names of the registered runtimes."""
        ...

    def credential_name(self, runtime: str) -> str | None:
        """Return the house secret runtime `runtime` needs, or None.

        Raises:
            RuntimeNotFound: no plugin registered `runtime`.
        """
        ...

    def get(self, runtime: str) -> Runtime:
        """Build (once) and return runtime `runtime` for the house."""
        ...


class Models(Protocol):
    """The model providers that plugins registered, with their keys resolved."""

    def providers(self) -> list[str]:
        """Return the names of the registered providers."""
        ...

    def credential_name(self, provider: str) -> str | None:
        """Return the name of the secret with the provider's key, or None."""
        ...

    def key_source(self, provider: str) -> str | None:
        """Tell where the provider's key comes from: `house`, `process` or None.

        `process` means the house has no such secret and the worker's own
        environment variable of that name is used instead.
        """
        ...

    def get(self, ref: str) -> ChatModel:
        """Build a chat model for the ref `PROVIDER/MODEL`."""
        ...
