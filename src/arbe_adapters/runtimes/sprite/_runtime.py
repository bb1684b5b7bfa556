"""The `sprite` runtime: Fly.io Sprites through sprites-py.

Sprites have no stop or start. A sprite hibernates (`cold`) after about 30 s
without work and wakes on the next exec, keeping its disk. So `stop` and
`start` only report the status, and `ping` reports `cold` as sleeping.
"""

from __future__ import annotations

import builtins
import logging
import posixpath
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Final, final

from sprites import Sprite, SpritesClient
from sprites.types import ClientOptions, ListOptions, SpriteInfo

from arbe_adapters.runtimes.sprite._clone import (
    CLONE_TIMEOUT_S,
    clone_argv,
    clone_error,
)
from arbe_adapters.runtimes.sprite._diagnose import diagnose
from arbe_adapters.runtimes.sprite._errors import (
    CREDENTIAL_NAME,
    RUNTIME,
    CallContext,
    sprite_errors,
)
from arbe_adapters.runtimes.sprite._exec import EXEC_GRACE_S, run_command
from arbe_adapters.runtimes.sprite._names import SpriteNames
from arbe_adapters.runtimes.sprite._ping import ping_with_retries
from arbe_core.errors import (
    ArbeError,
    CredentialMissing,
    InvalidInput,
    SandboxNotFound,
)
from arbe_core.runtime import (
    HOUSE_LABEL,
    Capabilities,
    Check,
    ExecResult,
    Health,
    RuntimeContext,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)

__all__ = ["HOME_DIR", "WORKDIR", "SpriteRuntime"]

log = logging.getLogger("arbe.runtime.sprite")

#: The home of the `sprite` user in the default Sprites image.
HOME_DIR: Final = "/home/sprite"
_WORKDIR_NAME: Final = "work"
#: The work directory: `provision` clones into it and commands start in it.
WORKDIR: Final = f"{HOME_DIR}/{_WORKDIR_NAME}"
#: The Sprites API returns at most 50 sprites per page.
_LIST_PAGE: Final = 50
_STATES: Final = {
    "cold": SandboxState.SLEEPING,
    "warm": SandboxState.STARTED,
    "running": SandboxState.STARTED,
}


