"""Registers the `sprite` runtime; the SDK loads only when the runtime is built."""

from __future__ import annotations

from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_core.ports import Runtime
from arbe_core.runtime import RuntimeContext


def build_runtime(context: RuntimeContext) -> Runtime:
    """Build the runtime for one house, importing its SDK now."""
    from arbe_adapters.runtimes.sprite._runtime import SpriteRuntime

    return SpriteRuntime(context)


@hookimpl
def register_runtimes(register: Register) -> None:
    """Register the `sprite` runtime."""
    register(
        "sprite",
        build_runtime,
        credential="SPRITES_TOKEN",
        description="Fly.io Sprites (the legacy runtime)",
    )
