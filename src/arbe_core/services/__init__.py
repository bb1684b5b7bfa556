"""Services: the rules of arbe, over the ports."""

from __future__ import annotations

from arbe_core.services._deps import Deps
from arbe_core.services.houses import HouseService
from arbe_core.services.secrets import SecretService

__all__ = ["Deps", "HouseService", "SecretService"]
