"""Registers the `local` runtime, which needs no account and no credential."""

from __future__ import annotations

from arbe_adapters.plugins.hookspecs import Register, hookimpl
from arbe_core.ports import Runtime
from arbe_core.runtime import RuntimeContext


def build_runtime(context: RuntimeContext) -> Runtime:
    """Build the local runtime for one house."""
    from arbe_adapters.runtimes.local._runtime import LocalRuntime

    return LocalRuntime(context)


@hookimpl
def register_runtimes(register: Register) -> None:
    """Register the `local` runtime."""
    register(
        "local",
        build_runtime,
        credential=None,
        description="Directories on this machine, one process group per command",
    )
