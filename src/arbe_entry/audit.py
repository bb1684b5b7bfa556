"""Following the audit trail from a secret to the threads that used it."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from arbe_core.models import AuditEvent
from arbe_entry.app import Arbe


@attrs.define
class _Chain:
    """The ids one chain of events reaches."""

    secrets: set[str] = attrs.Factory(set)
    envs: set[str] = attrs.Factory(set)
    threads: set[str] = attrs.Factory(set)
    sandboxes: set[str] = attrs.Factory(set)

    def holds(self, event: AuditEvent) -> bool:
        """Tell whether `event` belongs to the chain.

        An event of a thread belongs only when its thread does, so another
        thread of the same environment stays out.
        """
        if event.thread_id:
            return event.thread_id in self.threads
        return (
            (event.secret is not None and event.secret in self.secrets)
            or (event.env is not None and event.env in self.envs)
            or (event.sandbox_id is not None and event.sandbox_id in self.sandboxes)
        )


def follow_chain(
    opened: Arbe,
    secret: str | None = None,
    env: str | None = None,
    thread_id: str | None = None,
) -> list[AuditEvent]:
    """Return the events of one chain: secret, environment, sandbox and thread.

    - `secret`: its own events, the environments that bind it, their
      sandboxes, and the threads whose dispatches resolved it.
    - `env`: its own events, the secrets it binds, its sandboxes, and its
      threads.
    - `thread_id`: its own events, its environment and that environment's
      sandboxes, and the secrets its dispatches resolved.

    Several filters narrow the result to the events every one of their chains
    holds. Without filters, every event of the house is returned, oldest
    first.
    """
    with opened.deps.storage.unit_of_work(write=False) as uow:
        events = uow.audit.list(opened.house.id)
    chains = []
    if secret is not None:
        chains.append(_secret_chain(events, secret))
    if env is not None:
        chains.append(_env_chain(events, env))
    if thread_id is not None:
        chains.append(_thread_chain(events, thread_id))
    return [e for e in events if all(chain.holds(e) for chain in chains)]


def _secret_chain(events: list[AuditEvent], secret: str) -> _Chain:
    chain = _Chain(secrets={secret})
    for event in events:
        if event.env and secret in _bound_names(event):
            chain.envs.add(event.env)
        if event.thread_id and secret in _resolved_names(event):
            chain.threads.add(event.thread_id)
    chain.sandboxes = _sandboxes(events, chain.envs, chain.threads)
    return chain


def _env_chain(events: list[AuditEvent], env: str) -> _Chain:
    chain = _Chain(envs={env})
    for event in events:
        if event.env != env:
            continue
        chain.secrets.update(_bound_names(event))
        if event.thread_id:
            chain.threads.add(event.thread_id)
    chain.sandboxes = _sandboxes(events, chain.envs, chain.threads)
    return chain


def _thread_chain(events: list[AuditEvent], thread_id: str) -> _Chain:
    chain = _Chain(threads={thread_id})
    for event in events:
        if event.thread_id != thread_id:
            continue
        if event.env:
            chain.envs.add(event.env)
        chain.secrets.update(_resolved_names(event))
    chain.sandboxes = _sandboxes(events, chain.envs, chain.threads)
    return chain


def _sandboxes(
    events: Iterable[AuditEvent], envs: set[str], threads: set[str]
) -> set[str]:
    return {
        e.sandbox_id
        for e in events
        if e.sandbox_id and (e.env in envs or e.thread_id in threads)
    }


def _bound_names(event: AuditEvent) -> set[str]:
    """Return the secrets an `env.create` or `env.bind` event binds."""
    if event.action == "env.create":
        bindings = event.details.get("bindings")
        return {str(b) for b in bindings} if isinstance(bindings, list) else set()
    if event.action == "env.bind":
        return {str(event.details.get("binding"))}
    return set()


def _resolved_names(event: AuditEvent) -> set[str]:
    """Return the secrets a `dispatch.resolve` event lists."""
    resolved = event.details.get("secrets")
    if event.action != "dispatch.resolve" or not isinstance(resolved, list):
        return set()
    return {str(r["name"]) for r in resolved if isinstance(r, dict) and "name" in r}
