"""Plugin loading: built-in and third-party runtimes and model providers."""

from __future__ import annotations

from arbe_adapters.plugins._registry import Plugins, Registration, load_plugins
from arbe_adapters.plugins.hookspecs import PROJECT, hookimpl, hookspec

__all__ = [
    "PROJECT",
    "Plugins",
    "Registration",
    "hookimpl",
    "hookspec",
    "load_plugins",
]
