from __future__ import annotations

import base64
import binascii
import os
import stat
import tempfile
from pathlib import Path

from arbe_adapters.crypto._aesgcm import generate_master_key
from arbe_core.errors import CryptoError, KeyFileInsecure


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        msg = (
            f"The master key in {source} is not base64 of 32 bytes; make one with "
            '`python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"`.'
        )
        raise CryptoError(msg)
    return key


def load_master_key(
    env_value: str | None, key_file: Path, create: bool = True
) -> bytes:
    """Return the master key from `ARBE_MASTER_KEY`, else from the key file.

    A missing key file is created with mode 0600 (when `create`). An existing
    one that group or others can read is rejected, as ssh rejects such a key.

    Raises:
        KeyFileInsecure: the key file's mode lets others read it.
        CryptoError: the key is not base64 of 32 bytes.
    """
    if env_value:
        return _decode(env_value, "ARBE_MASTER_KEY")

    try:
        mode = key_file.stat().st_mode
    except FileNotFoundError:
        if not create:
            msg = f"The master key file {str(key_file)!r} is missing; set ARBE_MASTER_KEY."
            raise CryptoError(msg) from None
        return _create(key_file)
    if stat.S_IMODE(mode) & 0o077:
        raise KeyFileInsecure(str(key_file), stat.S_IMODE(mode))
    return _decode(key_file.read_text(encoding="ascii"), repr(str(key_file)))


def _create(key_file: Path) -> bytes:
    key = generate_master_key()
    text = base64.b64encode(key).decode("ascii") + "\n"
    # Write a private temporary file, then link it into place: the link is
    # atomic, so a concurrent process sees no key file or a complete one. The
    # temporary name is unique per call (mkstemp creates it with mode 0600),
    # so threads of one process never write or remove each other's file.
    fd, temp_name = tempfile.mkstemp(
        prefix=f".{key_file.name}.", suffix=".tmp", dir=key_file.parent
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, key_file)
    except FileExistsError:
        return load_master_key(None, key_file, create=False)
    finally:
        temp.unlink(missing_ok=True)
    return key
