from __future__ import annotations

import os
from typing import final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from arbe_core.errors import CryptoError, MasterKeyMismatch
from arbe_core.ports import SealContext

_FORMAT = b"\x01"
_NONCE = 12
_WRAP_AAD = b"arbe:data-key:v1"


def generate_master_key() -> bytes:
    """Return 32 random bytes for a new master key."""
    return AESGCM.generate_key(bit_length=256)


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return _FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if not sealed.startswith(_FORMAT) or len(sealed) < 1 + _NONCE + 16:
        raise InvalidTag
    nonce = sealed[1 : 1 + _NONCE]
    return AESGCM(key).decrypt(nonce, sealed[1 + _NONCE :], aad)


@final
class AesGcmSealer:
    """Seal values with a per-house AES-256-GCM data key, wrapped by the master key.

    The associated data of a value binds its house id, secret name and
    version, so a sealed value moved to another secret, version or house
    fails to open.
    """

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            msg = f"The master key must be 32 bytes, not {len(master_key)}."
            raise CryptoError(msg)
        self._master = master_key
        self._keys: dict[bytes, bytes] = {}

    def new_data_key(self) -> bytes:
        """Make a data key and return it wrapped by the master key."""
        return _encrypt(self._master, AESGCM.generate_key(bit_length=256), _WRAP_AAD)

    def _unwrap(self, wrapped_key: bytes) -> bytes:
        key = self._keys.get(wrapped_key)
        if key is None:
            try:
                key = _decrypt(self._master, wrapped_key, _WRAP_AAD)
            except InvalidTag:
                raise MasterKeyMismatch() from None
            self._keys[wrapped_key] = key
        return key

    def check(self, wrapped_key: bytes) -> None:
        """Raise `MasterKeyMismatch` unless the master key opens `wrapped_key`."""
        self._unwrap(wrapped_key)

    def seal(self, plaintext: str, context: SealContext) -> bytes:
        """Encrypt `plaintext` for one secret version of one house."""
        key = self._unwrap(context.wrapped_key)
        return _encrypt(key, plaintext.encode("utf-8"), _aad(context))

    def open(self, sealed: bytes, context: SealContext) -> str:
        """Decrypt a value sealed for the same house, secret and version."""
        key = self._unwrap(context.wrapped_key)
        try:
            plaintext = _decrypt(key, sealed, _aad(context))
        except InvalidTag:
            msg = (
                f"The sealed value of secret {context.name!r} version "
                f"{context.version} does not open: it was sealed for another "
                "secret, version or house, or it was altered."
            )
            raise CryptoError(msg) from None
        return plaintext.decode("utf-8")

    def rewrap(self, wrapped_key: bytes, new_master_key: bytes) -> bytes:
        """Return the data key of `wrapped_key` wrapped by `new_master_key`."""
        return _encrypt(new_master_key, self._unwrap(wrapped_key), _WRAP_AAD)


def _aad(context: SealContext) -> bytes:
    # Length-prefixed fields, so no name can be crafted to collide with another.
    parts = [context.house_id, context.name, str(context.version)]
    return b"arbe:secret:v1" + b"".join(
        len(p.encode()).to_bytes(2, "big") + p.encode() for p in parts
    )
