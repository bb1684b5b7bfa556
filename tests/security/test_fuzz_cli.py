"""The CLI under arbitrary arguments and stdin: a result or one sentence, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arbe_entry import open_house
from tests.fakes.daytona import FakeDaytona
from tests.fakes.sprites import FakeSprites
from tests.helpers import invoke, run_arbe

#: Each command path, its positional arguments by kind, and its options.
#: `worker`, `quickstart` and a following `entries read` run until stopped,
#: and `--home` would leave the test's home, so none of them is generated.
COMMANDS: dict[tuple[str, ...], tuple[list[str], list[str]]] = {
    ("secret", "list"): ([], []),
    ("secret", "view"): (["secret"], []),
    ("secret", "set"): (["secret"], ["--audience", "--shared", "--private"]),
    ("secret", "delete"): (["secret"], []),
    ("secret", "history"): (["secret"], []),
    ("secret", "rollback"): (["secret", "number"], []),
    ("env", "list"): ([], []),
    ("env", "view"): (["env"], []),
    ("env", "create"): (
        ["env"],
        [
            "--runtime",
            "--repo",
            "--secret",
            "--optional-secret",
            "--sandbox",
            "--auto-stop",
        ],
    ),
    ("env", "bind-secret"): (["env", "secret"], ["--optional"]),
    ("env", "unbind-secret"): (["env", "secret"], []),
    ("env", "delete"): (["env"], ["--destroy-sandbox"]),
    ("env", "use"): (["env"], []),
    ("env", "diagnose"): (["env"], []),
    ("sandbox",): (["sandbox"], ["--runtime"]),
    ("sandbox", "list"): ([], ["--runtime"]),
    ("sandbox", "stop"): (["sandbox"], ["--runtime"]),
    ("sandbox", "start"): (["sandbox"], ["--runtime"]),
    ("sandbox", "destroy"): (["sandbox"], ["--runtime"]),
    ("sandbox", "gc"): ([], ["--runtime", "--older-than", "--yes"]),
    ("sandbox", "ping"): (["sandbox"], []),
    ("sandbox", "env"): (["env"], []),
    ("sandbox", "diagnose"): ([], ["--runtime"]),
    ("agent", "list"): ([], []),
    ("agent", "create"): (["agent"], ["--model"]),
    ("agent", "view"): (["agent"], []),
    ("agent", "delete"): (["agent"], []),
    ("thread", "create"): (["text"], ["--env", "--model"]),
    ("thread", "list"): ([], ["--limit"]),
    ("thread", "view"): (["thread"], []),
    ("thread", "cancel"): (["thread"], []),
    ("thread", "entries", "create"): (["thread", "text"], []),
    ("thread", "entries", "read"): (["thread"], ["--after"]),
    ("house", "create"): (["house"], []),
    ("house", "list"): ([], []),
    ("house", "use"): (["house"], []),
    ("house", "view"): (["house"], []),
    ("audit", "list"): ([], ["--secret", "--env", "--thread"]),
    ("plugins",): ([], []),
}

#: Text of any kind, without NUL (a real argument list cannot hold one).
TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=12,
)
#: Path-like and otherwise hostile strings that every kind of value gets.
HOSTILE = [
    "",
    "-",
    "../x",
    "../../etc/passwd",
    "/etc/passwd",
    "~",
    "$HOME",
    "a" * 64,
    "A" * 129,
    "\u202e",
    "\U0001f642",
    "line\nbreak",
    "'; rm -rf / #",
    "\udcff",
]
#: Values by kind. `THREAD`, `SANDBOX` and `REPO` are replaced by real ones.
VALUES = {
    "secret": ["TOKEN", "OTHER", "SPRITES_TOKEN", "DAYTONA_API_KEY", "token"],
    "env": ["demo", "other", "x"],
    "sandbox": ["SANDBOX", "lsb_0000000000000000", "default"],
    "thread": ["THREAD", "thr_x"],
    "house": ["default", "second", "Default"],
    "agent": ["arbe", "helper"],
    "number": ["1", "2", "0", "-1", "99999999999999999999", "1e309", "nan"],
    "text": ["ls", "-", "@helper echo hi", "issue-42"],
    "--audience": ["environment", "capability"],
    "--runtime": ["local", "sprite", "daytona", "nope"],
    "--repo": ["REPO", "file:///nonexistent", "http://127.0.0.1:9/x"],
    "--sandbox": ["SANDBOX", "fresh", "lsb_0000000000000000"],
    "--auto-stop": ["0", "15", "-1", "99999999999999999999"],
    "--model": ["builtin/shell", "openrouter/x", "builtin/nope", "x", "/"],
    "--limit": ["1", "0", "10001"],
    "--after": ["0", "-1", "3"],
    "--older-than": ["1h", "0s", "99999999999999999999d", "1x", "\u00b2d"],
}
VALUES["--secret"] = VALUES["--optional-secret"] = VALUES["secret"]
VALUES["--env"] = VALUES["env"]
VALUES["--thread"] = VALUES["thread"]
FLAGS = {"--shared", "--private", "--optional", "--destroy-sandbox", "--yes"}
#: Junk that no command expects, mixed in now and then.
JUNK = ["--json", "--help", "--nope", "-x", "--", "extra", "--version"]


def value(kind: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(VALUES[kind]), st.sampled_from(HOSTILE), TEXT)


@st.composite
def command_line(draw: st.DrawFn) -> list[str]:
    """Draw a command, its arguments mostly of the right kind, and some junk."""
    path = draw(st.sampled_from(sorted(COMMANDS)))
    positional, options = COMMANDS[path]
    args = [*path]
    for kind in positional:
        if draw(st.integers(0, 9)) > 0:
            args.append(draw(value(kind)))
    chosen = draw(st.lists(st.sampled_from(options), max_size=3)) if options else []
    for option in chosen:
        args.append(option)
        if option not in FLAGS:
            args.append(draw(value(option)))
    if draw(st.booleans()):
        args.append("--json")
    if draw(st.integers(0, 4)) == 0:
        junk = draw(st.one_of(st.sampled_from(JUNK + HOSTILE), TEXT))
        args.insert(draw(st.integers(0, len(args))), junk)
    if draw(st.integers(0, 9)) == 0:
        args[:0] = ["--house", draw(value("house"))]
    return safe(args)


STDIN = st.one_of(st.binary(max_size=40), TEXT.map(str.encode), st.just(b""))


def safe(args: list[str]) -> list[str]:
    """Keep commands that would wait forever from waiting: no worker, no follow."""
    if "entries" in args and "create" in args:
        args.append("--no-start-worker")
    if "entries" in args and "read" in args:
        args.append("--no-follow")
    return args


def real_ids(args: list[str], home: Path, repo: Path) -> list[str]:
    """Replace the placeholders by the home's thread, sandbox and repo."""
    opened = open_house(home=home)
    try:
        threads = opened.threads.list()
        envs = opened.environments.list()
    finally:
        opened.close()
    ids = {
        "THREAD": threads[-1].id if threads else "thr_x",
        "SANDBOX": (envs[0].sandbox_id or "x") if envs else "x",
        "REPO": str(repo),
    }
    return [ids.get(a, a) for a in args]


