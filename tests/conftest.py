"""Fixtures shared by every test tier."""

from __future__ import annotations

pytest_plugins = [
    "arbe_adapters.testing.runtime_contract",
    "tests.fakes.daytona",
    "tests.fakes.sprites",
    "tests.fakes.openrouter",
]
