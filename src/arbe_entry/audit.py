"""Following the audit trail from a secret to the threads that used it."""

from __future__ import annotations

from arbe_core.models import AuditEvent
from arbe_entry.app import Arbe


def follow_chain(
    opened: Arbe,
    secret: str | None = None,
    env: str | None = None,
    thread_id: str | None = None,
) -> list[AuditEvent]:
    """Return the events of one chain: secret, then environment, sandbox and thread.

    With `secret`, the chain takes in the environments that bind it (their
    events), and the dispatches that resolved it (their threads' events).
    Without filters, every event of the house is returned.
    """
    with opened.deps.storage.unit_of_work(write=False) as uow:
        events = uow.audit.list(opened.house.id)
    if secret is None and env is None and thread_id is None:
        return events

    secrets = {secret} if secret else set()
    envs = {env} if env else set()
    threads = {thread_id} if thread_id else set()
    for event in events:
        if (
            secret
            and event.action == "env.create"
            and secret in _names(event.details.get("bindings"))
        ):
            envs.add(event.env or "")
        if (
            secret
            and event.action == "env.bind"
            and event.details.get("binding") == secret
        ):
            envs.add(event.env or "")
        if secret and event.action == "dispatch.resolve":
            resolved = event.details.get("secrets")
            if isinstance(resolved, list) and any(
                isinstance(r, dict) and r.get("name") == secret for r in resolved
            ):
                threads.add(event.thread_id or "")
    sandboxes = {e.sandbox_id for e in events if e.env in envs and e.sandbox_id}
    return [
        e
        for e in events
        if (e.secret and e.secret in secrets)
        or (
            e.env
            and e.env in envs
            and (
                not threads
                or not e.thread_id
                or e.thread_id in threads
                or not thread_id
            )
        )
        or (e.sandbox_id and e.sandbox_id in sandboxes)
        or (e.thread_id and e.thread_id in threads)
    ]


def _names(value: object) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else set()