def house_state(home: Path) -> dict[str, Any]:
    """Return everything a rejected command must leave as it was."""
    opened = open_house(home=home)
    try:
        houses = opened.houses.list()
        return {
            "default": opened.houses.default_name(),
            "houses": [h.name for h in houses],
            "secrets": [
                (s.name, s.version, s.shared, s.audience.value, s.updated_at)
                for s in opened.secrets.list()
            ],
            "envs": [repr(e) for e in opened.environments.list()],
            "active": opened.environments.active(),
            "threads": [repr(t) for t in opened.threads.list(10_000)],
            "dispatches": [
                repr(opened.threads.dispatch(t.id)) for t in opened.threads.list(10_000)
            ],
            "sandboxes": [s.id for s in opened.runtimes.get("local").list()],
        }
    finally:
        opened.close()


def check_outcome(args: list[str], code: int, stdout: str, stderr: str) -> None:
    context = f"arbe {args!r} exited {code}; stderr: {stderr!r}"
    assert "Traceback" not in stderr, context
    assert "internal error" not in stderr, context
    assert code in (0, 1, 2), context
    if code != 0:
        # A report that failed checks (`diagnose`) is a result on stdout.
        assert stderr.strip() or stdout.strip(), context
    # Progress and warnings may come first, but the error is one line.
    errors = [s for s in stderr.splitlines() if s.lower().startswith("error:")]
    assert len(errors) <= 1, context
    if "--json" in args and code == 1 and stdout.strip():
        json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def fuzz_home(
    home: Path,
    repo: Path,
    fake_sprites: FakeSprites,
    fake_daytona: FakeDaytona,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """A home with a secret, a local environment and a thread to aim at."""
    monkeypatch.setenv("SPRITES_API_URL", fake_sprites.base_url)
    monkeypatch.setenv("DAYTONA_API_URL", fake_daytona.api_url)
    invoke("secret", "set", "TOKEN", "--shared", input="sk-test-123")
    invoke("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    invoke("thread", "create", "--env", "demo", "--model", "builtin/shell")
    return home


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_cli_fuzzed_in_process(
    fuzz_home: Path, repo: Path, data: st.DataObject
) -> None:
    """Any arguments and stdin give a result or one error line, and a rejection changes nothing."""
    args = real_ids(data.draw(command_line(), label="args"), fuzz_home, repo)
    stdin = data.draw(STDIN, label="stdin")
    before = house_state(fuzz_home)

    result = invoke(*args, input=stdin)

    check_outcome(args, result.exit_code, result.stdout, result.stderr)
    if result.exit_code != 0:
        assert house_state(fuzz_home) == before, args


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_cli_fuzzed_as_subprocess(
    fuzz_home: Path, repo: Path, data: st.DataObject
) -> None:
    """The console script, fed undecodable argument bytes too, never prints a traceback."""
    args = real_ids(data.draw(command_line(), label="args"), fuzz_home, repo)
    stdin = data.draw(STDIN, label="stdin")

    result = run_arbe(*args, input=stdin)

    check_outcome(args, result.returncode, result.stdout, result.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["thread", "entries", "create", "THREAD", "\udcff"],
        ["thread", "create", "\udcff\udcfe"],
        ["env", "create", "x", "--runtime", "local", "--repo", "/tmp/\udcff"],
        ["sandbox", "gc", "--runtime", "local", "--older-than", "9" * 30 + "d"],
        ["env", "create", "x", "--runtime", "local", "--auto-stop", "9" * 30],
    ],
)
def test_cli_edge_inputs_give_one_sentence(fuzz_home: Path, args: list[str]) -> None:
    """Inputs the fuzzer found once: undecodable bytes and numbers past 64 bits."""
    opened = open_house(home=fuzz_home)
    thread_id = opened.threads.list()[0].id
    opened.close()
    args = [thread_id if a == "THREAD" else a for a in args]
    before = house_state(fuzz_home)

    result = invoke(*args)

    check_outcome(args, result.exit_code, result.stdout, result.stderr)
    assert result.exit_code in (1, 2)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert house_state(fuzz_home) == before


def test_entries_from_undecodable_stdin_rejected(fuzz_home: Path) -> None:
    opened = open_house(home=fuzz_home)
    thread_id = opened.threads.list()[0].id
    opened.close()

    result = run_arbe(
        "thread",
        "entries",
        "create",
        thread_id,
        "-",
        "--no-start-worker",
        input=b"\xff\xfe ls",
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert "UTF-8" in result.stderr
