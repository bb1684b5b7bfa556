"""AES-256-GCM envelope encryption and the master key."""

from __future__ import annotations

from arbe_adapters.crypto._aesgcm import AesGcmSealer, generate_master_key
from arbe_adapters.crypto._master_key import load_master_key

__all__ = ["AesGcmSealer", "generate_master_key", "load_master_key"]
