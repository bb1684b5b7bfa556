"""An example arbe runtime plugin that registers the runtime `example`.

`ExampleRuntime` is imported on first access, because arbe imports this
package whenever it loads plugins, and registering must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from arbe_example_runtime._runtime import ExampleRuntime

__all__ = ["ExampleRuntime"]


def __getattr__(name: str) -> object:
    if name == "ExampleRuntime":
        from arbe_example_runtime._runtime import ExampleRuntime

        return ExampleRuntime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
