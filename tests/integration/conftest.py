"""Fixtures for CLI tests: a fresh arbe home for every test."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def arbe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point `ARBE_HOME` at a home under `tmp_path` that does not exist yet.

    The variables that would pick another house, key or database are removed,
    so `run_arbe` and `invoke` see only this home.
    """
    home = tmp_path / "home"
    monkeypatch.setenv("ARBE_HOME", str(home))
    monkeypatch.setenv("ARBE_PLUGINS", "")
    for name in ("ARBE_HOUSE", "ARBE_MASTER_KEY", "ARBE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home
