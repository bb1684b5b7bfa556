"""The audit trail: every change is an event, and `audit list` follows one chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arbe_entry import open_house
from tests.helpers import invoke


def run(*args: str, input: str | None = None) -> str:
    result = invoke(*args, input=input)
    assert result.exit_code == 0, (args, result.stderr)
    return result.stdout


def audit(*filters: str) -> list[dict[str, Any]]:
    events = json.loads(run("audit", "list", *filters, "--json"))
    assert isinstance(events, list)
    return events


def run_worker(home: Path) -> None:
    opened = open_house(home=home)
    try:
        opened.worker().run(once=True)
    finally:
        opened.close()


def dispatched_thread(env: str, command: str, home: Path) -> str:
    thread_id = run("thread", "create", "--env", env, "--model", "builtin/shell")
    thread_id = thread_id.strip()
    run("thread", "entries", "create", thread_id, command, "--no-start-worker")
    run_worker(home)
    return thread_id


def index(events: list[dict[str, Any]], action: str, **fields: object) -> int:
    """Return the position of the first event with `action` and `fields`."""
    for number, event in enumerate(events):
        if event["action"] == action and all(event[k] == v for k, v in fields.items()):
            return number
    raise AssertionError(f"no {action} {fields} in {[e['action'] for e in events]}")


@pytest.fixture
def two_chains(home: Path, repo: Path) -> dict[str, str]:
    """Two secrets, each bound to its own local environment and used by a thread."""
    run("secret", "set", "TOKEN", "--shared", input="sk-test-token-1")
    run("secret", "set", "TOKEN", input="sk-test-token-2")
    run("secret", "set", "OTHER", "--shared", input="sk-test-other-1")
    run(
        "env", "create", "demo", "--runtime", "local", "--repo", str(repo),
        "--secret", "TOKEN",
    )  # fmt: skip
    run("env", "create", "side", "--runtime", "local", "--repo", str(repo))
    run("env", "bind-secret", "side", "OTHER")
    ids = {
        "demo": dispatched_thread("demo", 'echo "$TOKEN"', home),
        "side": dispatched_thread("side", 'echo "$OTHER"', home),
    }
    for env in ("demo", "side"):
        view = json.loads(run("env", "view", env, "--json"))
        ids[f"{env}_sandbox"] = view["sandbox_id"]
    return ids


class TestAuditChain:
    def test_audit_chain_from_secret_to_thread(
        self, two_chains: dict[str, str]
    ) -> None:
        """secret set, env create binding it, sandbox, dispatch resolve, completed."""
        thread_id = two_chains["demo"]
        sandbox_id = two_chains["demo_sandbox"]

        events = audit("--secret", "TOKEN")

        created = index(events, "secret.create", secret="TOKEN")
        rotated = index(events, "secret.set", secret="TOKEN")
        env_created = index(events, "env.create", env="demo", sandbox_id=sandbox_id)
        provisioned = index(events, "sandbox.provision", sandbox_id=sandbox_id)
        resolved = index(events, "dispatch.resolve", thread_id=thread_id)
        completed = index(events, "dispatch.completed", thread_id=thread_id)
        assert created < rotated < env_created < resolved < completed
        assert rotated < provisioned < resolved
        assert events[env_created]["details"]["bindings"] == ["TOKEN"]
        assert events[resolved]["env"] == "demo"
        assert events[resolved]["sandbox_id"] == sandbox_id
        assert events[resolved]["details"]["secrets"] == [
            {"name": "TOKEN", "version": 2}
        ]
        assert events[resolved]["actor"].startswith("wrk_")
        assert events[created]["actor"].startswith("user:")

    def test_audit_secret_chain_leaves_other_chain_out(
        self, two_chains: dict[str, str]
    ) -> None:
        events = audit("--secret", "TOKEN")

        assert {e["env"] for e in events} == {None, "demo"}
        assert {e["secret"] for e in events} == {None, "TOKEN"}
        assert {e["thread_id"] for e in events} == {None, two_chains["demo"]}
        assert two_chains["side_sandbox"] not in {e["sandbox_id"] for e in events}

    def test_audit_env_filter_follows_env(self, two_chains: dict[str, str]) -> None:
        """`--env` shows the env, its sandbox, its threads and the secrets it binds."""
        events = audit("--env", "side")

        actions = [e["action"] for e in events]
        assert {e["env"] for e in events} == {None, "side"}
        assert {e["thread_id"] for e in events} == {None, two_chains["side"]}
        assert "env.bind" in actions
        assert "secret.create" in actions
        assert {e["secret"] for e in events} == {None, "OTHER"}
        assert actions[-1] == "dispatch.completed"

    def test_audit_thread_filter_follows_thread(
        self, two_chains: dict[str, str]
    ) -> None:
        """`--thread` shows the thread's events and the env and secrets it used."""
        thread_id = two_chains["demo"]

        events = audit("--thread", thread_id)

        actions = [e["action"] for e in events]
        assert {e["thread_id"] for e in events} == {None, thread_id}
        assert {e["env"] for e in events} == {None, "demo"}
        assert actions.count("secret.create") == 1
        assert "thread.create" in actions
        assert actions[-1] == "dispatch.completed"

    def test_audit_filters_combine_narrowing(self, two_chains: dict[str, str]) -> None:
        both = audit("--secret", "TOKEN", "--thread", two_chains["demo"])
        disjoint = audit("--secret", "TOKEN", "--env", "side")

        assert both
        assert all(e in audit("--secret", "TOKEN") for e in both)
        assert disjoint == []

    def test_audit_events_carry_no_values(self, two_chains: dict[str, str]) -> None:
        text = run("audit", "list", "--json") + run("audit", "list")

        for value in ("sk-test-token-1", "sk-test-token-2", "sk-test-other-1"):
            assert value not in text


