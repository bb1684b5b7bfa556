"""Test helpers for arbe and for third-party plugins: the runtime contract suite.

Run the suite on a runtime by subclassing `RuntimeContract`; see
`arbe_adapters.testing.runtime_contract` for the fixtures it reads.
"""

from __future__ import annotations

import pytest

# Registered before the import so pytest rewrites the suite's asserts and
# failures show the compared values.
pytest.register_assert_rewrite("arbe_adapters.testing.runtime_contract")

from arbe_adapters.testing.runtime_contract import RuntimeContract  # noqa: E402

__all__ = ["RuntimeContract"]
