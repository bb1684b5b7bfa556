"""Start a detached worker for a house when none is running."""

from __future__ import annotations

import os
import subprocess
import sys

from arbe_entry.app import Arbe


def ensure_worker(opened: Arbe) -> bool:
    """Start `arbe worker --once` in the background unless a worker holds a lease.

    The worker outlives this process (its own session, stdio detached) and
    logs to `worker.log` in the arbe home. Two racing starts are harmless:
    claims are exclusive, and an idle `--once` worker exits.

    Returns:
        True when a worker was started.
    """
    now = opened.deps.clock.now()
    with opened.deps.storage.unit_of_work(write=False) as uow:
        if uow.dispatches.has_live_lease(opened.house.id, now):
            return False

    env = dict(os.environ)
    env["ARBE_HOME"] = str(opened.settings.home)
    env["ARBE_HOUSE"] = opened.house.name
    log_path = opened.settings.home / "worker.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "arbe_entry", "-v", "worker", "--once"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    return True
