"""Registers the `daytona` runtime; the SDK loads only when the runtime is built."""

from __future__ import annotations

from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_core.ports import Runtime
from arbe_core.runtime import RuntimeContext


def build_runtime(context: RuntimeContext) -> Runtime:
    """Build the runtime for one house, importing its SDK now."""
    from arbe_adapters.runtimes.daytona._runtime import DaytonaRuntime

    return DaytonaRuntime(context)


@hookimpl
def register_runtimes(register: Register) -> None:
    """Register the `daytona` runtime."""
    register(
        "daytona",
        build_runtime,
        credential="DAYTONA_API_KEY",
        description="Daytona cloud sandboxes (the default runtime)",
    )
