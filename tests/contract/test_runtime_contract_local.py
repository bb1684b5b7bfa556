"""The runtime contract suite on the local runtime."""

from __future__ import annotations

import attrs
import pytest

from arbe_adapters.runtimes.local._runtime import LocalRuntime
from arbe_adapters.testing import RuntimeContract
from arbe_core.runtime import RuntimeContext


class TestLocalRuntimeContract(RuntimeContract):
    # GRACE: a local kill and the last read take well under a second.
    timeout_grace_s = 3.0

    @pytest.fixture
    def runtime(self, contract_context: RuntimeContext) -> LocalRuntime:
        return LocalRuntime(contract_context)

    @pytest.fixture
    def contract_other_runtime(self, contract_context: RuntimeContext) -> LocalRuntime:
        """Another house's runtime over the same state directory."""
        other = attrs.evolve(contract_context, house_id="hse_contract_other")
        return LocalRuntime(other)
