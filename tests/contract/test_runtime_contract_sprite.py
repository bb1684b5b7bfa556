"""The runtime contract suite on the sprite runtime, against the fake Sprites API."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from arbe_adapters.runtimes.sprite._runtime import SpriteRuntime
from arbe_adapters.testing import RuntimeContract
from arbe_adapters.testing.runtime_contract import CONTRACT_HOUSE_ID
from arbe_core.runtime import RuntimeContext
from tests.fakes.sprites import FakeSprites


class TestSpriteRuntimeContract(RuntimeContract):
    # GRACE: the fake kills the process group as soon as the websocket closes,
    # and sprites-py returns at the timeout.
    timeout_grace_s = 3.0

    @pytest.fixture
    def contract_context(
        self, fake_sprites: FakeSprites, tmp_path: Path
    ) -> RuntimeContext:
        """Return a context whose settings and token point at the fake."""
        return RuntimeContext(
            house_id=CONTRACT_HOUSE_ID,
            house_name="contract",
            state_dir=str(tmp_path / "runtime-state"),
            config=fake_sprites.env().get,
            credential=fake_sprites.token,
        )

    @pytest.fixture
    def runtime(self, contract_context: RuntimeContext) -> SpriteRuntime:
        return SpriteRuntime(contract_context)

    @pytest.fixture
    def contract_other_runtime(self, contract_context: RuntimeContext) -> SpriteRuntime:
        """Another house's runtime on the same fake account."""
        other = attrs.evolve(
            contract_context, house_id="hse_contract_other", house_name="other"
        )
        return SpriteRuntime(other)
