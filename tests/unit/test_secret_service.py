"""The secret service on the in-memory and SQLite storage adapters."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from arbe_adapters.crypto import AesGcmSealer
from arbe_adapters.storage import InMemoryStorage, SqliteStorage
from arbe_core.errors import (
    InvalidInput,
    InvalidName,
    SecretNotFound,
    SecretVersionNotFound,
)
from arbe_core.models import House, SecretAudience
from arbe_core.names import MAX_SECRET_BYTES
from arbe_core.ports import Storage
from arbe_core.services import Deps, HouseService, SecretService
from arbe_core.services.secrets import KEPT_VERSIONS
from tests.helpers import EPOCH, FakeClock, SequentialIds

MASTER_KEY = bytes(range(32))
USER = "user:ada"

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
def clock(deps: Deps) -> FakeClock:
    assert isinstance(deps.clock, FakeClock)
    return deps.clock


@pytest.fixture
def house(deps: Deps) -> House:
    return HouseService(deps).create("acme")


@pytest.fixture
def service(deps: Deps, house: House) -> SecretService:
    return SecretService(deps, house, USER)


def value_of(service: SecretService, name: str) -> str:
    resolved = service.resolve(name)
    assert resolved is not None, f"{name} did not resolve"
    return resolved[0]


def set_versions(service: SecretService, name: str, count: int) -> None:
    for number in range(1, count + 1):
        service.set(name, f"sk-test-{number}")


class TestSecretServiceSet:
    def test_set_creates_version_one(self, service: SecretService) -> None:
        secret = service.set("OPENROUTER_API_KEY", "sk-test-123")

        assert secret.version == 1
        assert secret.name == "OPENROUTER_API_KEY"
        assert secret.house_id == service.house.id
        assert secret.audience is SecretAudience.ENVIRONMENT
        assert secret.shared is False
        assert secret.owner == USER
        assert secret.created_at == EPOCH
        assert secret.updated_at == EPOCH

    def test_set_stores_value(self, service: SecretService) -> None:
        service.set("OPENROUTER_API_KEY", "sk-test-123")

        assert value_of(service, "OPENROUTER_API_KEY") == "sk-test-123"

    def test_set_takes_audience_and_shared(self, service: SecretService) -> None:
        secret = service.set(
            "DAYTONA_API_KEY",
            "sk-test-123",
            audience=SecretAudience.CAPABILITY,
            shared=True,
        )

        assert secret.audience is SecretAudience.CAPABILITY
        assert secret.shared is True

    def test_set_stores_only_sealed_value(
        self, service: SecretService, deps: Deps
    ) -> None:
        service.set("OPENROUTER_API_KEY", "sk-test-123")

        with deps.storage.unit_of_work() as uow:
            sealed = uow.secrets.sealed(service.house.id, "OPENROUTER_API_KEY", 1)
        assert sealed is not None
        assert b"sk-test-123" not in sealed

    def test_set_view_returns_stored_metadata(self, service: SecretService) -> None:
        created = service.set("OPENROUTER_API_KEY", "sk-test-123", shared=True)

        viewed = service.view("OPENROUTER_API_KEY")

        assert viewed == created

    def test_list_orders_by_name(self, service: SecretService) -> None:
        for name in ("ZED", "ALPHA", "MIDDLE"):
            service.set(name, "sk-test-123")

        names = [s.name for s in service.list()]

        assert names == ["ALPHA", "MIDDLE", "ZED"]

    def test_list_sees_only_own_house(self, service: SecretService, deps: Deps) -> None:
        other_house = HouseService(deps).create("other")
        SecretService(deps, other_house, USER).set("ELSEWHERE", "sk-test-123")
        service.set("HERE", "sk-test-123")

        names = [s.name for s in service.list()]

        assert names == ["HERE"]


class TestSecretServiceRotate:
    def test_rotate_makes_version_two(
        self, service: SecretService, clock: FakeClock
    ) -> None:
        service.set("OPENROUTER_API_KEY", "sk-test-1")
        later = clock.advance(60)

        secret = service.set("OPENROUTER_API_KEY", "sk-test-2")

        assert secret.version == 2
        assert secret.created_at == EPOCH
        assert secret.updated_at == later
        assert value_of(service, "OPENROUTER_API_KEY") == "sk-test-2"

    def test_rotate_keeps_audience_and_shared(self, service: SecretService) -> None:
        service.set(
            "DAYTONA_API_KEY",
            "sk-test-1",
            audience=SecretAudience.CAPABILITY,
            shared=True,
        )

        secret = service.set("DAYTONA_API_KEY", "sk-test-2")

        assert secret.audience is SecretAudience.CAPABILITY
        assert secret.shared is True

    def test_rotate_changes_given_audience_and_shared(
        self, service: SecretService
    ) -> None:
        service.set("DAYTONA_API_KEY", "sk-test-1", shared=True)

        secret = service.set(
            "DAYTONA_API_KEY",
            "sk-test-2",
            audience=SecretAudience.CAPABILITY,
            shared=False,
        )

        assert secret.audience is SecretAudience.CAPABILITY
        assert secret.shared is False

    def test_rotate_keeps_first_owner(self, service: SecretService, deps: Deps) -> None:
        service.set("OPENROUTER_API_KEY", "sk-test-1")
        other_user = SecretService(deps, service.house, "user:grace")

        secret = other_user.set("OPENROUTER_API_KEY", "sk-test-2")

        assert secret.owner == USER

    def test_rotate_threads_all_succeed(self, service: SecretService) -> None:
        """Concurrent rotations retry on conflict, so every one lands."""
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: service.set("RACED", f"sk-test-{n}"), range(16)))

        assert service.view("RACED").version == 16


class TestSecretServiceHistory:
    def test_history_lists_newest_first(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", 3)

        history = service.history("TOKEN")

        assert [v.version for v in history] == [3, 2, 1]
        assert [v.current for v in history] == [True, False, False]

    def test_history_keeps_last_ten(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", KEPT_VERSIONS + 2)

        history = service.history("TOKEN")

        assert [v.version for v in history] == list(range(12, 2, -1))

    def test_history_records_version_metadata(
        self, service: SecretService, clock: FakeClock
    ) -> None:
        service.set("TOKEN", "sk-test-1")
        later = clock.advance(5)
        service.set("TOKEN", "sk-test-2", shared=True)

        newest, oldest = service.history("TOKEN")

        assert newest.shared is True
        assert newest.created_at == later
        assert oldest.shared is False
        assert oldest.created_at == EPOCH

    def test_history_missing_secret_raises(self, service: SecretService) -> None:
        with pytest.raises(SecretNotFound):
            service.history("MISSING")


class TestSecretServiceRollback:
    def test_rollback_makes_new_version(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", 2)

        secret = service.rollback("TOKEN", 1)

        assert secret.version == 3
        assert value_of(service, "TOKEN") == "sk-test-1"

    def test_rollback_keeps_history(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", 2)

        service.rollback("TOKEN", 1)

        assert [v.version for v in service.history("TOKEN")] == [3, 2, 1]

    def test_rollback_pruned_version_names_kept(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", KEPT_VERSIONS + 2)

        with pytest.raises(SecretVersionNotFound) as caught:
            service.rollback("TOKEN", 2)

        assert caught.value.kept == list(range(12, 2, -1))
        assert "Version 2 of secret 'TOKEN' is not kept" in caught.value.message
        assert "12, 11, 10, 9, 8, 7, 6, 5, 4, 3" in caught.value.message

    def test_rollback_unknown_version_writes_nothing(
        self, service: SecretService
    ) -> None:
        set_versions(service, "TOKEN", 2)

        with pytest.raises(SecretVersionNotFound):
            service.rollback("TOKEN", 7)

        assert service.view("TOKEN").version == 2
        assert value_of(service, "TOKEN") == "sk-test-2"

    def test_rollback_missing_secret_raises(self, service: SecretService) -> None:
        with pytest.raises(SecretNotFound):
            service.rollback("MISSING", 1)


class TestSecretServiceDelete:
    def test_delete_removes_secret(self, service: SecretService) -> None:
        service.set("TOKEN", "sk-test-1")

        service.delete("TOKEN")

        with pytest.raises(SecretNotFound):
            service.view("TOKEN")
        assert service.resolve("TOKEN") is None

    def test_delete_removes_history(self, service: SecretService, deps: Deps) -> None:
        set_versions(service, "TOKEN", 3)

        service.delete("TOKEN")

        with deps.storage.unit_of_work() as uow:
            versions = uow.secrets.versions(service.house.id, "TOKEN")
            sealed = [
                uow.secrets.sealed(service.house.id, "TOKEN", n) for n in (1, 2, 3)
            ]
        assert versions == []
        assert sealed == [None, None, None]

    def test_delete_then_set_restarts_versions(self, service: SecretService) -> None:
        set_versions(service, "TOKEN", 3)
        service.delete("TOKEN")

        secret = service.set("TOKEN", "sk-test-new")

        assert secret.version == 1
        assert [v.version for v in service.history("TOKEN")] == [1]

    def test_delete_missing_secret_raises(self, service: SecretService) -> None:
        with pytest.raises(SecretNotFound) as caught:
            service.delete("MISSING")

        assert "'MISSING'" in caught.value.message
        assert "'acme'" in caught.value.message


class TestSecretServiceResolve:
    @pytest.fixture
    def bot_service(self, deps: Deps, house: House) -> SecretService:
        return SecretService(deps, house, "bot:coder")

    def test_resolve_missing_returns_none(self, service: SecretService) -> None:
        assert service.resolve("MISSING") is None

    def test_resolve_house_sees_private_secret(self, service: SecretService) -> None:
        service.set("PRIVATE", "sk-test-123")

        resolved = service.resolve("PRIVATE")

        assert resolved is not None
        assert resolved[0] == "sk-test-123"
        assert resolved[1].version == 1

    def test_resolve_bot_sees_shared_secret(self, service: SecretService) -> None:
        service.set("SHARED", "sk-test-123", shared=True)

        resolved = service.resolve("SHARED", agent="coder")

        assert resolved is not None
        assert resolved[0] == "sk-test-123"

    def test_resolve_bot_misses_user_secret(self, service: SecretService) -> None:
        service.set("PRIVATE", "sk-test-123")

        assert service.resolve("PRIVATE", agent="coder") is None

    def test_resolve_bot_sees_own_secret(
        self, service: SecretService, bot_service: SecretService
    ) -> None:
        bot_service.set("BOT_TOKEN", "sk-test-123")

        resolved = service.resolve("BOT_TOKEN", agent="coder")

        assert resolved is not None
        assert resolved[0] == "sk-test-123"

    def test_resolve_bot_misses_other_bot_secret(
        self, service: SecretService, bot_service: SecretService
    ) -> None:
        bot_service.set("BOT_TOKEN", "sk-test-123")

        assert service.resolve("BOT_TOKEN", agent="reviewer") is None

    def test_resolve_bot_misses_after_unshare(self, service: SecretService) -> None:
        service.set("TOKEN", "sk-test-1", shared=True)
        service.set("TOKEN", "sk-test-2", shared=False)

        assert service.resolve("TOKEN", agent="coder") is None


class TestSecretServiceRejects:
    @pytest.mark.parametrize("name", ["lower", "DASH-ED", "1ABC", "A" * 129, ""])
    def test_set_rejects_invalid_name(self, service: SecretService, name: str) -> None:
        with pytest.raises(InvalidName):
            service.set(name, "sk-test-123")

        assert service.list() == []

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("", id="empty"),
            pytest.param("x" * (MAX_SECRET_BYTES + 1), id="over-64-KiB"),
        ],
    )
    def test_set_rejects_value_keeps_stored(
        self, service: SecretService, value: str
    ) -> None:
        service.set("TOKEN", "sk-test-1")

        with pytest.raises(InvalidInput):
            service.set("TOKEN", value)

        assert service.view("TOKEN").version == 1
        assert value_of(service, "TOKEN") == "sk-test-1"
        assert [v.version for v in service.history("TOKEN")] == [1]

    def test_set_accepts_exactly_64_kib(self, service: SecretService) -> None:
        value = "x" * MAX_SECRET_BYTES

        service.set("TOKEN", value)

        assert value_of(service, "TOKEN") == value

    def test_view_missing_secret_raises(self, service: SecretService) -> None:
        with pytest.raises(SecretNotFound):
            service.view("MISSING")


class TestSecretServiceAudit:
    def test_audit_records_changes_without_values(
        self, service: SecretService, deps: Deps
    ) -> None:
        set_versions(service, "TOKEN", 2)
        service.rollback("TOKEN", 1)
        service.delete("TOKEN")

        with deps.storage.unit_of_work() as uow:
            events = uow.audit.list(service.house.id, secret="TOKEN")

        assert [e.action for e in events] == [
            "secret.create",
            "secret.set",
            "secret.rollback",
            "secret.delete",
        ]
        assert {e.actor for e in events} == {USER}
        assert "sk-test" not in repr(events)
