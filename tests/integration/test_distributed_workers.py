"""Several `arbe worker` processes share one house, and each dispatch runs once.

The exactly-once tests queue 200 `builtin/shell` threads on the local runtime.
Each thread's command appends its thread id to one log file outside the
sandbox, so the log counts runs from the sandbox side. In the middle of the
queue, as many threads as the workers have slots in total wait on a gate file
after they append. Once all of them have appended, every worker runs exactly
two, because none runs more than its concurrency of 2. The test then SIGKILLs
one worker and opens the gate. The two commands the killed worker was running
must get an `interrupted` result and must not run again after its lease
expires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from arbe_adapters.storage.postgres import PostgresStorage
from arbe_core.dispatch.runner import INTERRUPTED
from arbe_core.errors import ConcurrentUpdate
from arbe_core.models import (
    DEFAULT_AGENT,
    DEFAULT_MODEL,
    Agent,
    Dispatch,
    DispatchState,
    Entry,
)
from arbe_core.ports import Storage
from arbe_entry.app import Arbe, open_storage, worker_pool_size
from arbe_entry.config import Settings
from tests.helpers import ARBE_SCRIPT, arbe_env, invoke

#: A made-up master key shared by every process of one house.
MASTER_KEY = base64.b64encode(bytes(range(32))).decode("ascii")
THREADS = 200
#: Index of the first thread whose command waits on the gate file.
GATE_AT = 100
#: Seconds a claim lasts without renewal. It is short, so a dead worker's
#: dispatches move to the others within the test.
LEASE_S = 3
#: Dispatches each worker runs at the same time.
CONCURRENCY = 2
#: Seconds a test waits for one stage before it fails.
STAGE_TIMEOUT_S = 90
#: Seconds a worker has to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 15
#: The entry kinds of a thread whose one dispatch completed: the user's
#: command, the bot's call, its result, the bot's reply and the status.
COMPLETED_KINDS = ["message", "tool_call", "tool_result", "message", "status"]


@pytest.fixture(autouse=True)
def no_process_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep model keys and URLs of the developer's shell out of the workers."""
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)


@attrs.frozen
class SharedHouse:
    """One house as every process of the test opens it."""

    home: Path
    database_url: str | None
    log: Path
    gate: Path

    def settings(self) -> Settings:
        return Settings(
            home=self.home,
            database_url=self.database_url,
            master_key=MASTER_KEY,
            plugins="",
        )

    def worker_env(self) -> dict[str, str]:
        env = {"ARBE_HOME": str(self.home), "ARBE_MASTER_KEY": MASTER_KEY}
        if self.database_url is not None:
            env["ARBE_DATABASE_URL"] = self.database_url
        return arbe_env(env)


@pytest.fixture
def postgres_house(postgres_url: str, arbe_home: Path, tmp_path: Path) -> SharedHouse:
    return SharedHouse(
        arbe_home, postgres_url, tmp_path / "runs.log", tmp_path / "gate"
    )


@pytest.fixture
def sqlite_house(arbe_home: Path, tmp_path: Path) -> SharedHouse:
    return SharedHouse(arbe_home, None, tmp_path / "runs.log", tmp_path / "gate")


@contextlib.contextmanager
def opened(house: SharedHouse) -> Iterator[Arbe]:
    """Open the house in this process and close its storage afterwards."""
    arbe = Arbe(house.settings())
    try:
        yield arbe
    finally:
        arbe.close()


def command_for(house: SharedHouse, thread_id: str, gated: bool) -> str:
    """Return a command that logs `thread_id`, then prints `ran THREAD_ID`.

    A gated command waits for the gate file in between. It gives up after
    60 s, so a failed test leaves no command behind for long.
    """
    log, gate = shlex.quote(str(house.log)), shlex.quote(str(house.gate))
    parts = [f"echo {thread_id} >> {log}"]
    if gated:
        parts.append(
            f"for i in $(seq 1200); do [ -e {gate} ] && break; sleep 0.05; done"
        )
    parts.append(f"echo ran {thread_id}")
    return " && ".join(parts)


def queue_threads(
    arbe: Arbe, house: SharedHouse, count: int, gated: range = range(0)
) -> list[str]:
    """Create environment `demo` and `count` threads with a queued dispatch each.

    Returns:
        The thread ids in queue order.
    """
    arbe.environments.create("demo", runtime="local")
    thread_ids = []
    for index in range(count):
        thread = arbe.threads.create(model="builtin/shell")
        arbe.threads.post(thread.id, command_for(house, thread.id, index in gated))
        thread_ids.append(thread.id)
    return thread_ids


