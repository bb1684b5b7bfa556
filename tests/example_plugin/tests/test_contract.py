"""The runtime contract suite on the example runtime."""

from __future__ import annotations

import pytest

from arbe_adapters.testing import RuntimeContract
from arbe_core.runtime import RuntimeContext

# The example package is installed separately; without it this module skips.
example = pytest.importorskip(
    "arbe_example_runtime",
    reason="the example plugin is not installed: pip install -e tests/example_plugin",
)

pytest_plugins = ["arbe_adapters.testing.runtime_contract"]


class TestExampleRuntime(RuntimeContract):
    @pytest.fixture
    def runtime(self, contract_context: RuntimeContext) -> example.ExampleRuntime:
        return example.ExampleRuntime(contract_context)
