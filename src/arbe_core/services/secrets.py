"""Secrets of one house: set and rotate, view, history, rollback, resolve."""

from __future__ import annotations

import builtins

from arbe_core.errors import (
    ConcurrentUpdate,
    SecretNotFound,
    SecretVersionNotFound,
)
from arbe_core.models import House, Secret, SecretAudience, SecretVersion
from arbe_core.names import check_secret_name, check_value
from arbe_core.ports import SealContext, UnitOfWork
from arbe_core.services._deps import Deps

__all__ = ["KEPT_VERSIONS", "SecretService"]

#: How many sealed versions of a secret are kept for history and rollback.
KEPT_VERSIONS = 10
_MAX_RACE_RETRIES = 20


class SecretService:
    """The secrets of one house, acted on by one actor (`user:NAME`)."""

    def __init__(self, deps: Deps, house: House, actor: str) -> None:
        self.deps = deps
        self.house = house
        self.actor = actor

    @property
    def owner(self) -> str:
        """The owner recorded on secrets this actor creates."""
        return self.actor

    def list(self) -> list[Secret]:
        """Return the house's secrets (metadata only)."""
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.secrets.list(self.house.id)

    def view(self, name: str) -> Secret:
        """Return one secret's metadata, or raise `SecretNotFound`."""
        check_secret_name(name)
        with self.deps.storage.unit_of_work(write=False) as uow:
            secret = uow.secrets.get(self.house.id, name)
        if secret is None:
            raise SecretNotFound(name, self.house.name)
        return secret

    def set(
        self,
        name: str,
        value: str,
        audience: SecretAudience | None = None,
        shared: bool | None = None,
    ) -> Secret:
        """Create the secret, or rotate it to a new version.

        Audience and sharing are set at creation (default `environment`, not
        shared) and change on rotation only when given. The rotation is one
        transaction, so a crash leaves the old value or the new one.

        Raises:
            InvalidName: the name breaks the secret name rule.
            InvalidInput: the value is empty or over 64 KiB.
        """
        check_secret_name(name)
        check_value(value, name)
        for _ in range(_MAX_RACE_RETRIES):
            try:
                return self._write(name, value, audience, shared, action="set")
            except ConcurrentUpdate:
                continue
        raise ConcurrentUpdate(
            f"Secret {name!r} kept changing under concurrent writers; try again."
        )

    def _write(
        self,
        name: str,
        value: str,
        audience: SecretAudience | None,
        shared: bool | None,
        action: str,
    ) -> Secret:
        now = self.deps.clock.now()
        with self.deps.storage.unit_of_work() as uow:
            current = uow.secrets.get(self.house.id, name)
            if current is None:
                secret = Secret(
                    house_id=self.house.id,
                    name=name,
                    audience=audience or SecretAudience.ENVIRONMENT,
                    shared=bool(shared),
                    owner=self.owner,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            else:
                secret = Secret(
                    house_id=self.house.id,
                    name=name,
                    audience=audience or current.audience,
                    shared=current.shared if shared is None else shared,
                    owner=current.owner,
                    version=current.version + 1,
                    created_at=current.created_at,
                    updated_at=now,
                )
            sealed = self.deps.sealer.seal(
                value, self._context(uow, name, secret.version)
            )
            uow.secrets.put(secret, sealed, current.version if current else 0)
            uow.secrets.prune(self.house.id, name, KEPT_VERSIONS)
            kind = "secret.create" if current is None else f"secret.{action}"
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                kind,
                secret=name,
                details={"version": secret.version},
            )
            uow.commit()
        return secret

    def delete(self, name: str) -> Secret:
        """Delete the secret and its history, or raise `SecretNotFound`."""
        secret = self.view(name)
        with self.deps.storage.unit_of_work() as uow:
            uow.secrets.delete(self.house.id, name)
            self.deps.audit(
                uow,
                self.house.id,
                self.actor,
                "secret.delete",
                secret=name,
                details={"version": secret.version},
            )
            uow.commit()
        return secret

    def history(self, name: str) -> builtins.list[SecretVersion]:
        """Return the kept versions of the secret, newest first."""
        self.view(name)
        with self.deps.storage.unit_of_work(write=False) as uow:
            return uow.secrets.versions(self.house.id, name)

    def rollback(self, name: str, version: int) -> Secret:
        """Make kept `version`'s value current again, as a new version.

        Raises:
            SecretNotFound: no such secret.
            SecretVersionNotFound: the version is not kept.
        """
        self.view(name)
        with self.deps.storage.unit_of_work(write=False) as uow:
            kept = [v.version for v in uow.secrets.versions(self.house.id, name)]
            sealed = uow.secrets.sealed(self.house.id, name, version)
            if sealed is None:
                raise SecretVersionNotFound(name, version, kept)
            value = self.deps.sealer.open(sealed, self._context(uow, name, version))
        secret = self._write(name, value, None, None, action="rollback")
        return secret

    def resolve(self, name: str, agent: str | None = None) -> tuple[str, Secret] | None:
        """Open the current value of `name` for use, or return None when missing.

        With `agent`, the value is resolved as that bot would: only shared
        secrets and the bot's own (`bot:NAME`) are usable, and any other
        secret counts as missing. Without it, the house itself resolves, and
        may use any secret.
        """
        with self.deps.storage.unit_of_work(write=False) as uow:
            secret = uow.secrets.get(self.house.id, name)
            if secret is None:
                return None
            if agent is not None and not usable_by(secret, agent):
                return None
            sealed = uow.secrets.sealed(self.house.id, name, secret.version)
            if sealed is None:
                return None
            value = self.deps.sealer.open(
                sealed, self._context(uow, name, secret.version)
            )
        return value, secret

    def _context(self, uow: UnitOfWork, name: str, version: int) -> SealContext:
        return SealContext(
            house_id=self.house.id,
            name=name,
            version=version,
            wrapped_key=uow.houses.wrapped_key(self.house.id),
        )


def usable_by(secret: Secret, agent: str) -> bool:
    """Tell whether bot `agent` may use `secret`: shared, or its own."""
    return secret.shared or secret.owner == f"bot:{agent}"
