"""Storage adapters: SQLite (the default), PostgreSQL and in-memory."""

from __future__ import annotations

from arbe_adapters.storage._memory import InMemoryStorage
from arbe_adapters.storage._sqlite import SqliteStorage

__all__ = ["InMemoryStorage", "SqliteStorage"]
