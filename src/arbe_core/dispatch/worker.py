"""Workers: claim queued dispatches under a renewable lease and run them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from arbe_core.dispatch.runner import DispatchRunner
from arbe_core.models import Dispatch, DispatchState
from arbe_core.services._deps import Deps

__all__ = ["Worker"]

logger = logging.getLogger("arbe.worker")

#: How long a claim lasts without renewal. A worker that dies keeps its
#: dispatches this long before another worker may take them over.
DEFAULT_LEASE_S = 30.0


class Worker:
    """Claim and run a house's dispatches, `concurrency` at a time.

    Each running dispatch has its lease renewed every third of the lease by
    a heartbeat thread, so a command longer than the lease keeps its claim.
    """

    def __init__(
        self,
        deps: Deps,
        house_id: str,
        owner: str,
        make_runner: Callable[[Callable[[], None]], DispatchRunner],
        concurrency: int = 1,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = 0.5,
    ) -> None:
        self.deps = deps
        self.house_id = house_id
        self.owner = owner
        self.make_runner = make_runner
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.stop_event = threading.Event()

    def claim(self) -> Dispatch | None:
        """Claim the oldest claimable dispatch of the house, or return None."""
        now = self.deps.clock.now()
        with self.deps.storage.unit_of_work() as uow:
            dispatch = uow.dispatches.claim(
                self.owner, now, now + timedelta(seconds=self.lease_s), self.house_id
            )
            uow.commit()
        if dispatch is not None:
            logger.info("claimed dispatch %s", dispatch.id)
        return dispatch

    def renew(self, dispatch_id: str) -> bool:
        """Extend the lease of a dispatch this worker runs."""
        until = self.deps.clock.now() + timedelta(seconds=self.lease_s)
        with self.deps.storage.unit_of_work() as uow:
            kept = uow.dispatches.renew(dispatch_id, self.owner, until)
            uow.commit()
        return kept

    def run_one(self, dispatch: Dispatch) -> DispatchState:
        """Run one claimed dispatch with a heartbeat that renews its lease."""
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.lease_s / 3):
                try:
                    if not self.renew(dispatch.id):
                        logger.warning("lost the lease of dispatch %s", dispatch.id)
                        return
                except Exception:
                    logger.exception("could not renew the lease of %s", dispatch.id)

        beat = threading.Thread(
            target=heartbeat, name=f"lease-{dispatch.id}", daemon=True
        )
        beat.start()
        try:
            return self.make_runner(lambda: None).run(dispatch)
        finally:
            done.set()
            beat.join()

    def run(self, once: bool = False) -> int:
        """Claim and run dispatches until stopped (or, with `once`, until none is left).

        Returns:
            The number of dispatches run.
        """
        count = 0
        with ThreadPoolExecutor(
            self.concurrency, thread_name_prefix="dispatch"
        ) as pool:
            running: set[Future[DispatchState]] = set()
            while not self.stop_event.is_set():
                running = {f for f in running if not f.done()}
                claimed = None
                if len(running) < self.concurrency:
                    claimed = self.claim()
                if claimed is not None:
                    running.add(pool.submit(self.run_one, claimed))
                    count += 1
                    continue
                if once and not running and not self._has_waiting():
                    break
                if len(running) >= self.concurrency:
                    # Claim again as soon as a slot frees, not a poll later.
                    wait(running, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                else:
                    self.stop_event.wait(self.poll_s)
        return count

    def _has_waiting(self) -> bool:
        """Tell whether a dispatch is queued or still runs under a lease.

        A `--once` worker keeps polling while another worker's lease is
        live: if that worker died, its dispatch becomes claimable here when
        the lease expires, instead of waiting for the next worker to start.
        """
        now = self.deps.clock.now()
        with self.deps.storage.unit_of_work(write=False) as uow:
            queued = uow.dispatches.count_queued(self.house_id) > 0
            return queued or uow.dispatches.has_live_lease(self.house_id, now)
