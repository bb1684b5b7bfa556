"""`arbe serve`: the house over HTTP, as a JSON API and server-rendered pages.

Importing this package loads Starlette; the CLI imports it only when
`arbe serve` runs.
"""

from __future__ import annotations

from arbe_entry.serve._app import HouseOpener, create_app

__all__ = ["HouseOpener", "create_app"]
