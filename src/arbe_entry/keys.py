"""Master key rotation for the CLI: write the new key, then rewrap."""

from __future__ import annotations

import base64
import os

from arbe_entry.app import Arbe
from arbe_entry.config import KEY_FILE_PENDING


def rotate_master_key(opened: Arbe) -> dict[str, object]:
    """Rewrap every data key under a new master key and store that key.

    With a key file: the new key goes to `master.key.new`, the database is
    rewrapped in one transaction, then the new file replaces the old one. A
    crash before the rename leaves the old key file and the old wrapping,
    which still match; a crash after it leaves both new.

    With `ARBE_MASTER_KEY`: the new key is returned for the user to store,
    since arbe cannot change the variable.
    """
    from arbe_adapters.crypto import generate_master_key

    opened.houses.check_master_key()
    new_key = generate_master_key()
    encoded = base64.b64encode(new_key).decode("ascii")
    settings = opened.settings
    if settings.master_key:
        count = opened.houses.rotate_master_key(new_key)
        return {"houses": count, "new_key": encoded, "key_file": None}

    pending = settings.key_path.with_name(KEY_FILE_PENDING)
    fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(encoded + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    count = opened.houses.rotate_master_key(new_key)
    os.replace(pending, settings.key_path)
    return {"houses": count, "new_key": None, "key_file": str(settings.key_path)}
