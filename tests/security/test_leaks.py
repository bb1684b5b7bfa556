"""Secret values never leave their sealed store except into a sandbox's environment.

Each property is checked over values that are hard to redact. Some have
several lines, regular-expression metacharacters or any Unicode, one is the
prefix of another, and a command prints one in two pieces or past a runtime's
output cap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from arbe_adapters.runtimes.local._runtime import LocalRuntime
from arbe_core.dispatch.redact import Redactor, cut_middle
from arbe_core.dispatch.tools import DELEGATE_TASK, RUN_COMMAND
from arbe_core.runtime import RuntimeContext, cap_output
from arbe_core.services.agents import DEFAULT_INSTRUCTIONS
from arbe_entry import Arbe
from tests.fakes.openrouter import (
    FakeOpenRouter,
    call,
    text_reply,
    tool_call_reply,
)
from tests.helpers import invoke, run_arbe
from tests.security.kit import Overrides, dispatch, open_with, start_arbe, wait_for

#: Output cap of the local runtime in the cut tests, small enough that the
#: runtime's omission marker lands inside what the dispatch keeps.
SMALL_CAP = 512
METACHARACTERS = ".^$*+?{}[]\\|()"
#: Characters of a process environment value: no NUL, no lone surrogate.
VALUE_CHARS = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")

plain = st.text(VALUE_CHARS, min_size=6, max_size=24)
multi_line = st.lists(st.text(VALUE_CHARS, min_size=4, max_size=12), min_size=2).map(
    "\n".join
)
metachar = st.text(st.sampled_from(METACHARACTERS + "ab"), min_size=6, max_size=16)
unicode_heavy = st.text(
    st.characters(min_codepoint=0x80, blacklist_categories=["Cs"]),
    min_size=6,
    max_size=16,
)
SECRET_VALUES = st.one_of(plain, multi_line, metachar, unicode_heavy)
TOOLS = (RUN_COMMAND, DELEGATE_TASK)
#: The marker a runtime puts where it cut output, as `cap_output` writes it.
OMISSION = re.compile(r"\n\[\.\.\. \d+ bytes omitted \.\.\.\]\n")


#: Prints the value whole, to stderr, in two writes 200 ms apart, and past a
#: small output cap on both sides of the omission marker.
LEAKY_COMMAND = (
    'printf "%s\\n" "$TOKEN"; printf "%s\\n" "$TOKEN" >&2; '
    'v="$TOKEN"; h=$(( ${#v} / 2 )); printf "%s" "${v:0:h}"; sleep 0.2; '
    'printf "%s\\n" "${v:h}"; '
    f"head -c {SMALL_CAP // 2 - 3} /dev/zero | tr '\\0' a; "
    'printf "%s" "$TOKEN"; '
    f"head -c {SMALL_CAP * 2} /dev/zero | tr '\\0' b; "
    'printf "%s" "$TOKEN"; '
    f"head -c {SMALL_CAP // 2 - 3} /dev/zero | tr '\\0' c"
)


#: Characters of ids, times and names that arbe prints by itself.
ORDINARY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-:.+T \n")


def distinctive(value: str) -> bool:
    """Tell whether `value` is unlike anything arbe prints by itself.

    Each line of four or more characters is redacted on its own, so each such
    line must be distinctive too. A value such as `code`, `000000` or `TOKEN`
    appears in output that never saw the secret, so no property about it
    could fail or pass for the right reason.
    """
    lines = [line.strip() for line in value.splitlines()]
    needles = [value.strip(), *(line for line in lines if len(line) >= 4)]
    background = "\n".join(
        [LEAKY_COMMAND, DEFAULT_INSTRUCTIONS, "***TOKEN*** OPENROUTER_API_KEY"]
        + [json.dumps(tool.parameters) + tool.description for tool in TOOLS]
    )
    return len(value.strip()) >= 6 and all(
        len(set(needle)) >= 3
        and not set(needle) <= ORDINARY_CHARS
        and needle not in background
        for needle in needles
    )


class TestRedactor:
    @settings(max_examples=300, deadline=None)
    @given(
        value=SECRET_VALUES,
        before=st.text(max_size=30),
        after=st.text(max_size=30),
    )
    def test_redactor_hides_value_anywhere(
        self, value: str, before: str, after: str
    ) -> None:
        assume(distinctive(value))

        redacted = Redactor({"TOKEN": value})(f"{before}{value}{after}{value}")

        assert value not in redacted
        assert "***TOKEN***" in redacted

    @settings(max_examples=200, deadline=None)
    @given(value=SECRET_VALUES, extra=st.text(VALUE_CHARS, min_size=1, max_size=8))
    def test_redactor_hides_prefix_of_other_value(self, value: str, extra: str) -> None:
        """A value that starts another is redacted without leaving the longer one's tail."""
        assume(distinctive(value))
        longer = value + extra
        redactor = Redactor({"SHORT": value, "LONG": longer})

        redacted = redactor(f"a {longer} b {value} c")

        assert longer not in redacted
        assert value not in redacted
        assert "***LONG***" in redacted

    @settings(max_examples=300, deadline=None)
    @given(
        value=SECRET_VALUES,
        filler=st.integers(min_value=0, max_value=120),
        cap=st.integers(min_value=16, max_value=200),
    )
    def test_redactor_masks_value_cut_by_output_cap(
        self, value: str, filler: int, cap: int
    ) -> None:
        """A value cut in two by a runtime's cap leaves no piece beside the marker."""
        assume(distinctive(value))
        data = ("x" * filler + value + "y" * (cap + 10) + value).encode()
        text, omitted = cap_output(data, cap)
        assume(omitted)

        redacted = Redactor({"TOKEN": value})(text)

        assert value not in redacted
        assert not piece_beside_marker(value, redacted), redacted

    def test_redactor_masks_pieces_beside_cut_middle_marker(self) -> None:
        value = "sk-test-123-abcdef"
        text = "a" * 95 + value + "b" * 200 + value + "c" * 95

        redacted = Redactor({"TOKEN": value})(cut_middle(text, limit=200))

        assert "***TOKEN***\n[... " in redacted
        assert "...]\n***TOKEN***" in redacted
        assert "sk-t" not in redacted
        assert "cdef" not in redacted

    def test_redactor_leaves_output_without_value(self) -> None:
        text = "build ok\n[... 10 bytes omitted ...]\ntests ok"

        assert Redactor({"TOKEN": "sk-test-123"})(text) == text


