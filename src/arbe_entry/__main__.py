"""Run the CLI with `python -m arbe_entry`."""

from __future__ import annotations

from arbe_entry.cli import main

main()
