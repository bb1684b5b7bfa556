from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, final

import attrs
import pluggy

from arbe_adapters.plugins import hookspecs
from arbe_core.chat import ProviderContext
from arbe_core.errors import InvalidInput, ProviderNotFound, RuntimeNotFound
from arbe_core.ports import ChatModel, Runtime
from arbe_core.runtime import RuntimeContext

logger = logging.getLogger("arbe.plugins")

#: Modules of the built-in plugins, registered through the same hooks as
#: third-party ones.
BUILTIN_PLUGINS = (
    "arbe_adapters.runtimes.local.plugin",
    "arbe_adapters.runtimes.daytona.plugin",
    "arbe_adapters.runtimes.sprite.plugin",
    "arbe_adapters.llm.plugin",
)


@final
@attrs.frozen
class Registration:
    """One runtime or provider that a plugin registered."""

    name: str
    factory: Callable[..., Any]
    plugin: str
    credential: str | None = None
    description: str = ""


@final
class Plugins:
    """The loaded plugins and what each registered."""

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager
        self.runtimes: dict[str, Registration] = {}
        self.providers: dict[str, Registration] = {}

    def plugin_names(self) -> list[str]:
        """Return the names of the loaded plugins."""
        return sorted(
            name for name, _ in self.manager.list_name_plugin() if name is not None
        )

    def runtime_registration(self, name: str) -> Registration:
        """Return the registration of runtime `name`, or raise `RuntimeNotFound`."""
        try:
            return self.runtimes[name]
        except KeyError:
            raise RuntimeNotFound(name, sorted(self.runtimes)) from None

    def provider_registration(self, name: str) -> Registration:
        """Return the registration of provider `name`, or raise `ProviderNotFound`."""
        try:
            return self.providers[name]
        except KeyError:
            raise ProviderNotFound(name, sorted(self.providers)) from None

    def runtime(self, name: str, context: RuntimeContext) -> Runtime:
        """Build runtime `name` for one house; this is where its SDK loads."""
        runtime: Runtime = self.runtime_registration(name).factory(context)
        return runtime

    def chat_model(self, provider: str, context: ProviderContext) -> ChatModel:
        """Build a chat model of `provider`."""
        model: ChatModel = self.provider_registration(provider).factory(context)
        return model

    def describe(self) -> list[dict[str, object]]:
        """Return each plugin with the runtimes and providers it registered."""
        result: list[dict[str, object]] = []
        for plugin in self.plugin_names():
            result.append(
                {
                    "plugin": plugin,
                    "runtimes": sorted(
                        r.name for r in self.runtimes.values() if r.plugin == plugin
                    ),
                    "providers": sorted(
                        p.name for p in self.providers.values() if p.plugin == plugin
                    ),
                }
            )
        return result


def _registrar(
    plugins: Plugins, table: dict[str, Registration], kind: str
) -> Callable[[str], Callable[..., None]]:
    def for_plugin(plugin_name: str) -> Callable[..., None]:
        def register(
            name: str,
            factory: Callable[..., Any],
            *,
            credential: str | None = None,
            description: str = "",
        ) -> None:
            if not callable(factory):
                msg = f"Plugin {plugin_name!r} registered {kind} {name!r} with a factory that is not callable."
                raise InvalidInput(msg)
            if name in table:
                logger.warning(
                    "plugin %s replaces %s %s of plugin %s",
                    plugin_name,
                    kind,
                    name,
                    table[name].plugin,
                )
            table[name] = Registration(
                name, factory, plugin_name, credential, description
            )

        return register

    return for_plugin


def load_plugins(
    allowed: str | None = None, extra: list[object] | None = None
) -> Plugins:
    """Load the built-in plugins and the external ones that `allowed` admits.

    Args:
        allowed: the value of `ARBE_PLUGINS`. None loads every package of the
            `arbe` entry-point group; a comma-separated list loads only those
            distributions or entry-point names; an empty string loads none.
        extra: plugin objects to register as well (tests and embedders).

    Returns:
        The loaded plugins, with every runtime and provider registered.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for module_name in BUILTIN_PLUGINS:
        manager.register(importlib.import_module(module_name), name=module_name)

    if allowed is None:
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    elif allowed.strip():
        _load_allowed(manager, {p.strip() for p in allowed.split(",") if p.strip()})
    for plugin in extra or []:
        manager.register(plugin)
    manager.check_pending()

    plugins = Plugins(manager)
    runtime_registrar = _registrar(plugins, plugins.runtimes, "runtime")
    provider_registrar = _registrar(plugins, plugins.providers, "provider")
    # Each implementation gets a registrar bound to its plugin, so
    # `arbe plugins` can tell who registered what.
    for impl in manager.hook.register_runtimes.get_hookimpls():
        impl.function(register=runtime_registrar(impl.plugin_name))
    for impl in manager.hook.register_providers.get_hookimpls():
        impl.function(register=provider_registrar(impl.plugin_name))
    return plugins


def _load_allowed(manager: pluggy.PluginManager, allowed: set[str]) -> None:
    """Register the entry points whose name or distribution name is allowed."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group=hookspecs.PROJECT):
        dist = entry_point.dist.name if entry_point.dist else None
        if entry_point.name not in allowed and dist not in allowed:
            continue
        if manager.get_plugin(entry_point.name) is not None:
            continue
        manager.register(entry_point.load(), name=entry_point.name)
