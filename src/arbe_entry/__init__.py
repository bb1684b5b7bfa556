"""The composition root, the CLI and the library front door of arbe."""

from __future__ import annotations

from arbe_entry.app import Arbe, open_house

__all__ = ["Arbe", "open_house"]
__version__ = "0.1.0"