def start_workers(
    house: SharedHouse, count: int, *options: str
) -> list[subprocess.Popen[bytes]]:
    """Start `count` `arbe -v worker` processes, each logging to its own file."""
    workers = []
    for index in range(count):
        log = (house.log.parent / f"worker-{index}.log").open("wb")
        with log:
            workers.append(
                subprocess.Popen(
                    [str(ARBE_SCRIPT), "-v", "worker", *options],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=house.worker_env(),
                )
            )
    return workers


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """Stop every worker with SIGTERM, and SIGKILL any that does not exit."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def worker_logs(house: SharedHouse) -> str:
    """Return the tail of every worker's log, for assertion messages."""
    tails = []
    for path in sorted(house.log.parent.glob("worker-*.log")):
        lines = path.read_text("utf-8", "replace").splitlines()
        tails.append(f"--- {path.name}\n" + "\n".join(lines[-20:]))
    return "\n".join(tails)


def owner_of(worker: subprocess.Popen[bytes]) -> str:
    """Return the lease owner name that `arbe worker` uses for this process."""
    return f"wrk_{socket.gethostname()}_{worker.pid}"


def logged_runs(house: SharedHouse) -> list[str]:
    return house.log.read_text().split() if house.log.exists() else []


def wait_until(ready: Callable[[], bool], description: str, house: SharedHouse) -> None:
    """Poll `ready` until it returns true, or fail with the workers' logs."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {description}\n{worker_logs(house)}")
        time.sleep(0.2)


def latest_dispatches(arbe: Arbe, thread_ids: list[str]) -> dict[str, Dispatch]:
    found = {}
    for thread_id in thread_ids:
        dispatch = arbe.threads.dispatch(thread_id)
        assert dispatch is not None, f"thread {thread_id} has no dispatch"
        found[thread_id] = dispatch
    return found


def all_terminal(arbe: Arbe, thread_ids: list[str]) -> bool:
    return not any(d.state.live for d in latest_dispatches(arbe, thread_ids).values())


def kill_one_mid_run(
    arbe: Arbe,
    house: SharedHouse,
    workers: list[subprocess.Popen[bytes]],
    gated: list[str],
) -> set[str]:
    """SIGKILL one worker while it runs two gated commands, then open the gate.

    Returns:
        The threads whose commands the killed worker was running.
    """
    wait_until(
        lambda: set(gated) <= set(logged_runs(house)),
        "every gated command has started",
        house,
    )
    victim = workers[1]
    dispatches = latest_dispatches(arbe, gated)
    victim_threads = {
        t for t, d in dispatches.items() if d.lease_owner == owner_of(victim)
    }
    # No worker runs more than CONCURRENCY dispatches, and the gated ones fill
    # every slot, so each worker runs exactly CONCURRENCY of them.
    assert len(victim_threads) == CONCURRENCY, worker_logs(house)

    victim.kill()
    victim.wait()
    house.gate.touch()

    return victim_threads


def check_every_dispatch_ran_once(
    arbe: Arbe, house: SharedHouse, thread_ids: list[str], interrupted: set[str]
) -> None:
    """Check the log, the entries and the dispatches of every thread.

    The threads in `interrupted` logged their run before their worker died,
    so each of them is in the log once and has one `interrupted` result.
    Every other thread completed with its command's output.
    """
    runs = Counter(logged_runs(house))
    dispatches = latest_dispatches(arbe, thread_ids)
    entries: dict[str, list[Entry]] = {t: arbe.threads.entries(t) for t in thread_ids}
    kinds = {t: [e.kind.value for e in entries[t]] for t in thread_ids}
    results = {t: entries[t][2] for t in thread_ids if len(entries[t]) > 2}
    marked = {t for t, r in results.items() if r.data.get("interrupted")}
    finished = set(thread_ids) - interrupted

    assert sum(runs.values()) == len(thread_ids)
    assert {t: n for t, n in runs.items() if n != 1} == {}
    assert set(runs) == set(thread_ids)
    assert {t: k for t, k in kinds.items() if k != COMPLETED_KINDS} == {}
    assert {
        t: (d.state, d.error)
        for t, d in dispatches.items()
        if d.state is not DispatchState.COMPLETED
    } == {}
    assert marked == interrupted
    assert {results[t].body for t in interrupted} == {INTERRUPTED}
    assert {t: dispatches[t].attempts for t in interrupted} == dict.fromkeys(
        interrupted, 2
    )
    assert {t for t in finished if f"ran {t}" not in results[t].body} == set()
    assert {t for t in finished if results[t].data.get("exit_code") != 0} == set()
    assert {t for t in finished if dispatches[t].attempts != 1} == set()


def run_with_one_killed(house: SharedHouse, worker_count: int) -> None:
    """Run `THREADS` dispatches on `worker_count` workers and kill one mid-run."""
    gate_count = worker_count * CONCURRENCY
    gated = range(GATE_AT, GATE_AT + gate_count)
    with opened(house) as arbe:
        thread_ids = queue_threads(arbe, house, THREADS, gated)
        workers = start_workers(
            house,
            worker_count,
            "--concurrency",
            str(CONCURRENCY),
            "--lease",
            str(LEASE_S),
        )
        try:
            interrupted = kill_one_mid_run(
                arbe, house, workers, [thread_ids[i] for i in gated]
            )
            wait_until(
                lambda: all_terminal(arbe, thread_ids),
                "every dispatch has ended",
                house,
            )
        finally:
            house.gate.touch()
            stop_workers(workers)

        check_every_dispatch_ran_once(arbe, house, thread_ids, interrupted)
    assert [w.returncode for w in workers] == [
        -signal.SIGKILL if i == 1 else 0 for i in range(worker_count)
    ]


@pytest.mark.slow
@pytest.mark.postgres
class TestDistributedPostgres:
    def test_four_workers_run_each_dispatch_once(
        self, postgres_house: SharedHouse
    ) -> None:
        """Four PostgreSQL workers, one SIGKILLed mid-run, lose and repeat nothing."""
        run_with_one_killed(postgres_house, worker_count=4)

    def test_worker_concurrency_16_pool_suffices(
        self, postgres_house: SharedHouse
    ) -> None:
        """A worker running 16 dispatches at once gets a connection for each."""
        house = postgres_house
        with opened(house) as arbe:
            thread_ids = queue_threads(arbe, house, 32, gated=range(32))
            (worker,) = start_workers(house, 1, "--once", "--concurrency", "16")
            try:
                # All 16 dispatch threads wait on the gate, then end together.
                wait_until(
                    lambda: len(logged_runs(house)) >= 16,
                    "16 commands run at once",
                    house,
                )
                house.gate.touch()
                worker.wait(timeout=STAGE_TIMEOUT_S)
            finally:
                house.gate.touch()
                stop_workers([worker])
            dispatches = latest_dispatches(arbe, thread_ids)

        log = worker_logs(house)
        states = Counter(d.state for d in dispatches.values())
        assert worker.returncode == 0, log
        assert states == {DispatchState.COMPLETED: 32}, log
        assert "No connection to PostgreSQL" not in log
        assert "Traceback" not in log

    def test_worker_pool_serves_all_threads(
        self, postgres_url: str, arbe_home: Path
    ) -> None:
        """A concurrency-16 worker's pool serves all of its threads at once."""
        # 16 dispatch threads, 16 lease heartbeats and the claim loop.
        size = worker_pool_size(16)
        settings = Settings(home=arbe_home, database_url=postgres_url, pool_size=size)
        storage = open_storage(settings)

        try:
            with contextlib.ExitStack() as stack:
                units = [
                    stack.enter_context(storage.unit_of_work(write=False))
                    for _ in range(size)
                ]
                listed = [unit.houses.list() for unit in units]
        finally:
            storage.close()

        assert size == 33
        assert listed == [[]] * size

    def test_default_bot_race_creates_one(
        self, postgres_url: str, arbe_home: Path
    ) -> None:
        """Eight workers creating a new house's default bot at once all get it."""
        settings = Settings(home=arbe_home, master_key=MASTER_KEY, plugins="")
        houses = [
            Arbe(settings, storage=PostgresStorage(postgres_url)) for _ in range(8)
        ]
        barrier = threading.Barrier(len(houses))
        found: list[Agent | ConcurrentUpdate | None] = [None] * len(houses)

        def ensure(index: int) -> None:
            barrier.wait(timeout=STAGE_TIMEOUT_S)
            try:
                found[index] = houses[index].agents.ensure_default()
            except ConcurrentUpdate as exc:
                found[index] = exc

        try:
            assert len({arbe.house.id for arbe in houses}) == 1
            runners = [threading.Thread(target=ensure, args=(i,)) for i in range(8)]
            for runner in runners:
                runner.start()
            for runner in runners:
                runner.join(timeout=STAGE_TIMEOUT_S)
            stored = houses[0].agents.list()
        finally:
            for arbe in houses:
                arbe.close()

        agents = [f for f in found if isinstance(f, Agent)]
        assert found == agents
        assert {(a.name, a.model) for a in agents} == {(DEFAULT_AGENT, DEFAULT_MODEL)}
        assert [(a.name, a.model) for a in stored] == [(DEFAULT_AGENT, DEFAULT_MODEL)]


@pytest.mark.slow
class TestDistributedSqlite:
    def test_two_workers_run_each_dispatch_once(
        self, sqlite_house: SharedHouse
    ) -> None:
        """Two SQLite workers, one SIGKILLed mid-run, lose and repeat nothing."""
        run_with_one_killed(sqlite_house, worker_count=2)


def test_worker_command_sizes_pool(
    arbe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`arbe worker --concurrency 16` sizes its pool for 16 dispatches."""
    opened_with: list[int | None] = []

    def record_pool_size(settings: Settings) -> Storage:
        opened_with.append(settings.pool_size)
        return open_storage(settings)

    monkeypatch.setattr("arbe_entry.app.open_storage", record_pool_size)
    # The worker command installs its own SIGTERM and SIGINT handlers.
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = invoke("worker", "--once", "--concurrency", "16", "--json")
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["dispatches"] == 0
    assert opened_with == [worker_pool_size(16)]
