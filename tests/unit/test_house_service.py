"""The house service: create, find, choose the default, rotate the master key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from arbe_adapters.crypto import AesGcmSealer, generate_master_key
from arbe_adapters.storage import InMemoryStorage, SqliteStorage
from arbe_core.errors import Conflict, HouseNotFound, InvalidName, MasterKeyMismatch
from arbe_core.ports import Storage
from arbe_core.services import Deps, HouseService, SecretService
from arbe_core.services.houses import DEFAULT_HOUSE
from tests.helpers import EPOCH, FakeClock, SequentialIds

MASTER_KEY = bytes(range(32))

STORAGES: list[Callable[[Path], Storage]] = [
    lambda _: InMemoryStorage(),
    lambda tmp_path: SqliteStorage(tmp_path / "arbe.db"),
]


@pytest.fixture(params=STORAGES, ids=["memory", "sqlite"])
def deps(request: pytest.FixtureRequest, tmp_path: Path) -> Deps:
    return Deps(
        storage=request.param(tmp_path),
        sealer=AesGcmSealer(MASTER_KEY),
        clock=FakeClock(),
        ids=SequentialIds(),
    )


@pytest.fixture
def service(deps: Deps) -> HouseService:
    return HouseService(deps, actor="user:ada")


def with_master_key(deps: Deps, master_key: bytes) -> Deps:
    return Deps(
        storage=deps.storage,
        sealer=AesGcmSealer(master_key),
        clock=deps.clock,
        ids=deps.ids,
    )


class TestHouseServiceCreate:
    def test_create_returns_house(self, service: HouseService) -> None:
        house = service.create("acme")

        assert house.name == "acme"
        assert house.id == "hse_000001"
        assert house.created_at == EPOCH
        assert house.active_env is None

    def test_create_stores_house(self, service: HouseService) -> None:
        created = service.create("acme")

        assert service.get("acme") == created

    def test_create_gives_own_data_key(self, service: HouseService, deps: Deps) -> None:
        first = service.create("acme")
        second = service.create("other")

        with deps.storage.unit_of_work() as uow:
            keys = {uow.houses.wrapped_key(h.id) for h in (first, second)}

        assert len(keys) == 2

    def test_create_first_becomes_default(self, service: HouseService) -> None:
        service.create("acme")
        service.create("other")

        assert service.default_name() == "acme"

    def test_create_duplicate_name_conflicts(self, service: HouseService) -> None:
        service.create("acme")

        with pytest.raises(Conflict) as caught:
            service.create("acme")

        assert "'acme'" in caught.value.message
        assert len(service.list()) == 1

    @pytest.mark.parametrize("name", ["Acme", "-acme", "a b", "", "a" * 64])
    def test_create_rejects_invalid_name(
        self, service: HouseService, name: str
    ) -> None:
        with pytest.raises(InvalidName) as caught:
            service.create(name)

        assert caught.value.kind == "house"
        assert service.list() == []

    def test_create_records_audit(self, service: HouseService, deps: Deps) -> None:
        house = service.create("acme")

        with deps.storage.unit_of_work() as uow:
            events = uow.audit.list(house.id)

        assert [(e.action, e.actor) for e in events] == [("house.create", "user:ada")]


class TestHouseServiceFind:
    def test_list_orders_by_name(self, service: HouseService) -> None:
        for name in ("zeta", "alpha", "mid"):
            service.create(name)

        names = [h.name for h in service.list()]

        assert names == ["alpha", "mid", "zeta"]

    def test_get_missing_raises(self, service: HouseService) -> None:
        with pytest.raises(HouseNotFound) as caught:
            service.get("nope")

        assert "'nope'" in caught.value.message
        assert "arbe house create nope" in caught.value.message

    def test_default_name_before_any_house(self, service: HouseService) -> None:
        assert service.default_name() == DEFAULT_HOUSE

    def test_resolve_none_creates_default(self, service: HouseService) -> None:
        house = service.resolve(None)

        assert house.name == DEFAULT_HOUSE
        assert [h.name for h in service.list()] == [DEFAULT_HOUSE]

    def test_resolve_none_reuses_default(self, service: HouseService) -> None:
        first = service.resolve(None)

        second = service.resolve(None)

        assert second == first
        assert len(service.list()) == 1

    def test_resolve_none_follows_use(self, service: HouseService) -> None:
        service.create("acme")
        other = service.create("other")
        service.use("other")

        house = service.resolve(None)

        assert house == other

    def test_resolve_named_missing_creates_nothing(self, service: HouseService) -> None:
        with pytest.raises(HouseNotFound):
            service.resolve("nope")

        assert service.list() == []

    def test_use_sets_default(self, service: HouseService) -> None:
        service.create("acme")
        service.create("other")

        service.use("other")

        assert service.default_name() == "other"

    def test_use_missing_keeps_default(self, service: HouseService) -> None:
        service.create("acme")

        with pytest.raises(HouseNotFound):
            service.use("nope")

        assert service.default_name() == "acme"


class TestHouseServiceMasterKey:
    def test_check_master_key_accepts_right_key(self, service: HouseService) -> None:
        service.create("acme")

        service.check_master_key()

    def test_check_master_key_rejects_wrong_key(
        self, service: HouseService, deps: Deps
    ) -> None:
        service.create("acme")
        wrong = HouseService(with_master_key(deps, generate_master_key()))

        with pytest.raises(MasterKeyMismatch):
            wrong.check_master_key()

    def test_rotate_master_key_counts_houses(self, service: HouseService) -> None:
        service.create("acme")
        service.create("other")

        count = service.rotate_master_key(generate_master_key())

        assert count == 2

    def test_rotate_master_key_new_key_opens(
        self, service: HouseService, deps: Deps
    ) -> None:
        house = service.create("acme")
        SecretService(deps, house, "user:ada").set("TOKEN", "sk-test-123")
        new_key = generate_master_key()

        service.rotate_master_key(new_key)

        rotated = SecretService(with_master_key(deps, new_key), house, "user:ada")
        resolved = rotated.resolve("TOKEN")
        assert resolved is not None
        assert resolved[0] == "sk-test-123"

    def test_rotate_master_key_old_key_fails(
        self, service: HouseService, deps: Deps
    ) -> None:
        house = service.create("acme")
        SecretService(deps, house, "user:ada").set("TOKEN", "sk-test-123")

        service.rotate_master_key(generate_master_key())

        stale = SecretService(with_master_key(deps, MASTER_KEY), house, "user:ada")
        with pytest.raises(MasterKeyMismatch):
            stale.resolve("TOKEN")

    def test_rotate_master_key_keeps_sealed_values(
        self, service: HouseService, deps: Deps
    ) -> None:
        """Only data keys are rewrapped, so the sealed values stay byte for byte."""
        house = service.create("acme")
        SecretService(deps, house, "user:ada").set("TOKEN", "sk-test-123")
        with deps.storage.unit_of_work() as uow:
            before = uow.secrets.sealed(house.id, "TOKEN", 1)

        service.rotate_master_key(generate_master_key())

        with deps.storage.unit_of_work() as uow:
            after = uow.secrets.sealed(house.id, "TOKEN", 1)
        assert after == before
