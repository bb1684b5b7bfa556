"""`arbe house` end to end: create, list, use, view, rotate-key and choosing a house."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
from pathlib import Path

import pytest

from arbe_adapters.crypto import AesGcmSealer
from arbe_core.errors import MasterKeyMismatch
from arbe_entry import open_house
from tests.helpers import invoke, run_arbe


def secret_names(home: Path, house: str) -> list[str]:
    opened = open_house(house, home=home)
    try:
        return [s.name for s in opened.secrets.list()]
    finally:
        opened.close()


def secret_value(home: Path, house: str, name: str) -> str | None:
    opened = open_house(house, home=home)
    try:
        resolved = opened.secrets.resolve(name)
    finally:
        opened.close()
    return None if resolved is None else resolved[0]


def wrapped_keys(home: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(home / "arbe.db")
    try:
        rows = conn.execute("SELECT name, wrapped_key FROM houses").fetchall()
    finally:
        conn.close()
    return {name: bytes(key) for name, key in rows}


def sealed_values(home: Path) -> list[bytes]:
    conn = sqlite3.connect(home / "arbe.db")
    try:
        rows = conn.execute(
            "SELECT sealed FROM secret_versions ORDER BY house_id, name, version"
        ).fetchall()
    finally:
        conn.close()
    return [bytes(row[0]) for row in rows]


class TestHouseCommands:
    def test_house_create_prints_house(self, arbe_home: Path) -> None:
        result = invoke("house", "create", "acme", "--json")

        data = json.loads(result.stdout)
        assert result.exit_code == 0, result.stderr
        assert data["name"] == "acme"
        assert data["id"].startswith("hse_")
        assert data["active_env"] is None

    def test_house_list_marks_default(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")

        result = invoke("house", "list", "--json")

        houses = json.loads(result.stdout)
        assert [h["name"] for h in houses] == ["acme", "other"]
        assert [h["default"] for h in houses] == [True, False]

    def test_house_list_text_marks_default(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")

        result = invoke("house", "ls")

        acme, other = result.stdout.splitlines()[1:]
        assert acme.split()[:2] == ["*", "acme"]
        assert other.split()[0] == "other"

    def test_house_first_command_creates_default(self, arbe_home: Path) -> None:
        invoke("secret", "list")

        result = invoke("house", "list", "--json")

        houses = json.loads(result.stdout)
        assert [(h["name"], h["default"]) for h in houses] == [("default", True)]

    def test_house_use_switches_default(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")

        used = invoke("house", "use", "other")
        viewed = invoke("house", "view", "--json")

        assert used.exit_code == 0, used.stderr
        assert used.stdout == "Default house is now other.\n"
        assert json.loads(viewed.stdout)["name"] == "other"

    def test_house_use_routes_secrets(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")
        invoke("house", "use", "other")

        invoke("secret", "set", "TOKEN", input="sk-test-123\n")

        assert secret_names(arbe_home, "other") == ["TOKEN"]
        assert secret_names(arbe_home, "acme") == []

    def test_house_view_named_house(self, arbe_home: Path) -> None:
        created = json.loads(invoke("house", "create", "acme", "--json").stdout)
        invoke("house", "create", "other")

        result = invoke("house", "view", "other", "--json")
        text = invoke("house", "view", "acme")

        assert json.loads(result.stdout)["name"] == "other"
        assert text.stdout.splitlines()[0].split() == ["name", "acme"]
        assert text.stdout.splitlines()[1].split() == ["id", created["id"]]

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            pytest.param(
                ["house", "view", "nope"], "House 'nope' not found", id="view"
            ),
            pytest.param(["house", "use", "nope"], "House 'nope' not found", id="use"),
            pytest.param(
                ["house", "create", "Bad_Name"],
                "Invalid house name 'Bad_Name'",
                id="invalid-name",
            ),
            pytest.param(
                ["house", "create", "default"],
                "House 'default' already exists",
                id="duplicate",
            ),
        ],
    )
    def test_house_error_one_sentence(
        self, arbe_home: Path, args: list[str], fragment: str
    ) -> None:
        invoke("secret", "list")

        result = run_arbe(*args)

        houses = json.loads(invoke("house", "list", "--json").stdout)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        assert fragment in result.stderr
        assert [h["name"] for h in houses] == ["default"]

    def test_house_error_json_object(self, arbe_home: Path) -> None:
        result = run_arbe("house", "view", "nope", "--json")

        data = json.loads(result.stdout)
        assert result.returncode == 1
        assert data["error"] == "not_found"
        assert data["type"] == "HouseNotFound"


class TestHouseSelection:
    @pytest.fixture(autouse=True)
    def two_houses(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")

    def test_house_option_selects_house(self, arbe_home: Path) -> None:
        result = run_arbe(
            "--house", "other", "secret", "set", "TOKEN", input="sk-test-1"
        )

        assert result.returncode == 0, result.stderr
        assert secret_names(arbe_home, "other") == ["TOKEN"]
        assert secret_names(arbe_home, "acme") == []

    def test_house_env_selects_house(self, arbe_home: Path) -> None:
        result = run_arbe(
            "secret", "set", "TOKEN", input="sk-test-1", env={"ARBE_HOUSE": "other"}
        )

        assert result.returncode == 0, result.stderr
        assert secret_names(arbe_home, "other") == ["TOKEN"]
        assert secret_names(arbe_home, "acme") == []

    def test_house_option_beats_env(self, arbe_home: Path) -> None:
        result = invoke(
            "--house",
            "acme",
            "secret",
            "set",
            "TOKEN",
            input="sk-test-1",
            env={"ARBE_HOUSE": "other"},
        )

        assert result.exit_code == 0, result.stderr
        assert secret_names(arbe_home, "acme") == ["TOKEN"]
        assert secret_names(arbe_home, "other") == []

    def test_house_view_follows_option(self, arbe_home: Path) -> None:
        result = invoke("--house", "other", "house", "view", "--json")

        assert json.loads(result.stdout)["name"] == "other"

    def test_house_secrets_stay_apart(self, arbe_home: Path) -> None:
        invoke("--house", "acme", "secret", "set", "TOKEN", input="sk-test-acme")
        invoke("--house", "other", "secret", "set", "TOKEN", input="sk-test-other")

        acme = secret_value(arbe_home, "acme", "TOKEN")
        other = secret_value(arbe_home, "other", "TOKEN")

        assert acme == "sk-test-acme"
        assert other == "sk-test-other"

    def test_house_home_option_selects_home(self, tmp_path: Path) -> None:
        elsewhere = tmp_path / "elsewhere"

        result = run_arbe("--home", str(elsewhere), "secret", "set", "TOKEN", input="v")

        assert result.returncode == 0, result.stderr
        assert secret_names(elsewhere, "default") == ["TOKEN"]


class TestHouseRotateKey:
    @pytest.fixture(autouse=True)
    def secrets(self, arbe_home: Path) -> None:
        invoke("house", "create", "acme")
        invoke("house", "create", "other")
        invoke("--house", "acme", "secret", "set", "TOKEN", input="sk-test-acme")
        invoke("--house", "other", "secret", "set", "TOKEN", input="sk-test-other")

    def test_rotate_key_rewraps_key_file(self, arbe_home: Path) -> None:
        key_file = arbe_home / "master.key"
        old_key = base64.b64decode(key_file.read_text())
        sealed_before = sealed_values(arbe_home)

        result = run_arbe("house", "rotate-key", "--json")

        data = json.loads(result.stdout)
        new_key = base64.b64decode(key_file.read_text())
        assert result.returncode == 0, result.stderr
        assert data == {"houses": 2, "new_key": None, "key_file": str(key_file)}
        assert new_key != old_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert sorted(p.name for p in arbe_home.iterdir() if "key" in p.name) == [
            "master.key"
        ]
        assert sealed_values(arbe_home) == sealed_before

    def test_rotate_key_old_key_fails(self, arbe_home: Path) -> None:
        old_text = (arbe_home / "master.key").read_text().strip()

        run_arbe("house", "rotate-key")

        old_sealer = AesGcmSealer(base64.b64decode(old_text))
        for wrapped in wrapped_keys(arbe_home).values():
            with pytest.raises(MasterKeyMismatch):
                old_sealer.check(wrapped)
        with_old = run_arbe(
            "secret",
            "set",
            "TOKEN",
            input="sk-test-new",
            env={"ARBE_MASTER_KEY": old_text},
        )
        assert with_old.returncode == 1
        assert "does not match this database" in with_old.stderr

    def test_rotate_key_values_still_resolve(self, arbe_home: Path) -> None:
        run_arbe("house", "rotate-key")

        acme = secret_value(arbe_home, "acme", "TOKEN")
        other = secret_value(arbe_home, "other", "TOKEN")

        assert acme == "sk-test-acme"
        assert other == "sk-test-other"

    def test_rotate_key_env_prints_new_key(
        self, arbe_home: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With ARBE_MASTER_KEY, the new key is printed once for the user to store."""
        old_text = (arbe_home / "master.key").read_text().strip()

        result = run_arbe(
            "house", "rotate-key", "--json", env={"ARBE_MASTER_KEY": old_text}
        )

        new_text = json.loads(result.stdout)["new_key"]
        assert result.returncode == 0, result.stderr
        assert (arbe_home / "master.key").read_text().strip() == old_text
        monkeypatch.setenv("ARBE_MASTER_KEY", new_text)
        assert secret_value(arbe_home, "acme", "TOKEN") == "sk-test-acme"
        monkeypatch.setenv("ARBE_MASTER_KEY", old_text)
        with pytest.raises(MasterKeyMismatch):
            secret_value(arbe_home, "acme", "TOKEN")

    def test_rotate_key_wrong_key_changes_nothing(self, arbe_home: Path) -> None:
        keys_before = wrapped_keys(arbe_home)
        wrong = base64.b64encode(bytes(32)).decode()

        result = run_arbe("house", "rotate-key", env={"ARBE_MASTER_KEY": wrong})

        assert result.returncode == 1
        assert "does not match this database" in result.stderr
        assert wrapped_keys(arbe_home) == keys_before
