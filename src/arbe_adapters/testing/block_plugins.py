"""A pytest plugin that keeps a developer's installed arbe plugins out of tests.

It sets `ARBE_PLUGINS` to an empty value (load no external plugin) unless the
test run set it already, so only the built-in plugins load. A test that needs
an external plugin sets `ARBE_PLUGINS` to its name itself.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Block entry-point loading for the whole run."""
    os.environ.setdefault("ARBE_PLUGINS", "")
