"""The errors arbe raises, as one hierarchy.

```
ArbeError
├── NotFound
│   ├── HouseNotFound
│   ├── SecretNotFound
│   ├── SecretVersionNotFound
│   ├── EnvironmentNotFound
│   ├── AgentNotFound
│   ├── ThreadNotFound
│   ├── SandboxNotFound
│   └── RuntimeNotFound / ProviderNotFound
├── InvalidInput
│   └── InvalidName
├── Conflict
│   └── ConcurrentUpdate
├── Unsupported
├── Transient
│   ├── RateLimited
│   └── OperationTimedOut
├── Unavailable
│   ├── CredentialMissing
│   ├── CredentialRejected
│   └── SandboxUnreachable
└── CryptoError
    ├── MasterKeyMismatch
    └── KeyFileInsecure
```

Every message is one or two sentences: what failed, on which value and why,
then the fix. No message ever contains a secret value.
"""

from __future__ import annotations

__all__ = [
    "AgentNotFound",
    "ArbeError",
    "ConcurrentUpdate",
    "Conflict",
    "CredentialMissing",
    "CredentialRejected",
    "CryptoError",
    "EnvironmentNotFound",
    "HouseNotFound",
    "InvalidInput",
    "InvalidName",
    "KeyFileInsecure",
    "MasterKeyMismatch",
    "NotFound",
    "OperationTimedOut",
    "ProviderNotFound",
    "RateLimited",
    "RuntimeNotFound",
    "SandboxNotFound",
    "SandboxUnreachable",
    "SchemaTooNew",
    "SecretNotFound",
    "SecretVersionNotFound",
    "ThreadNotFound",
    "Transient",
    "Unavailable",
    "Unsupported",
]


class ArbeError(Exception):
    """Root of every error that arbe raises on purpose."""

    #: A short machine-readable code, used in `--json` error objects.
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, object]:
        """Return the error as a JSON-ready mapping for `--json` output."""
        return {
            "error": self.code,
            "type": type(self).__name__,
            "message": self.message,
        }


# --- Not found ---------------------------------------------------------------


class NotFound(ArbeError):
    """A named or identified object does not exist."""

    code = "not_found"


class HouseNotFound(NotFound):
    """No house has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"House {name!r} not found. List houses with `arbe house list` "
            f"or create it with `arbe house create {name}`."
        )
        self.name = name


class SecretNotFound(NotFound):
    """The house has no secret of this name."""

    def __init__(self, name: str, house: str) -> None:
        super().__init__(
            f"Secret {name!r} not found in house {house!r}. "
            f"Set it with `arbe secret set {name}`."
        )
        self.name = name
        self.house = house


class SecretVersionNotFound(NotFound):
    """The secret exists but does not keep the requested version."""

    def __init__(self, name: str, version: int, kept: list[int]) -> None:
        kept_text = ", ".join(str(v) for v in kept) or "none"
        super().__init__(
            f"Version {version} of secret {name!r} is not kept "
            f"(kept versions: {kept_text}). See `arbe secret history {name}`."
        )
        self.name = name
        self.version = version
        self.kept = kept


class EnvironmentNotFound(NotFound):
    """The house has no environment of this name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Environment {name!r} not found. List environments with "
            f"`arbe env list` or create it with `arbe env create {name}`."
        )
        self.name = name


class AgentNotFound(NotFound):
    """The house has no bot of this name."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Bot {name!r} not found. List bots with `arbe agent list` "
            f"or create it with `arbe agent create {name}`."
        )
        self.name = name


class ThreadNotFound(NotFound):
    """No thread of the house has this id."""

    def __init__(self, thread_id: str) -> None:
        super().__init__(
            f"Thread {thread_id!r} not found. List threads with `arbe thread list`."
        )
        self.thread_id = thread_id


class SandboxNotFound(NotFound):
    """The runtime has no sandbox with this id (or it is not the house's)."""

    def __init__(self, sandbox_id: str, runtime: str) -> None:
        super().__init__(
            f"Sandbox {sandbox_id!r} not found on runtime {runtime!r}. "
            f"List sandboxes with `arbe sandbox list --runtime {runtime}`."
        )
        self.sandbox_id = sandbox_id
        self.runtime = runtime


class RuntimeNotFound(NotFound):
    """No loaded plugin registers a runtime of this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"Runtime {name!r} not found; the loaded runtimes are "
            f"{', '.join(known) or 'none'}. See `arbe plugins`."
        )
        self.name = name
        self.known = known


class ProviderNotFound(NotFound):
    """No loaded plugin registers a model provider of this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"Model provider {name!r} not found; the loaded providers are "
            f"{', '.join(known) or 'none'}. A model ref is PROVIDER/MODEL, "
            f"for example openrouter/anthropic/claude-haiku-4.5."
        )
        self.name = name
        self.known = known


