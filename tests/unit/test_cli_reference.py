"""The committed CLI reference page matches the CLI."""

from __future__ import annotations

from pathlib import Path

from arbe_entry.cli._reference import render

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_matches_help() -> None:
    """Regenerate with `python -m arbe_entry.cli._reference > docs/cli.md`."""
    assert PAGE.read_text() == render()


def test_cli_reference_covers_every_group() -> None:
    """Each command group has its own section."""
    text = render()

    for group in ("house", "secret", "env", "sandbox", "agent", "thread", "audit"):
        assert f"`arbe {group}`" in text
