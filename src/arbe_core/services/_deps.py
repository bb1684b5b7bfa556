from __future__ import annotations

from typing import final

import attrs

from arbe_core.models import AuditEvent
from arbe_core.ports import Clock, IdFactory, Sealer, Storage, UnitOfWork


@final
@attrs.frozen
class Deps:
    """The ports every service needs, injected by the composition root."""

    storage: Storage
    sealer: Sealer
    clock: Clock
    ids: IdFactory

    def audit(
        self, uow: UnitOfWork, house_id: str, actor: str, action: str, **fields: object
    ) -> None:
        """Append an audit event inside `uow`; it commits with the change."""
        details = fields.pop("details", {})
        event = AuditEvent(
            id=self.ids.new("evt"),
            house_id=house_id,
            at=self.clock.now(),
            actor=actor,
            action=action,
            secret=_text(fields.get("secret")),
            env=_text(fields.get("env")),
            sandbox_id=_text(fields.get("sandbox_id")),
            thread_id=_text(fields.get("thread_id")),
            details=dict(details) if isinstance(details, dict) else {},
        )
        uow.audit.add(event)


def _text(value: object) -> str | None:
    return None if value is None else str(value)
