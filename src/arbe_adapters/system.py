"""The system clock and id factory."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import final

__all__ = ["SystemClock", "TimeOrderedIds"]


@final
class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        """Return the current UTC time."""
        return datetime.now(UTC)


@final
class TimeOrderedIds:
    """Ids of a prefix, 12 hex digits of milliseconds, then 12 random hex digits.

    Ids made later sort later (to the millisecond), which keeps indexes on
    them compact and listings in creation order.
    """

    def new(self, prefix: str) -> str:
        """Return a new id such as `thr_0193a1b2c3d4e5f6a7b8c9d0`."""
        millis = time.time_ns() // 1_000_000
        # `secrets.token_hex` reads os.urandom as well. Importing `secrets`
        # loads hashlib and random, which added several ms to every CLI start.
        return f"{prefix}_{millis:012x}{os.urandom(6).hex()}"
