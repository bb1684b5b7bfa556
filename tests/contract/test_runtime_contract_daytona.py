"""The runtime contract suite for `daytona`, with the real SDK on the fake API."""

from __future__ import annotations

from pathlib import Path

import pytest

from arbe_adapters.runtimes.daytona._client import RetryPolicy, Timeouts
from arbe_adapters.runtimes.daytona._runtime import DaytonaRuntime
from arbe_adapters.testing import RuntimeContract
from arbe_core.runtime import RuntimeContext
from tests.fakes.daytona import FakeDaytona

#: The clone URL the sandboxes see; the fake maps it to the local repository.
GITHUB_REPO = "https://github.com/arbe-contract/repo"

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, total_cap=2.0)
FAST_TIMEOUTS = Timeouts(kill_after=1.0, grace=5.0)


def make_runtime(fake: FakeDaytona, house_id: str, tmp_path: Path) -> DaytonaRuntime:
    """Build a runtime for `house_id` that talks to the fake."""
    settings = {"DAYTONA_API_URL": fake.api_url}
    context = RuntimeContext(
        house_id=house_id,
        house_name=house_id.removeprefix("hse_"),
        state_dir=str(tmp_path / house_id),
        config=settings.get,
        credential=fake.api_key,
    )
    return DaytonaRuntime(context, retry=FAST_RETRY, timeouts=FAST_TIMEOUTS)


class TestDaytonaRuntimeContract(RuntimeContract):
    """The contract, with every sandbox cloning a github URL served locally."""

    @pytest.fixture
    def contract_repo(self, contract_repo: str, fake_daytona: FakeDaytona) -> str:
        fake_daytona.map_url(GITHUB_REPO, contract_repo)
        return GITHUB_REPO

    @pytest.fixture
    def runtime(
        self, fake_daytona: FakeDaytona, contract_house_id: str, tmp_path: Path
    ) -> DaytonaRuntime:
        fake_daytona.create_polls = 1
        return make_runtime(fake_daytona, contract_house_id, tmp_path)

    @pytest.fixture
    def contract_other_runtime(
        self, fake_daytona: FakeDaytona, tmp_path: Path
    ) -> DaytonaRuntime:
        return make_runtime(fake_daytona, "hse_other", tmp_path)
