"""Many CLI processes and two workers on one SQLite house at once."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from arbe_core.models import EntryKind
from arbe_entry import open_house
from tests.helpers import ARBE_SCRIPT, SUBPROCESS_TIMEOUT_S, arbe_env, invoke
from tests.security.kit import start_arbe, wait_for

ROTATIONS = 6
BINDINGS = 5
NEW_THREADS = 4
POSTS = 5
LOCKED = "database is locked"


def spawn(args: tuple[str, ...], stdin: Path) -> subprocess.Popen[bytes]:
    """Start the console script with `stdin` as its input file."""
    with stdin.open("rb") as source:
        return subprocess.Popen(
            [str(ARBE_SCRIPT), *args],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=arbe_env(),
        )


@pytest.mark.slow
def test_cli_and_workers_share_house(home: Path, repo: Path, tmp_path: Path) -> None:
    """20 mixed writers and two workers: no lost update, no "database is locked"."""
    invoke("secret", "set", "COUNTER", "--shared", input="sk-test-0")
    invoke("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    threads = [
        invoke("thread", "create", "--model", "builtin/shell").stdout.strip()
        for _ in range(3)
    ]
    workers = [
        start_arbe("worker", "--lease", "5", log=tmp_path / f"worker{n}.log")
        for n in range(2)
    ]
    commands = (
        [(("secret", "set", "COUNTER"), f"sk-test-{n + 1}") for n in range(ROTATIONS)]
        + [
            (("env", "bind-secret", "demo", f"BOUND_{n}", "--optional"), "")
            for n in range(BINDINGS)
        ]
        + [
            (("thread", "create", "--env", "demo", "--model", "builtin/shell"), "")
            for _ in range(NEW_THREADS)
        ]
        + [
            (
                ("thread", "entries", "create", threads[n % 3], f"echo post-{n}"),
                "",
            )
            for n in range(POSTS)
        ]
    )
    assert len(commands) == 20

    inputs = []
    for number, (_, text) in enumerate(commands):
        inputs.append(tmp_path / f"stdin{number}")
        inputs[-1].write_text(text)
    extra = {True: "--no-start-worker", False: "--json"}
    running = [
        spawn((*args, extra["entries" in args]), stdin)
        for (args, _), stdin in zip(commands, inputs, strict=True)
    ]
    outcomes = [
        (p.args, *p.communicate(timeout=SUBPROCESS_TIMEOUT_S), p.returncode)
        for p in running
    ]
    opened = open_house(home=home)
    wait_for(
        lambda: all(
            d is not None and not d.state.live
            for d in (opened.threads.dispatch(t) for t in threads)
        )
    )
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        worker.wait(SUBPROCESS_TIMEOUT_S)

    for args, _, stderr, code in outcomes:
        assert code == 0, (args, stderr)
        assert LOCKED not in stderr.decode()
    for n in range(2):
        assert LOCKED not in (tmp_path / f"worker{n}.log").read_text()
    counter = opened.secrets.resolve("COUNTER")
    assert counter is not None
    assert counter[1].version == 1 + ROTATIONS
    assert counter[0] in {f"sk-test-{n + 1}" for n in range(ROTATIONS)}
    bound = {b.name for b in opened.environments.get("demo").bindings}
    assert bound == {f"BOUND_{n}" for n in range(BINDINGS)}
    assert len(opened.threads.list()) == 3 + NEW_THREADS
    posts = []
    for thread_id in threads:
        entries = opened.threads.entries(thread_id, limit=10_000)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        posts += [e.body for e in entries if e.author.startswith("user:")]
        dispatch = opened.threads.dispatch(thread_id)
        assert dispatch is not None
        assert dispatch.state.value == "completed", dispatch.error
        assert entries[-1].kind is EntryKind.STATUS
    assert sorted(posts) == sorted(f"echo post-{n}" for n in range(POSTS))