def test_every_change_recorded(home: Path, repo: Path) -> None:
    """Secret, environment and sandbox changes each append an event with their ids."""
    run("secret", "set", "TOKEN", "--shared", input="sk-test-1")
    run("secret", "set", "TOKEN", input="sk-test-2")
    run("secret", "rollback", "TOKEN", "1")
    run("secret", "set", "SPARE", input="sk-test-3")
    run("secret", "delete", "SPARE")
    run("env", "create", "demo", "--runtime", "local", "--repo", str(repo))
    sandbox_id = json.loads(run("env", "view", "demo", "--json"))["sandbox_id"]
    run("env", "bind-secret", "demo", "TOKEN")
    run("env", "unbind-secret", "demo", "TOKEN")
    run("env", "use", "demo")
    run("sandbox", "stop", sandbox_id, "--runtime", "local")
    run("sandbox", "start", sandbox_id, "--runtime", "local")
    run("env", "create", "spare", "--runtime", "local")
    spare_id = json.loads(run("env", "view", "spare", "--json"))["sandbox_id"]
    run("env", "delete", "spare")
    run("sandbox", "destroy", spare_id, "--runtime", "local")
    run("env", "create", "named", "--runtime", "local", "--sandbox", "box")
    named_id = json.loads(run("env", "view", "named", "--json"))["sandbox_id"]
    run("env", "delete", "named")
    run("sandbox", "destroy", "box", "--runtime", "local")
    run("env", "delete", "demo", "--destroy-sandbox")
    run("house", "rotate-key")

    events = audit()

    recorded = [
        (e["action"], e["secret"] or e["env"] or e["sandbox_id"]) for e in events
    ]
    expected = [
        ("secret.create", "TOKEN"),
        ("secret.set", "TOKEN"),
        ("secret.rollback", "TOKEN"),
        ("secret.create", "SPARE"),
        ("secret.delete", "SPARE"),
        ("sandbox.provision", "demo"),
        ("env.create", "demo"),
        ("env.bind", "demo"),
        ("env.unbind", "demo"),
        ("env.use", "demo"),
        ("sandbox.stop", sandbox_id),
        ("sandbox.start", sandbox_id),
        ("sandbox.provision", "spare"),
        ("env.create", "spare"),
        ("env.delete", "spare"),
        ("sandbox.destroy", spare_id),
        ("sandbox.provision", "named"),
        ("env.create", "named"),
        ("env.delete", "named"),
        ("sandbox.destroy", named_id),
        ("env.delete", "demo"),
        ("sandbox.destroy", "demo"),
        ("house.rotate_key", None),
    ]
    changes = [r for r in recorded if r[0] not in ("house.create", "env.use")]
    assert changes == [r for r in expected if r[0] != "env.use"]
    assert ("env.use", "demo") in recorded
    versions = [e["details"].get("version") for e in events if e["secret"] == "TOKEN"]
    assert versions == [1, 2, 3]
    assert all(e["at"] and e["actor"] and e["id"].startswith("evt_") for e in events)
