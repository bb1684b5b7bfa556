"""The library front door: open a house with the default adapters in one call.

```python
from arbe_entry import open_house

arbe = open_house()                # the default house under the arbe home
arbe.secrets.set("GITHUB_TOKEN", "sk-test-123", shared=True)
print([s.name for s in arbe.secrets.list()])
```
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from arbe_adapters.system import SystemClock, TimeOrderedIds
from arbe_core.errors import InvalidInput
from arbe_core.models import House
from arbe_core.ports import Clock, IdFactory, SealContext, Sealer, Storage
from arbe_core.services import Deps, HouseService, SecretService
from arbe_entry.config import KEY_FILE_PENDING, Settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from arbe_adapters.plugins import Plugins
    from arbe_core.dispatch import Worker
    from arbe_core.services.agents import AgentService
    from arbe_core.services.environments import EnvironmentService
    from arbe_core.services.threads import ThreadService
    from arbe_entry.wiring import PluginModels, PluginRuntimes

__all__ = ["Arbe", "open_house", "open_storage", "worker_pool_size"]

#: The smallest pool `worker_pool_size` returns: `PostgresStorage`'s default.
MIN_WORKER_POOL_SIZE = 10


class _LazySealer:
    """Load the master key and the crypto library on first use only.

    Commands that never touch a value (`secret list`) then start faster.
    """

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self._settings = settings
        self._storage = storage

    @functools.cached_property
    def _sealer(self) -> Sealer:
        from arbe_adapters.crypto import AesGcmSealer, load_master_key

        key = load_master_key(self._settings.master_key, self._settings.key_path)
        sealer: Sealer = AesGcmSealer(key)
        pending = self._settings.key_path.with_name(KEY_FILE_PENDING)
        if not self._settings.master_key and pending.exists():
            sealer = self._finish_rotation(sealer, pending)
        return sealer

    def _finish_rotation(self, sealer: Sealer, pending: Path) -> Sealer:
        """Complete a key rotation that crashed between commit and rename."""
        from arbe_adapters.crypto import AesGcmSealer, load_master_key
        from arbe_core.errors import MasterKeyMismatch

        with self._storage.unit_of_work(write=False) as uow:
            keys = [uow.houses.wrapped_key(h.id) for h in uow.houses.list()[:1]]
        try:
            for wrapped in keys:
                sealer.check(wrapped)
        except MasterKeyMismatch:
            new_sealer = AesGcmSealer(load_master_key(None, pending, create=False))
            for wrapped in keys:
                new_sealer.check(wrapped)
            pending.replace(self._settings.key_path)
            return new_sealer
        pending.unlink(missing_ok=True)
        return sealer

    def new_data_key(self) -> bytes:
        return self._sealer.new_data_key()

    def check(self, wrapped_key: bytes) -> None:
        self._sealer.check(wrapped_key)

    def seal(self, plaintext: str, context: SealContext) -> bytes:
        return self._sealer.seal(plaintext, context)

    def open(self, sealed: bytes, context: SealContext) -> str:
        return self._sealer.open(sealed, context)

    def rewrap(self, wrapped_key: bytes, new_master_key: bytes) -> bytes:
        return self._sealer.rewrap(wrapped_key, new_master_key)


def open_storage(settings: Settings) -> Storage:
    """Open the storage that the settings select: PostgreSQL or SQLite."""
    url = settings.database_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            msg = (
                f"Invalid ARBE_DATABASE_URL {url.split('@')[-1]!r}: use a "
                "postgresql:// URL, or unset it for the SQLite file in the home."
            )
            raise InvalidInput(msg)
        from arbe_adapters.storage.postgres import PostgresStorage

        if settings.pool_size is None:
            return PostgresStorage(url)
        return PostgresStorage(url, max_size=settings.pool_size)

    from arbe_adapters.storage import SqliteStorage

    settings.ensure_home()
    return SqliteStorage(settings.database_path)


def worker_pool_size(concurrency: int) -> int:
    """Return the PostgreSQL pool size for a worker running `concurrency` dispatches.

    Each dispatch thread and its lease heartbeat hold at most one connection
    at a time, because no unit of work opens another, and the claim loop
    holds one more. The result is never below `MIN_WORKER_POOL_SIZE`.
    """
    return max(MIN_WORKER_POOL_SIZE, 2 * concurrency + 1)


class Arbe:
    """One house, opened: its services as attributes.

    Attributes are built on first use, so opening is cheap and a command
    loads only what it needs.
    """

    def __init__(
        self,
        settings: Settings,
        storage: Storage | None = None,
        sealer: Sealer | None = None,
        clock: Clock | None = None,
        ids: IdFactory | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.settings = settings
        storage_ = storage or open_storage(settings)
        self.deps = Deps(
            storage=storage_,
            sealer=sealer or _LazySealer(settings, storage_),
            clock=clock or SystemClock(),
            ids=ids or TimeOrderedIds(),
        )
        self._plugins = plugins

    @property
    def actor(self) -> str:
        """Who acts: `user:LOGIN` for the CLI."""
        return self.settings.actor

    @functools.cached_property
    def houses(self) -> HouseService:
        """Houses of the home."""
        return HouseService(self.deps, self.actor)

    @functools.cached_property
    def house(self) -> House:
        """The house this object works on (the default one unless named)."""
        return self.houses.resolve(self.settings.house)

    @functools.cached_property
    def secrets(self) -> SecretService:
        """Secrets of the house."""
        return SecretService(self.deps, self.house, self.actor)

    @functools.cached_property
    def plugins(self) -> Plugins:
        """The loaded runtime and model-provider plugins."""
        if self._plugins is None:
            from arbe_adapters.plugins import load_plugins

            self._plugins = load_plugins(self.settings.plugins)
        return self._plugins

    @functools.cached_property
    def runtimes(self) -> PluginRuntimes:
        """The runtimes registered by plugins, built for this house."""
        from arbe_entry.wiring import PluginRuntimes

        return PluginRuntimes(
            self.plugins, self.house, self.secrets, self.settings.home / "sandboxes"
        )

    @functools.cached_property
    def models(self) -> PluginModels:
        """The model providers registered by plugins."""
        from arbe_entry.wiring import PluginModels

        return PluginModels(self.plugins, self.secrets)

    @functools.cached_property
    def agents(self) -> AgentService:
        """Bots of the house."""
        from arbe_core.services.agents import AgentService

        return AgentService(self.deps, self.house, self.actor, self.models.providers)

    @functools.cached_property
    def environments(self) -> EnvironmentService:
        """Environments of the house."""
        from arbe_core.services.environments import EnvironmentService

        return EnvironmentService(
            self.deps,
            self.house,
            self.actor,
            self.runtimes,
            self.models,
            path_exists=lambda p: Path(p).expanduser().exists(),
        )

    @functools.cached_property
    def threads(self) -> ThreadService:
        """Threads of the house."""
        from arbe_core.services.threads import ThreadService

        return ThreadService(self.deps, self.house, self.actor, self.agents)

    def worker(
        self,
        concurrency: int = 1,
        lease_s: float | None = None,
        owner: str | None = None,
    ) -> Worker:
        """Return a worker that runs this house's dispatches in this process.

        On PostgreSQL, open the house with settings whose `pool_size` is
        `worker_pool_size(concurrency)`, as `arbe worker` does, so that every
        dispatch thread finds a free connection.
        """
        import os
        import socket

        from arbe_core.dispatch import DispatchRunner, Worker

        name = owner or f"wrk_{socket.gethostname()}_{os.getpid()}"

        def make_runner(on_step: Callable[[], None]) -> DispatchRunner:
            return DispatchRunner(
                self.deps, self.house, name, self.runtimes, self.models, on_step=on_step
            )

        kwargs = {} if lease_s is None else {"lease_s": lease_s}
        return Worker(
            self.deps, self.house.id, name, make_runner, concurrency, **kwargs
        )

    def close(self) -> None:
        """Release the storage's connections."""
        self.deps.storage.close()


def open_house(
    name: str | None = None,
    *,
    home: str | Path | None = None,
    storage: Storage | None = None,
    sealer: Sealer | None = None,
    clock: Clock | None = None,
    ids: IdFactory | None = None,
) -> Arbe:
    """Open a house with the default adapters, or the ones given.

    Args:
        name: the house; None means `ARBE_HOUSE`, else the default house,
            which is created on first use.
        home: the arbe home; None means `ARBE_HOME`, else the platform's
            user data directory.
        storage, sealer, clock, ids: adapters to use instead of the defaults
            (for example `InMemoryStorage()` in tests).

    Returns:
        An `Arbe` whose attributes are the house's services.
    """
    settings = Settings.from_env(home=home, house=name)
    return Arbe(settings, storage=storage, sealer=sealer, clock=clock, ids=ids)
