"""Fixtures for the security and reliability tests: a fresh home and a repo.

Every test here points the providers' base URLs at a closed port on
127.0.0.1, so a command that reaches for the network by mistake fails at once
instead of talking to a real service. Tests that use a fake server set the
URL to the fake.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbe_entry import Arbe, open_house

#: A local port that nothing listens on (the discard port), for base URLs.
CLOSED_URL = "http://127.0.0.1:9"

_CLEARED = (
    "ARBE_HOUSE",
    "ARBE_MASTER_KEY",
    "ARBE_DATABASE_URL",
    "OPENROUTER_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "SPRITES_TOKEN",
    "DAYTONA_API_KEY",
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point `ARBE_HOME` at a new home under `tmp_path`; no real service is reachable."""
    home = tmp_path / "home"
    monkeypatch.setenv("ARBE_HOME", str(home))
    monkeypatch.setenv("ARBE_PLUGINS", "")
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENROUTER_BASE_URL", f"{CLOSED_URL}/api/v1")
    monkeypatch.setenv("SPRITES_API_URL", CLOSED_URL)
    monkeypatch.setenv("DAYTONA_API_URL", f"{CLOSED_URL}/api")
    monkeypatch.setenv("SPRITES_CLIENT_SIGNALS", "0")
    return home


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Return a local git repository with one commit, for `--repo`."""
    path = tmp_path / "repo"
    path.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README").write_text("hello\n")
    subprocess.run([*git, "-C", str(path), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-qm", "init"], check=True)
    return path


@pytest.fixture
def opened(home: Path) -> Iterator[Arbe]:
    """Open the default house of the home as a library user would."""
    arbe = open_house(home=home)
    try:
        yield arbe
    finally:
        arbe.close()
