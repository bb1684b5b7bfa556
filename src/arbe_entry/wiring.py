"""Plugin-backed runtimes and models for one house, with settings resolved."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from arbe_adapters.plugins import Plugins
from arbe_core.chat import ProviderContext
from arbe_core.models import House
from arbe_core.names import split_model_ref
from arbe_core.ports import ChatModel, Runtime
from arbe_core.runtime import RuntimeContext
from arbe_core.services.secrets import SecretService

__all__ = ["PluginModels", "PluginRuntimes", "house_config"]


def house_config(
    secrets: SecretService, environ: Mapping[str, str] | None = None
) -> Callable[[str], str | None]:
    """Look a setting up in the process environment, then in the house's secrets."""
    env = os.environ if environ is None else environ

    def lookup(name: str) -> str | None:
        value = env.get(name)
        if value:
            return value
        found = secrets.resolve(name)
        return found[0] if found else None

    return lookup


class PluginRuntimes:
    """The registered runtimes, each built once for the house."""

    def __init__(
        self,
        plugins: Plugins,
        house: House,
        secrets: SecretService,
        state_root: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.plugins = plugins
        self.house = house
        self.secrets = secrets
        self.state_root = state_root
        self.environ = environ
        self._built: dict[str, Runtime] = {}

    def names(self) -> list[str]:
        """Return the registered runtime names."""
        return sorted(self.plugins.runtimes)

    def credential_name(self, runtime: str) -> str | None:
        """Return the secret the runtime needs, or None."""
        return self.plugins.runtime_registration(runtime).credential

    def get(self, runtime: str) -> Runtime:
        """Build the runtime for the house on first use."""
        if runtime not in self._built:
            registration = self.plugins.runtime_registration(runtime)
            credential = None
            if registration.credential:
                found = self.secrets.resolve(registration.credential)
                credential = found[0] if found else None
            state_dir = self.state_root / runtime
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            context = RuntimeContext(
                house_id=self.house.id,
                house_name=self.house.name,
                state_dir=str(state_dir),
                config=house_config(self.secrets, self.environ),
                credential=credential,
            )
            self._built[runtime] = self.plugins.runtime(runtime, context)
        return self._built[runtime]


class PluginModels:
    """The registered model providers, with keys from the house or the process."""

    def __init__(
        self,
        plugins: Plugins,
        secrets: SecretService,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.plugins = plugins
        self.secrets = secrets
        self.environ = os.environ if environ is None else environ

    def providers(self) -> list[str]:
        """Return the registered provider names."""
        return sorted(self.plugins.providers)

    def credential_name(self, provider: str) -> str | None:
        """Return the name of the secret with the provider's key, or None."""
        return self.plugins.provider_registration(provider).credential

    def _key(self, provider: str) -> tuple[str | None, str | None]:
        name = self.credential_name(provider)
        if name is None:
            return None, None
        found = self.secrets.resolve(name)
        if found is not None:
            return found[0], "house"
        value = self.environ.get(name)
        if value:
            return value, "process"
        return None, None

    def key_source(self, provider: str) -> str | None:
        """Tell where the provider's key comes from: `house`, `process` or None."""
        if self.credential_name(provider) is None:
            return "none"
        return self._key(provider)[1]

    def get(self, ref: str) -> ChatModel:
        """Build a chat model for `PROVIDER/MODEL`."""
        provider, model = split_model_ref(ref)
        key, _ = self._key(provider)
        context = ProviderContext(
            model=model, config=house_config(self.secrets, self.environ), credential=key
        )
        return self.plugins.chat_model(provider, context)
