"""The example runtime: the local runtime under another name and state directory."""

from __future__ import annotations

from pathlib import Path

import attrs

from arbe_adapters.runtimes.local import LocalRuntime
from arbe_core.runtime import RuntimeContext


class ExampleRuntime(LocalRuntime):
    """Local sandboxes kept in an `example/` directory under the state directory."""

    name = "example"

    def __init__(self, context: RuntimeContext) -> None:
        state_dir = Path(context.state_dir) / "example"
        super().__init__(attrs.evolve(context, state_dir=str(state_dir)))