@final
class SpriteRuntime:
    """Sandboxes as Fly.io sprites, named with the house prefix.

    The client is built on first use, so `diagnose` can report a missing
    token. Every other method raises `CredentialMissing` without one.
    """

    name: str = RUNTIME
    credential: str | None = CREDENTIAL_NAME
    capabilities: Capabilities = Capabilities(
        stop_start=False, separate_streams=True, sleeps=True, clone=True
    )

    def __init__(
        self,
        context: RuntimeContext,
        *,
        sleep: Callable[[float], None] = time.sleep,
        exec_grace_s: float = EXEC_GRACE_S,
    ) -> None:
        """Build the runtime for one house.

        Args:
            context: the house, its settings and the resolved SPRITES_TOKEN.
                `SPRITES_API_URL` sets the API base URL, else the SDK default.
            sleep: waits between `ping` retries (tests pass a fake).
            exec_grace_s: seconds past a command's timeout before arbe stops
                waiting for sprites-py.
        """
        self._context = context
        self._names = SpriteNames(context.house_id, context.house_name)
        self._base_url = context.config("SPRITES_API_URL")
        self._sleep = sleep
        self._exec_grace_s = exec_grace_s
        self._sdk: SpritesClient | None = None

    # --- Lifecycle -----------------------------------------------------------

    def provision(self, spec: SandboxSpec) -> SandboxInfo:
        """Create a sprite, make its work directory and clone the spec's repo.

        The sprite is named `<house prefix><spec.name>`, which is the
        sandbox id, and the sandbox name is `spec.name` (a fresh name when
        None). Only `arbe.house` of the spec's labels is kept, and it comes
        from the prefix. `auto_stop_minutes` is ignored, because sprites fall
        asleep by themselves. A failure after the sprite exists destroys it
        before raising. Creation is never retried.

        Raises:
            InvalidName: `spec.name` breaks the sprite name rule.
            Unavailable: the clone failed; the message has git's error.
            OperationTimedOut: the clone took over 600 s.
        """
        name = self._names.new(spec.name)
        with self._guard(f"create sprite {name!r}", None):
            self._client.create_sprite(name)
        log.info("created sprite %s", name)

        try:
            self._prepare(name, spec.repo)
            info = self.get(name)
        except BaseException:
            self._destroy_after_failure(name)
            raise
        log.info("provisioned sprite %s", name)
        return info

    def get(self, sandbox_id: str) -> SandboxInfo:
        """Return the house's sprite by id (full sprite name) or by name.

        Raises:
            SandboxNotFound: no sprite of this house has the name.
        """
        name = self._own(sandbox_id)
        with self._guard("get", name):
            sprite = self._client.get_sprite(name)
        return self._info(name, sprite.status, sprite.created_at, _details(sprite))

    def list(self) -> list[SandboxInfo]:
        """Return the house's sprites (the names with its prefix), by name."""
        infos: list[SandboxInfo] = []
        token: str | None = None
        while True:
            options = ListOptions(
                prefix=self._names.prefix,
                max_results=_LIST_PAGE,
                continuation_token=token,
            )
            with self._guard("list sprites", None):
                page = self._client.list_sprites(options)
            for entry in page.sprites:
                info = self._listed(entry) if self._names.owns(entry.name) else None
                if info is not None:
                    infos.append(info)
            token = page.next_continuation_token
            if not page.has_more or not token:
                return sorted(infos, key=lambda info: info.name)

    def start(self, sandbox_id: str) -> SandboxInfo:
        """Return the sprite as it is: sprites wake by themselves on exec.

        A documented no-op (`capabilities.stop_start` is False), never an
        error for a sprite that exists.

        Raises:
            SandboxNotFound: no sprite of this house has the name.
        """
        return self.get(sandbox_id)

    def stop(self, sandbox_id: str) -> SandboxInfo:
        """Return the sprite as it is: sprites fall asleep by themselves.

        A documented no-op (`capabilities.stop_start` is False), never an
        error for a sprite that exists.

        Raises:
            SandboxNotFound: no sprite of this house has the name.
        """
        return self.get(sandbox_id)

    def destroy(self, sandbox_id: str) -> bool:
        """Destroy the sprite; idempotent. False when it was already gone."""
        name = self._names.resolve(sandbox_id)
        if name is None:
            return False
        try:
            with self._guard("destroy", name):
                self._client.destroy_sprite(name)
        except SandboxNotFound:
            return False
        log.info("destroyed sprite %s", name)
        return True

    # --- Health --------------------------------------------------------------

    def ping(self, sandbox_id: str) -> Health:
        """Report the sprite's state; `cold` is `SLEEPING`, never an error.

        Read-only, so it is the one call that is retried: up to 3 attempts on
        network errors, 5xx and 429 (waiting out a Retry-After of at most
        5 s). When the API stays unreachable the state is `UNREACHABLE`.
        The latency is that of the successful attempt.

        Raises:
            SandboxNotFound: no sprite of this house has the name.
            CredentialRejected: Sprites rejected the token.
            RateLimited: the API kept returning 429.
        """
        return ping_with_retries(self.get, sandbox_id, self._sleep)

    def diagnose(self) -> builtins.list[Check]:
        """Check the token, the API and the status of each house sprite."""
        token_set = bool(self._context.credential)
        return diagnose(self.list, token_set, self._api_url, self._names.prefix)

    # --- Commands ------------------------------------------------------------

    def exec(
        self,
        sandbox_id: str,
        command: str,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> ExecResult:
        """Run `command` with `bash -c` in the sprite and return its result.

        `cwd` defaults to the work directory; a relative `cwd` is taken from
        there. `env` travels as the websocket's `env=KEY=VALUE` entries,
        never on a command line. Sprites then replaces the sprite's default
        environment with exactly these variables (bash supplies a PATH).

        The call returns within `timeout` + 10 s even if the sprite never
        responds, and then `timed_out` is True and `exit_code` None. A connection
        that closes before the exit status gives `exit_code` None. The output
        received so far is kept either way, and arbe never runs the command
        again.

        Raises:
            SandboxNotFound: no sprite of this house has the name.
            InvalidInput: `timeout` is not positive.
        """
        name = self._own(sandbox_id)
        if timeout <= 0:
            raise InvalidInput(f"Invalid exec timeout {timeout!r}: use seconds > 0.")
        argv = ["bash", "-c", command]
        return self._run(name, argv, cwd=_resolve_cwd(cwd), env=env, timeout=timeout)

    # --- Helpers -------------------------------------------------------------

    @property
    def _client(self) -> SpritesClient:
        if self._sdk is None:
            token = self._context.credential
            if not token:
                raise CredentialMissing(CREDENTIAL_NAME, "The sprite runtime")
            if self._base_url:
                self._sdk = SpritesClient(token, base_url=self._base_url)
            else:
                self._sdk = SpritesClient(token)
        return self._sdk

    @property
    def _api_url(self) -> str:
        return self._base_url or ClientOptions().base_url

    def _guard(
        self, operation: str, sprite: str | None
    ) -> AbstractContextManager[None]:
        context = CallContext(
            operation, sprite, self._context.credential, self._api_url
        )
        return sprite_errors(context)

    def _own(self, sandbox_id: str) -> str:
        name = self._names.resolve(sandbox_id)
        if name is None:
            raise SandboxNotFound(sandbox_id, RUNTIME)
        return name

    def _run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str,
        env: Mapping[str, str] | None,
        timeout: float,
    ) -> ExecResult:
        return run_command(
            self._client.sprite(name),
            argv,
            cwd=cwd,
            env=env,
            timeout=timeout,
            grace=self._exec_grace_s,
            guard=lambda: self._guard("exec", name),
        )

    def _prepare(self, name: str, repo: str | None) -> None:
        """Make the work directory and clone `repo` into it."""
        argv = clone_argv(_WORKDIR_NAME, repo)
        result = self._run(name, argv, cwd=HOME_DIR, env=None, timeout=CLONE_TIMEOUT_S)
        if result.exit_code != 0:
            raise clone_error(name, repo, result)

    def _destroy_after_failure(self, name: str) -> None:
        try:
            self.destroy(name)
        except ArbeError:
            log.error(
                "could not destroy sprite %s after a failure", name, exc_info=True
            )

    def _listed(self, entry: SpriteInfo) -> SandboxInfo | None:
        """Build the view of a list entry, fetching the sprite if needed.

        The current list API gives only names, so a missing status costs a
        GET. None means the sprite went away in between.
        """
        if entry.status:
            return self._info(entry.name, entry.status, entry.created_at, {})
        try:
            return self.get(entry.name)
        except SandboxNotFound:
            return None

    def _info(
        self,
        name: str,
        status: str | None,
        created_at: datetime | None,
        details: Mapping[str, object],
    ) -> SandboxInfo:
        return SandboxInfo(
            id=name,
            name=self._names.short(name),
            runtime=RUNTIME,
            state=_STATES.get(status or "", SandboxState.UNKNOWN),
            labels={HOUSE_LABEL: self._context.house_id},
            created_at=created_at.isoformat() if created_at else None,
            raw_state=status or None,
            workdir=WORKDIR,
            details=details,
        )


def _details(sprite: Sprite) -> dict[str, object]:
    details = {
        "sprite_id": sprite.id,
        "organization": sprite.organization_name,
        "url": sprite.url,
    }
    return {key: value for key, value in details.items() if value}


def _resolve_cwd(cwd: str | None) -> str:
    if not cwd:
        return WORKDIR
    return posixpath.normpath(posixpath.join(WORKDIR, cwd))
