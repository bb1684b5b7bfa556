"""Registers the `example` runtime with arbe.

This module is the plugin that the `arbe` entry point names. It imports only
the hook marker, so registering stays cheap. The runtime module loads when
the runtime is first built.
"""

from __future__ import annotations

from arbe_adapters.plugins import hookimpl
from arbe_adapters.plugins.hookspecs import Register
from arbe_core.ports import Runtime
from arbe_core.runtime import RuntimeContext


def build_runtime(context: RuntimeContext) -> Runtime:
    """Build the example runtime for one house."""
    from arbe_example_runtime._runtime import ExampleRuntime

    return ExampleRuntime(context)


@hookimpl
def register_runtimes(register: Register) -> None:
    """Register the `example` runtime."""
    register(
        "example",
        build_runtime,
        credential=None,
        description="Example plugin: local directories under their own name",
    )
