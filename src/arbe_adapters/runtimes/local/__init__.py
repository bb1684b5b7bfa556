"""The `local` runtime plugin: sandboxes are directories under the arbe home."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arbe_adapters.runtimes.local._runtime import LocalRuntime

__all__ = ["LocalRuntime"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so registering the plugin stays cheap.
    if name == "LocalRuntime":
        from arbe_adapters.runtimes.local._runtime import LocalRuntime

        return LocalRuntime
    raise AttributeError(name)