# --- Through a whole dispatch ------------------------------------------------


def small_cap_local(context: RuntimeContext) -> LocalRuntime:
    return LocalRuntime(context, output_cap=SMALL_CAP)


@pytest.fixture
def small_cap_house(home: Path, repo: Path) -> Arbe:
    """A house whose local runtime caps output at `SMALL_CAP` bytes per stream."""
    opened = open_with(home, Overrides(runtimes={"local": (small_cap_local, None)}))
    opened.environments.create("demo", runtime="local", repos=[str(repo)])
    return opened


def strings_in(document: object) -> list[str]:
    """Return every string inside `document`, and inside JSON text found there.

    Tool-call arguments are JSON text, where a value may hide behind escapes
    such as `\\n` or `\\u00e9`, so they are decoded and searched as well.
    """
    if isinstance(document, str):
        found = [document]
        if document.lstrip().startswith(("{", "[")):
            try:
                found += strings_in(json.loads(document))
            except ValueError:
                pass
        return found
    if isinstance(document, dict):
        return [s for v in document.values() for s in strings_in(v)]
    if isinstance(document, list | tuple):
        return [s for v in document for s in strings_in(v)]
    return []


def piece_beside_marker(value: str, text: str) -> bool:
    """Tell whether a piece of `value` touches an omission marker in `text`.

    A replacement character may stand for the bytes of a character cut in two.
    """
    for match in OMISSION.finditer(text):
        head = text[: match.start()].rstrip("\ufffd")
        tail = text[match.end() :].lstrip("\ufffd")
        for size in range(1, len(value)):
            if not head.endswith("***TOKEN***") and head.endswith(value[:size]):
                return True
            if not tail.startswith("***TOKEN***") and tail.startswith(value[-size:]):
                return True
    return False


def leaked(value: str, document: object) -> bool:
    """Tell whether `value`, or a line of it long enough to redact, is in `document`."""
    lines = [line.strip() for line in value.splitlines()]
    needles = [value, *(line for line in lines if len(line) >= 4)]
    return any(n in text for text in strings_in(document) for n in needles)


