"""The hooks that arbe plugins implement, under the pluggy project name `arbe`.

A plugin is a module or object with functions marked by `hookimpl`. Built-in
runtimes and providers register through these same hooks, and third-party
packages are found through the `arbe` entry-point group.
"""

from __future__ import annotations

from typing import Protocol

import pluggy

__all__ = ["PROJECT", "Register", "hookimpl", "hookspec"]

PROJECT = "arbe"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback a plugin calls once per runtime or provider it offers."""

    def __call__(
        self,
        name: str,
        factory: object,
        *,
        credential: str | None = None,
        description: str = "",
    ) -> None: ...


@hookspec
def register_runtimes(register: Register) -> None:
    """Register the runtimes this plugin offers.

    Call `register(name, factory, credential=..., description=...)` once per
    runtime. `factory` is called with an `arbe_core.runtime.RuntimeContext`
    and returns an object that implements `arbe_core.ports.Runtime`.
    `credential` names the house secret the runtime needs, or None.

    Registration must be cheap: import the runtime's SDK inside the factory,
    never at module import or in this hook, because every `arbe` command
    loads every plugin.
    """


@hookspec
def register_providers(register: Register) -> None:
    """Register the model providers this plugin offers.

    Call `register(name, factory, credential=..., description=...)` once per
    provider. The provider name is the first part of a model ref
    (`openrouter` in `openrouter/anthropic/claude-haiku-4.5`). `factory` is
    called with an `arbe_core.chat.ProviderContext` and returns an object
    that implements `arbe_core.ports.ChatModel`. `credential` names the house
    secret that holds the provider's key, or None.

    As with runtimes, import HTTP clients and SDKs inside the factory only.
    """
