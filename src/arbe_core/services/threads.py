"""Threads and their entries; appending a user entry queues a dispatch."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterator
from typing import Any

from arbe_core.errors import EnvironmentNotFound, InvalidInput, ThreadNotFound
from arbe_core.models import Dispatch, DispatchState, Entry, EntryKind, House, Thread
from arbe_core.names import check_slug
from arbe_core.ports import UnitOfWork
from arbe_core.services._deps import Deps
from arbe_core.services.agents import AgentService

__all__ = ["ThreadService", "append_entry"]

#: The maximum length of a user entry, in characters.
MAX_ENTRY_CHARS = 256 * 1024
_MAX_PARENT_REF = 200


def append_entry(
    deps: Deps,
    uow: UnitOfWork,
    thread_id: str,
    author: str,
    kind: EntryKind,
    body: str,
    data: dict[str, Any] | None = None,
) -> Entry:
    """Append an entry with the next seq inside `uow` (the caller commits)."""
    seq = uow.entries.last_seq(thread_id) + 1
    entry = Entry(
        id=deps.ids.new("ent"),
        thread_id=thread_id,
        seq=seq,
        author=author,
        kind=kind,
        body=body,
        created_at=deps.clock.now(),
        data=data or {},
    )
    uow.entries.add(entry)
    return entry


class ThreadService:
    """The threads of one house."""

    def __init__(
        self, deps: Deps, house: House, actor: str, agents: AgentService
    ) -> None:
        self.deps = deps
        self.house = house
        self.actor = actor
        self.agents = agents

    def create(
        self,
        parent_ref: str | None = None,
        env: str | None = None,
        model: str | None = None,
    ) -> Thread:
        """Create a thread bound to `env`, else to the house's active environment.

        Raises:
            EnvironmentNotFound: `env` does not exist.
            InvalidInput: the model ref's provider is unknown.
        """
        if parent_ref is not None:
            _check_parent_ref(parent_ref)
        if model is not None:
            self.agents.check_model(model)
        with self.deps.storage.unit_of_work() as uow:
            house = uow.houses.get(self.house.id)
            env_name = env
            if env_name is None and house is not None:
                env_name = house.active_env
            if env_name is not None:
                check_slug(env_name, "environment")
                if uow.environments.get(self.house.id, env_name) is None:
                    raise EnvironmentNotFound(env_name)
            thread = Thread(
                id=self.deps.ids.new("thr"),
                house_id=self.house.id,
                parent_ref=parent_ref,
                env=env_name,
                model=model,
                created_at=self.deps.clock.now(),
            )
            uow.threads.add(thread)
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "thread.create",
                env=env_name,
                thread_id=thread.id,
                details={"model": model, "parent_ref": parent_ref},
            )
            uow.commit()
        return thread

    def list(self, limit: int = 100) -> list[Thread]:
        """Return the newest threads of the house first."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.threads.list(self.house.id, limit)

    def get(self, thread_id: str) -> Thread:
        """Return the thread, or raise `ThreadNotFound` (also for another house's)."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            thread = uow.threads.get(thread_id)
        if thread is None or thread.house_id != self.house.id:
            raise ThreadNotFound(thread_id)
        return thread

    def post(self, thread_id: str, text: str) -> tuple[Entry, Dispatch]:
        """Append a user entry and, in the same transaction, queue a dispatch.

        When the thread already has a live dispatch, the entry joins it and
        no second dispatch is queued.

        Returns:
            The entry and the dispatch that will reply to it.
        """
        self.get(thread_id)
        if not text.strip():
            raise InvalidInput("The entry text is empty; write what the bot should do.")
        if len(text) > MAX_ENTRY_CHARS:
            raise InvalidInput(
                f"The entry text has {len(text)} characters, over the limit of "
                f"{MAX_ENTRY_CHARS}."
            )
        with self.deps.storage.unit_of_work() as uow:
            entry = append_entry(
                self.deps, uow, thread_id, self.actor, EntryKind.MESSAGE, text
            )
            dispatch = uow.dispatches.live_for_thread(thread_id)
            if dispatch is None:
                now = self.deps.clock.now()
                dispatch = Dispatch(
                    id=self.deps.ids.new("dsp"),
                    thread_id=thread_id,
                    house_id=self.house.id,
                    trigger_seq=entry.seq,
                    state=DispatchState.QUEUED,
                    created_at=now,
                    updated_at=now,
                )
                uow.dispatches.add(dispatch)
            uow.commit()
        return entry, dispatch

    def entries(
        self, thread_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[Entry]:
        """Return the thread's entries past seq `after`."""
        self.get(thread_id)
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.entries.after(thread_id, after, limit)

    def dispatch(self, thread_id: str) -> Dispatch | None:
        """Return the thread's newest dispatch, or None."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.dispatches.latest_for_thread(thread_id)

    def follow(
        self,
        thread_id: str,
        after: int = 0,
        poll: float = 1.0,
        on_idle: Callable[[], None] | None = None,
    ) -> Iterator[Entry | Dispatch]:
        """Yield the entries past `after`, then new ones until the dispatch ends.

        The last item yielded is the dispatch in its terminal state (or the
        latest dispatch when none is live). `on_idle` is called after each
        wait that brought nothing new.
        """
        self.get(thread_id)
        seq = after
        while True:
            with self.deps.storage.unit_of_work(write=False) as uow:
                batch = uow.entries.after(thread_id, seq, 1000)
                dispatch = uow.dispatches.latest_for_thread(thread_id)
            for entry in batch:
                seq = entry.seq
                yield entry
            if batch:
                continue
            if dispatch is None or not dispatch.state.live:
                if dispatch is not None:
                    yield dispatch
                return
            self.deps.storage.wait_for_entries(thread_id, seq, poll)
            if on_idle is not None:
                on_idle()

    def cancel(self, thread_id: str) -> Dispatch:
        """Cancel the thread's live dispatch; the worker stops at its next step."""
        self.get(thread_id)
        with self.deps.storage.unit_of_work() as uow:
            dispatch = uow.dispatches.live_for_thread(thread_id)
            if dispatch is None:
                raise InvalidInput(
                    f"Thread {thread_id!r} has no live dispatch to cancel."
                )
            now = self.deps.clock.now()
            uow.dispatches.finish(
                dispatch.id, None, DispatchState.CANCELLED, "cancelled", now
            )
            append_entry(
                self.deps,
                uow,
                thread_id,
                "system",
                EntryKind.STATUS,
                f"cancelled by {self.actor}",
                {"state": "cancelled", "dispatch": dispatch.id},
            )
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "dispatch.cancel",
                thread_id=thread_id,
                details={"dispatch": dispatch.id},
            )
            uow.commit()
            cancelled = uow.dispatches.get(dispatch.id)
        assert cancelled is not None
        return cancelled


def _check_parent_ref(ref: str) -> None:
    if not ref or len(ref) > _MAX_PARENT_REF or any(ord(c) < 32 for c in ref):
        raise InvalidInput(
            f"Invalid parent ref {ref!r}: use printable text of at most "
            f"{_MAX_PARENT_REF} characters, such as issue-42."
        )
