"""Houses: create, list, choose the default, rotate the master key."""

from __future__ import annotations

from arbe_core.errors import Conflict, HouseNotFound
from arbe_core.models import House
from arbe_core.names import check_slug
from arbe_core.services._deps import Deps

__all__ = ["DEFAULT_HOUSE", "HouseService"]

DEFAULT_HOUSE = "default"
_DEFAULT_SETTING = "default_house"


class HouseService:
    """Create and find houses, and pick the one a command works on."""

    def __init__(self, deps: Deps, actor: str = "system") -> None:
        self.deps = deps
        self.actor = actor

    def create(self, name: str) -> House:
        """Create a house with a new data key.

        Raises:
            InvalidName: the name breaks the slug rule.
            Conflict: a house of this name exists.
        """
        check_slug(name, "house")
        with self.deps.storage.unit_of_work() as uow:
            if uow.houses.get_by_name(name) is not None:
                raise Conflict(f"House {name!r} already exists.")
            house = House(
                id=self.deps.ids.new("hse"), name=name, created_at=self.deps.clock.now()
            )
            uow.houses.add(house, self.deps.sealer.new_data_key())
            if uow.houses.get_setting(_DEFAULT_SETTING) is None:
                uow.houses.set_setting(_DEFAULT_SETTING, name)
            self.deps.audit(uow, house.id, self.actor, "house.create")
            uow.commit()
        return house

    def list(self) -> list[House]:
        """Return every house of the home."""
        with self.deps.storage.unit_of_work() as uow:
            return uow.houses.list()

    def get(self, name: str) -> House:
        """Return the house named `name`, or raise `HouseNotFound`."""
        with self.deps.storage.unit_of_work() as uow:
            house = uow.houses.get_by_name(name)
        if house is None:
            raise HouseNotFound(name)
        return house

    def default_name(self) -> str:
        """Return the name of the default house (`default` until one is chosen)."""
        with self.deps.storage.unit_of_work() as uow:
            return uow.houses.get_setting(_DEFAULT_SETTING) or DEFAULT_HOUSE

    def resolve(self, name: str | None) -> House:
        """Return the named house, or the default one, created on first use.

        A house named explicitly must exist; only the default house is created
        on demand, so the first command on a fresh home needs no set-up.
        """
        if name is not None:
            return self.get(name)

        default = self.default_name()
        with self.deps.storage.unit_of_work() as uow:
            house = uow.houses.get_by_name(default)
        if house is not None:
            return house
        try:
            return self.create(default)
        except Conflict:
            # Another process created it between our read and our write.
            return self.get(default)

    def use(self, name: str) -> House:
        """Make `name` the default house of the home."""
        house = self.get(name)
        with self.deps.storage.unit_of_work() as uow:
            uow.houses.set_setting(_DEFAULT_SETTING, house.name)
            uow.commit()
        return house

    def check_master_key(self) -> None:
        """Check that the master key opens every house's data key.

        Raises:
            MasterKeyMismatch: any house's key was wrapped under another key.
        """
        with self.deps.storage.unit_of_work() as uow:
            keys = [uow.houses.wrapped_key(h.id) for h in uow.houses.list()]
        for key in keys:
            self.deps.sealer.check(key)

    def rotate_master_key(self, new_master_key: bytes) -> int:
        """Rewrap every house's data key under `new_master_key`, in one transaction.

        Values are never decrypted: only the data keys are rewrapped, so a
        crash midway leaves every key wrapped under the old master key.

        Returns:
            The number of houses rewrapped.
        """
        with self.deps.storage.unit_of_work() as uow:
            houses = uow.houses.list()
            for house in houses:
                old = uow.houses.wrapped_key(house.id)
                uow.houses.set_wrapped_key(
                    house.id, self.deps.sealer.rewrap(old, new_master_key)
                )
                self.deps.audit(uow, house.id, self.actor, "house.rotate_key")
            uow.commit()
        return len(houses)