# --- Invalid input -----------------------------------------------------------


class InvalidInput(ArbeError):
    """A value given by the caller breaks a documented rule."""

    code = "invalid_input"


class InvalidName(InvalidInput):
    """A name does not match the pattern for its kind."""

    def __init__(self, kind: str, name: str, rule: str) -> None:
        super().__init__(f"Invalid {kind} name {name!r}: {rule}.")
        self.kind = kind
        self.name = name
        self.rule = rule


# --- Conflict ----------------------------------------------------------------


class Conflict(ArbeError):
    """The request clashes with the current state of an object."""

    code = "conflict"


class ConcurrentUpdate(Conflict):
    """Another writer changed the object first; the caller may retry."""


# --- Unsupported -------------------------------------------------------------


class Unsupported(ArbeError):
    """The runtime or provider cannot do this operation."""

    code = "unsupported"

    def __init__(self, operation: str, runtime: str, reason: str) -> None:
        super().__init__(f"Runtime {runtime!r} does not support {operation}: {reason}.")
        self.operation = operation
        self.runtime = runtime


# --- Transient ---------------------------------------------------------------


class Transient(ArbeError):
    """A failure that may pass if the same call is made again later."""

    code = "transient"


class RateLimited(Transient):
    """A remote service rejected the call for sending too many requests."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """Return the error with its retry-after seconds."""
        result = super().to_dict()
        result["retry_after"] = self.retry_after
        return result


class OperationTimedOut(Transient):
    """An operation did not reach its goal before its deadline."""

    code = "timed_out"

    def __init__(self, message: str, last_state: str | None = None) -> None:
        super().__init__(message)
        self.last_state = last_state


# --- Unavailable -------------------------------------------------------------


class Unavailable(ArbeError):
    """Something arbe needs for the work is missing or does not respond."""

    code = "unavailable"


class CredentialMissing(Unavailable):
    """A credential secret that a runtime or provider needs is not set."""

    code = "credential_missing"

    def __init__(self, name: str, needed_by: str) -> None:
        super().__init__(
            f"{needed_by} needs the secret {name!r}, which is not set. "
            f"Set it with `arbe secret set {name}`."
        )
        self.name = name
        self.needed_by = needed_by


class CredentialRejected(Unavailable):
    """A remote service rejected the credential arbe sent."""

    code = "credential_rejected"

    def __init__(self, name: str, service: str) -> None:
        super().__init__(
            f"{service} rejected {name}. Set a valid key with `arbe secret set {name}`."
        )
        self.name = name
        self.service = service


class SandboxUnreachable(Unavailable):
    """The runtime's service cannot be reached."""

    code = "unreachable"


# --- Crypto ------------------------------------------------------------------


class CryptoError(ArbeError):
    """The master key or a sealed value cannot be used."""

    code = "crypto"


class MasterKeyMismatch(CryptoError):
    """The master key does not open this database's data keys."""

    def __init__(self) -> None:
        super().__init__(
            "The master key does not match this database; use the key it was "
            "created with (ARBE_MASTER_KEY or the key file beside the database)."
        )


class KeyFileInsecure(CryptoError):
    """The master key file can be read by users other than its owner."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(
            f"Key file {path!r} has mode {mode:o}, readable by others; "
            f"fix it with `chmod 600 {path}`."
        )
        self.path = path


class SchemaTooNew(ArbeError):
    """The database was written by a newer arbe than this one."""

    code = "schema_too_new"

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"The database has schema version {found}, but this arbe knows "
            f"versions up to {known}; upgrade arbe to open it."
        )
        self.found = found
        self.known = known