class TestDispatchLeaks:
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(value=SECRET_VALUES)
    def test_dispatch_output_hides_value(
        self,
        small_cap_house: Arbe,
        caplog: pytest.LogCaptureFixture,
        value: str,
    ) -> None:
        assume(distinctive(value))
        opened = small_cap_house
        opened.secrets.set("TOKEN", value, shared=True)
        opened.environments.bind("demo", "TOKEN")
        caplog.clear()

        with caplog.at_level(logging.DEBUG):
            thread_id, entries, finished = dispatch(opened, LEAKY_COMMAND)
        printed = invoke("thread", "entries", "read", thread_id, "--json")
        audit = invoke("audit", "list", "--json")

        assert finished.state.value == "completed", finished.error
        result = next(e for e in entries if e.kind.value == "tool_result")
        assert "***TOKEN***" in result.body
        assert OMISSION.search(result.body)
        assert not piece_beside_marker(value, result.body), result.body
        for entry in entries:
            assert not leaked(value, [entry.body, entry.data]), entry
        records = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert not leaked(value, records)
        assert printed.exit_code == 0, printed.stderr
        assert not leaked(
            value, [json.loads(line) for line in printed.stdout.split("\n") if line]
        )
        assert not leaked(value, json.loads(audit.stdout))

    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(value=SECRET_VALUES, pieces=st.integers(min_value=2, max_value=7))
    def test_model_requests_never_carry_value(
        self,
        home: Path,
        repo: Path,
        fake_openrouter: FakeOpenRouter,
        monkeypatch: pytest.MonkeyPatch,
        value: str,
        pieces: int,
    ) -> None:
        """The model gets `***TOKEN***`, even when it wrote the value itself."""
        assume(distinctive(value))
        monkeypatch.setenv("OPENROUTER_BASE_URL", fake_openrouter.base_url)
        fake_openrouter.requests.clear()
        opened = open_with(home)
        opened.secrets.set("OPENROUTER_API_KEY", "sk-test-123", shared=True)
        opened.secrets.set("TOKEN", value, shared=True)
        if not opened.environments.list():
            opened.environments.create("demo", runtime="local", repos=[str(repo)])
            opened.environments.bind("demo", "TOKEN")
        # The second call quotes the value in JSON, escaped where JSON escapes
        # it, in a field that `run_command` rejects, so nothing runs it.
        quoting = call("run_command", {"command": "true", "note": value})
        fake_openrouter.enqueue(
            tool_call_reply(call("run_command", {"command": 'echo "$TOKEN"'})),
            tool_call_reply(quoting, fragments=pieces),
            text_reply(f"The token is {value}.", pieces=pieces),
        )

        _, entries, finished = dispatch(opened, "show the token", model=None)

        assert finished.state.value == "completed", finished.error
        assert len(fake_openrouter.requests) == 3
        for request in fake_openrouter.requests:
            assert not leaked(value, request.body)
        for entry in entries:
            assert not leaked(value, [entry.body, entry.data]), entry

    def test_command_error_quoting_value_is_redacted(
        self, small_cap_house: Arbe
    ) -> None:
        value = "sk-test-123-quoted"
        opened = small_cap_house
        opened.secrets.set("TOKEN", value, shared=True)
        opened.environments.bind("demo", "TOKEN")

        _, entries, finished = dispatch(
            opened, 'cd "/nonexistent/$TOKEN" && echo "$TOKEN"'
        )

        assert finished.state.value == "completed", finished.error
        assert all(value not in e.body for e in entries)
        assert any("***TOKEN***" in e.body for e in entries)


# --- Errors, command lines and file modes ------------------------------------


def test_secret_set_errors_never_quote_value(home: Path) -> None:
    value = "sk-test-" + "9" * (64 * 1024)

    too_big = invoke("secret", "set", "TOKEN", "--json", input=value)
    bad_name = invoke("secret", "set", "sk-test-123", "--json", input="sk-test-123")
    verbose = run_arbe("-v", "secret", "set", "TOKEN", input=value)

    assert too_big.exit_code == 1
    assert "sk-test-9999" not in too_big.stderr + too_big.stdout
    assert bad_name.exit_code == 1
    assert json.loads(bad_name.stdout)["error"] == "invalid_input"
    assert "Traceback" in verbose.stderr
    assert "sk-test-9999" not in verbose.stderr + verbose.stdout


def command_lines() -> list[bytes]:
    """Return the command line of every process this user can see."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_running_command_keeps_value_off_command_lines(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    """While a bound secret's command runs, no process has the value in its argv."""
    value = "sk-test-cmdline-4f1c9e"
    marker = tmp_path / "running"
    invoke("secret", "set", "TOKEN", "--shared", input=value)
    invoke(
        "env",
        "create",
        "demo",
        "--runtime",
        "local",
        "--repo",
        str(repo),
        "--secret",
        "TOKEN",
    )
    thread_id = invoke("thread", "create", "--model", "builtin/shell").stdout.strip()
    command = f'touch {marker}; sleep 1.5; echo "$TOKEN"'
    invoke("thread", "entries", "create", thread_id, command, "--no-start-worker")

    worker = start_arbe("worker", "--once", log=tmp_path / "worker.log")
    wait_for(marker.exists)
    seen = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        seen.extend(command_lines())
        time.sleep(0.05)
    worker.wait(30)

    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
    assert any(b"sleep" in line for line in seen)
    assert not [line for line in seen if value.encode() in line]


def test_home_database_and_key_files_private(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    """After a whole dispatch, the home is 0700 and every file arbe wrote is 0600."""
    invoke("secret", "set", "TOKEN", "--shared", input="sk-test-123")
    invoke(
        "env",
        "create",
        "demo",
        "--runtime",
        "local",
        "--repo",
        str(repo),
        "--secret",
        "TOKEN",
    )
    thread_id = invoke("thread", "create", "--model", "builtin/shell").stdout.strip()
    invoke("thread", "entries", "create", thread_id, "ls")
    wait_for(
        lambda: (
            invoke("thread", "view", thread_id, "--json").stdout.count('"completed"')
            > 0
        )
    )

    files = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in home.iterdir() if p.is_file()
    }

    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert {"arbe.db", "master.key", "worker.log"} <= set(files)
    assert {name: 0o600 for name in files} == files
    assert not re.search(rb"sk-test-123", (home / "worker.log").read_bytes())
