"""`arbe secret` end to end, in process and as the real console script."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from arbe_core.names import MAX_SECRET_BYTES
from arbe_entry import open_house
from tests.helpers import (
    ARBE_SCRIPT,
    SUBPROCESS_TIMEOUT_S,
    arbe_env,
    invoke,
    run_arbe,
)

PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFake\n"
    "-----END PRIVATE KEY-----\n"
)
CONCURRENT_WRITERS = 20
#: Run the CLI module with Python printing each import and its time on stderr.
IMPORTTIME = [sys.executable, "-X", "importtime", "-m", "arbe_entry"]


def secret_value(home: Path, name: str) -> str | None:
    """Open the home as a library user would and resolve `name` as the house."""
    opened = open_house(home=home)
    try:
        resolved = opened.secrets.resolve(name)
    finally:
        opened.close()
    return None if resolved is None else resolved[0]


def secret_versions(home: Path) -> dict[str, int]:
    opened = open_house(home=home)
    try:
        return {s.name: s.version for s in opened.secrets.list()}
    finally:
        opened.close()


def files_under(home: Path) -> list[Path]:
    return sorted(p for p in home.rglob("*") if p.is_file())


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestSecretSetFlow:
    def test_secret_first_session_flow(self, arbe_home: Path) -> None:
        """A new user's first session: set, view, rotate and list the history."""
        created = run_arbe(
            "secret", "set", "OPENROUTER_API_KEY", "--shared", input="sk-test-123\n"
        )
        viewed = run_arbe("secret", "view", "OPENROUTER_API_KEY", "--json")
        rotated = run_arbe("secret", "set", "OPENROUTER_API_KEY", input="sk-test-456\n")
        history = run_arbe("secret", "history", "OPENROUTER_API_KEY", "--json")

        assert created.returncode == 0, created.stderr
        assert created.stdout == "Created OPENROUTER_API_KEY (version 1).\n"
        assert viewed.returncode == 0, viewed.stderr
        metadata = json.loads(viewed.stdout)
        assert metadata["version"] == 1
        assert metadata["shared"] is True
        assert metadata["audience"] == "environment"
        assert metadata["name"] == "OPENROUTER_API_KEY"
        assert metadata["owner"].startswith("user:")
        assert rotated.returncode == 0, rotated.stderr
        assert rotated.stdout == "Rotated OPENROUTER_API_KEY (version 2).\n"
        versions = json.loads(history.stdout)
        assert [v["version"] for v in versions] == [2, 1]
        assert [v["current"] for v in versions] == [True, False]
        assert [v["shared"] for v in versions] == [True, True]
        assert secret_value(arbe_home, "OPENROUTER_API_KEY") == "sk-test-456"

    def test_secret_set_json_prints_metadata(self, arbe_home: Path) -> None:
        result = invoke(
            "secret",
            "set",
            "DAYTONA_API_KEY",
            "--audience",
            "capability",
            "--json",
            input="sk-test-123\n",
        )

        assert result.exit_code == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["audience"] == "capability"
        assert data["shared"] is False
        assert data["version"] == 1
        assert "sk-test-123" not in result.stdout

    def test_secret_rotate_keeps_flags_unless_given(self, arbe_home: Path) -> None:
        invoke(
            "secret", "set", "TOKEN", "--audience", "capability", "--shared", input="a"
        )

        kept = invoke("secret", "set", "TOKEN", "--json", input="b")
        changed = invoke("secret", "set", "TOKEN", "--private", "--json", input="c")

        assert json.loads(kept.stdout)["audience"] == "capability"
        assert json.loads(kept.stdout)["shared"] is True
        assert json.loads(changed.stdout)["audience"] == "capability"
        assert json.loads(changed.stdout)["shared"] is False

    def test_secret_rollback_restores_value(self, arbe_home: Path) -> None:
        invoke("secret", "set", "TOKEN", input="sk-test-1\n")
        invoke("secret", "set", "TOKEN", input="sk-test-2\n")

        result = invoke("secret", "rollback", "TOKEN", "1", "--json")

        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["version"] == 3
        assert json.loads(result.stdout)["rolled_back_to"] == 1
        assert secret_value(arbe_home, "TOKEN") == "sk-test-1"

    def test_secret_delete_removes_history(self, arbe_home: Path) -> None:
        invoke("secret", "set", "TOKEN", input="sk-test-1\n")
        invoke("secret", "set", "TOKEN", input="sk-test-2\n")

        deleted = invoke("secret", "delete", "TOKEN", "--json")
        history = invoke("secret", "history", "TOKEN")

        assert deleted.exit_code == 0, deleted.stderr
        assert json.loads(deleted.stdout)["deleted"] is True
        assert history.exit_code == 1
        assert secret_versions(arbe_home) == {}

    def test_secret_list_text_table(self, arbe_home: Path) -> None:
        invoke("secret", "set", "ZED", input="sk-test-1")
        invoke("secret", "set", "ALPHA", "--shared", input="sk-test-2")

        result = invoke("secret", "list")

        lines = result.stdout.splitlines()
        assert lines[0].split() == ["NAME", "AUDIENCE", "SHARED", "VERSION", "UPDATED"]
        assert lines[1].split()[:4] == ["ALPHA", "environment", "yes", "1"]
        assert lines[2].split()[:4] == ["ZED", "environment", "no", "1"]

    @pytest.mark.parametrize(
        ("alias", "command"), [("ls", "list"), ("l", "list")], ids=["ls", "l"]
    )
    def test_secret_list_aliases_match(
        self, arbe_home: Path, alias: str, command: str
    ) -> None:
        invoke("secret", "set", "TOKEN", input="sk-test-1")

        aliased = invoke("secret", alias, "--json")
        original = invoke("secret", command, "--json")

        assert aliased.exit_code == 0, aliased.stderr
        assert aliased.stdout == original.stdout

    @pytest.mark.parametrize("alias", ["rm", "del"])
    def test_secret_delete_aliases_work(self, arbe_home: Path, alias: str) -> None:
        invoke("secret", "set", "TOKEN", input="sk-test-1")

        result = invoke("secret", alias, "TOKEN")

        assert result.exit_code == 0, result.stderr
        assert result.stdout == "Deleted TOKEN and its history.\n"
        assert secret_versions(arbe_home) == {}


class TestSecretValueFromStdin:
    @pytest.mark.parametrize(
        ("stdin", "expected"),
        [
            pytest.param(b"sk-test-123", "sk-test-123", id="no-newline"),
            pytest.param(b"sk-test-123\n", "sk-test-123", id="lf"),
            pytest.param(b"sk-test-123\r\n", "sk-test-123", id="crlf"),
            pytest.param(b"sk-test-123\n\n", "sk-test-123\n", id="two-lf"),
            pytest.param(b"sk-test-123\r\n\r\n", "sk-test-123\r\n", id="two-crlf"),
            pytest.param(b"sk-test-123\r", "sk-test-123\r", id="lone-cr"),
            pytest.param(b" padded\tvalue \n", " padded\tvalue ", id="spaces"),
            pytest.param("p\u00e4ss\u20ac\n".encode(), "p\u00e4ss\u20ac", id="utf8"),
            pytest.param((PEM + "\n").encode(), PEM, id="pem-with-extra-lf"),
            pytest.param(PEM.encode(), PEM.removesuffix("\n"), id="pem"),
        ],
    )
    def test_secret_set_keeps_bytes(
        self, arbe_home: Path, stdin: bytes, expected: str
    ) -> None:
        """Only one trailing newline (LF or CRLF) is removed from stdin."""
        result = invoke("secret", "set", "TOKEN", input=stdin)

        assert result.exit_code == 0, result.stderr
        assert secret_value(arbe_home, "TOKEN") == expected

    def test_secret_set_pem_subprocess(self, arbe_home: Path) -> None:
        result = run_arbe("secret", "set", "DEPLOY_KEY", input=PEM + "\n")

        assert result.returncode == 0, result.stderr
        assert secret_value(arbe_home, "DEPLOY_KEY") == PEM

    def test_secret_set_accepts_64_kib(self, arbe_home: Path) -> None:
        value = "x" * MAX_SECRET_BYTES

        result = invoke("secret", "set", "TOKEN", input=value + "\r\n")

        assert result.exit_code == 0, result.stderr
        assert secret_value(arbe_home, "TOKEN") == value


class TestSecretBadInput:
    """Each bad input: one sentence naming the value and rule, exit 1, no write."""

    @pytest.fixture(autouse=True)
    def existing(self, arbe_home: Path) -> None:
        opened = open_house(home=arbe_home)
        opened.secrets.set("TOKEN", "sk-test-old")
        opened.close()

    @pytest.mark.parametrize(
        ("args", "stdin", "fragments"),
        [
            pytest.param(
                ["secret", "set", "token"],
                b"sk-test-new",
                ["'token'", "[A-Z_][A-Z0-9_]*"],
                id="lower-case-name",
            ),
            pytest.param(
                ["secret", "set", "MY-TOKEN"],
                b"sk-test-new",
                ["'MY-TOKEN'", "[A-Z_][A-Z0-9_]*"],
                id="dashed-name",
            ),
            pytest.param(
                ["secret", "set", "1TOKEN"],
                b"sk-test-new",
                ["'1TOKEN'", "not starting with a digit"],
                id="leading-digit",
            ),
            pytest.param(
                ["secret", "set", "A" * 129],
                b"sk-test-new",
                [repr("A" * 129), "at most 128 characters"],
                id="name-over-128",
            ),
            pytest.param(
                ["secret", "set", "TOKEN"],
                b"",
                ["'TOKEN'", "empty"],
                id="empty-value",
            ),
            pytest.param(
                ["secret", "set", "TOKEN"],
                b"\n",
                ["'TOKEN'", "empty"],
                id="newline-only-value",
            ),
            pytest.param(
                ["secret", "set", "TOKEN"],
                b"x" * (MAX_SECRET_BYTES + 1),
                ["'TOKEN'", "64 KiB"],
                id="value-over-64-KiB",
            ),
            pytest.param(
                ["secret", "set", "TOKEN"],
                b"x" * (MAX_SECRET_BYTES * 2) + b"\n",
                ["'TOKEN'", "64 KiB"],
                id="value-far-over-64-KiB",
            ),
            pytest.param(
                ["secret", "set", "TOKEN"],
                b"sk-test-\xff\xfe\n",
                ["'TOKEN'", "not UTF-8"],
                id="non-utf8-stdin",
            ),
            pytest.param(
                ["--house", "nope", "secret", "set", "TOKEN"],
                b"sk-test-new",
                ["House 'nope' not found", "arbe house create nope"],
                id="unknown-house",
            ),
            pytest.param(
                ["secret", "view", "MISSING"],
                b"",
                ["Secret 'MISSING' not found", "arbe secret set MISSING"],
                id="view-missing",
            ),
            pytest.param(
                ["secret", "delete", "MISSING"],
                b"",
                ["Secret 'MISSING' not found"],
                id="delete-missing",
            ),
            pytest.param(
                ["secret", "history", "MISSING"],
                b"",
                ["Secret 'MISSING' not found"],
                id="history-missing",
            ),
            pytest.param(
                ["secret", "rollback", "TOKEN", "5"],
                b"",
                ["Version 5 of secret 'TOKEN' is not kept", "kept versions: 1"],
                id="rollback-not-kept",
            ),
            pytest.param(
                ["secret", "rollback", "MISSING", "1"],
                b"",
                ["Secret 'MISSING' not found"],
                id="rollback-missing",
            ),
            pytest.param(
                ["secret", "view", "lower"],
                b"",
                ["'lower'", "[A-Z_][A-Z0-9_]*"],
                id="view-invalid-name",
            ),
        ],
    )
    def test_secret_bad_input_rejected(
        self, arbe_home: Path, args: list[str], stdin: bytes, fragments: list[str]
    ) -> None:
        result = run_arbe(*args, input=stdin)

        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1, result.stderr
        for fragment in fragments:
            assert fragment in result.stderr
        assert "sk-test" not in result.stderr
        assert "xxxx" not in result.stderr
        assert secret_versions(arbe_home) == {"TOKEN": 1}
        assert secret_value(arbe_home, "TOKEN") == "sk-test-old"

    @pytest.mark.parametrize(
        ("args", "stdin", "error"),
        [
            pytest.param(
                ["secret", "view", "MISSING", "--json"], b"", "not_found", id="missing"
            ),
            pytest.param(
                ["secret", "set", "bad-name", "--json"],
                b"sk-test-new",
                "invalid_input",
                id="invalid-name",
            ),
            pytest.param(
                ["secret", "set", "TOKEN", "--json"], b"", "invalid_input", id="empty"
            ),
        ],
    )
    def test_secret_json_error_object(
        self, arbe_home: Path, args: list[str], stdin: bytes, error: str
    ) -> None:
        result = run_arbe(*args, input=stdin)

        data = json.loads(result.stdout)
        assert result.returncode == 1
        assert data["error"] == error
        assert data["message"] in result.stderr
        assert result.stderr.startswith("error: ")
        assert "sk-test" not in result.stdout

    @pytest.mark.parametrize(
        "args",
        [
            pytest.param(["secret", "rollback", "TOKEN"], id="missing-argument"),
            pytest.param(["secret", "rollback", "TOKEN", "two"], id="not-a-number"),
            pytest.param(
                ["secret", "set", "TOKEN", "--audience", "x"], id="bad-choice"
            ),
            pytest.param(["secret", "unknown"], id="unknown-command"),
            pytest.param(["secret", "list", "--no-such-flag"], id="unknown-option"),
        ],
    )
    def test_secret_usage_error_exits_2(self, arbe_home: Path, args: list[str]) -> None:
        result = invoke(*args, input="sk-test-new")

        assert result.exit_code == 2
        assert "Error:" in result.stderr
        assert secret_versions(arbe_home) == {"TOKEN": 1}

    def test_secret_usage_error_subprocess(self, arbe_home: Path) -> None:
        """The console script reports a usage error without a traceback."""
        result = run_arbe("secret", "rollback", "TOKEN", "--json")

        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "Missing argument" in result.stderr
        assert json.loads(result.stdout)["error"] == "usage"


class TestSecretStorageOnDisk:
    def test_secret_plaintext_in_no_file(self, arbe_home: Path) -> None:
        """No file under the home contains a value, the WAL and its index included."""
        plaintext = "sk-test-plaintext-7d41c9"
        run_arbe("secret", "set", "TOKEN", input=plaintext + "\n")
        # An open reader keeps the WAL from being checkpointed and removed when
        # the next `arbe` process exits, so its bytes can be read too.
        reader = sqlite3.connect(arbe_home / "arbe.db")
        reader.execute("SELECT COUNT(*) FROM secrets").fetchone()
        try:
            rotated = run_arbe("secret", "set", "TOKEN", input=plaintext + "-2\n")
            rolled_back = run_arbe("secret", "rollback", "TOKEN", "1")
            files = {path.name: path.read_bytes() for path in files_under(arbe_home)}
        finally:
            reader.close()

        assert rotated.returncode == 0, rotated.stderr
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert "arbe.db-wal" in files
        assert len(files["arbe.db-wal"]) > 0
        for name, data in files.items():
            assert plaintext.encode() not in data, name
            assert base64.b64encode(plaintext.encode()) not in data, name

    def test_secret_files_private_after_first_command(self, arbe_home: Path) -> None:
        """The first command creates the home 0700, its database and key 0600."""
        result = run_arbe("secret", "list")

        modes = {p.name: mode_of(p) for p in files_under(arbe_home)}
        assert result.returncode == 0, result.stderr
        assert mode_of(arbe_home) == 0o700
        assert modes == {"arbe.db": 0o600, "master.key": 0o600}

    def test_secret_wal_files_private(self, arbe_home: Path) -> None:
        run_arbe("secret", "list")
        reader = sqlite3.connect(arbe_home / "arbe.db")
        reader.execute("SELECT COUNT(*) FROM secrets").fetchone()
        try:
            run_arbe("secret", "set", "TOKEN", input="sk-test-123\n")
            modes = {p.name: mode_of(p) for p in files_under(arbe_home)}
        finally:
            reader.close()

        assert modes == dict.fromkeys(
            ["arbe.db", "arbe.db-shm", "arbe.db-wal", "master.key"], 0o600
        )

    def test_secret_schema_too_new_rejected(self, arbe_home: Path) -> None:
        """A database from a newer arbe is reported in one sentence and left as is."""
        run_arbe("secret", "set", "TOKEN", input="sk-test-123\n")
        database = arbe_home / "arbe.db"
        conn = sqlite3.connect(database)
        conn.execute("INSERT INTO schema_migrations VALUES (999, 'later')")
        conn.commit()
        conn.close()
        before = database.read_bytes()

        result = run_arbe("secret", "list", "--json")

        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert "schema version 999" in result.stderr
        assert "upgrade arbe" in result.stderr
        assert json.loads(result.stdout)["type"] == "SchemaTooNew"
        assert database.read_bytes() == before

    def test_secret_list_imports_no_sdk(self, arbe_home: Path) -> None:
        """`secret list --json` starts without importing httpx or a runtime SDK."""
        run_arbe("secret", "set", "TOKEN", input="sk-test-123\n")

        result = subprocess.run(
            [*IMPORTTIME, "secret", "list", "--json"],
            capture_output=True,
            text=True,
            env=arbe_env(),
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )

        imported = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert result.returncode == 0, result.stderr
        assert [s["name"] for s in json.loads(result.stdout)] == ["TOKEN"]
        assert "arbe_entry" in imported
        assert "httpx" not in imported
        assert "daytona" not in imported
        assert "daytona_sdk" not in imported
        assert "sprites" not in imported

    def test_secret_values_never_printed(self, arbe_home: Path) -> None:
        plaintext = "sk-test-never-shown"
        commands = [
            ("secret", "set", "TOKEN"),
            ("secret", "set", "TOKEN", "--json"),
            ("secret", "list"),
            ("secret", "list", "--json"),
            ("secret", "view", "TOKEN"),
            ("secret", "view", "TOKEN", "--json"),
            ("secret", "history", "TOKEN"),
            ("secret", "history", "TOKEN", "--json"),
            ("secret", "rollback", "TOKEN", "1"),
            ("secret", "rollback", "TOKEN", "1", "--json"),
            ("secret", "delete", "TOKEN", "--json"),
        ]

        results = [invoke(*command, input=plaintext) for command in commands]

        for command, result in zip(commands, results, strict=True):
            assert result.exit_code == 0, (command, result.stderr)
            assert plaintext not in result.stdout + result.stderr, command


class TestSecretMasterKey:
    def test_secret_wrong_master_key_rejected(self, arbe_home: Path) -> None:
        run_arbe("secret", "set", "TOKEN", input="sk-test-old\n")
        wrong = base64.b64encode(bytes(32)).decode()

        result = run_arbe(
            "secret",
            "set",
            "TOKEN",
            input="sk-test-new\n",
            env={"ARBE_MASTER_KEY": wrong},
        )

        assert result.returncode == 1
        assert result.stderr.count("\n") == 1
        assert "does not match this database" in result.stderr
        assert wrong not in result.stderr
        assert secret_versions(arbe_home) == {"TOKEN": 1}
        assert secret_value(arbe_home, "TOKEN") == "sk-test-old"

    def test_secret_insecure_key_file_rejected(self, arbe_home: Path) -> None:
        run_arbe("secret", "set", "TOKEN", input="sk-test-old\n")
        key_file = arbe_home / "master.key"
        key_file.chmod(0o644)

        result = run_arbe("secret", "set", "TOKEN", input="sk-test-new\n")

        assert result.returncode == 1
        assert f"chmod 600 {key_file}" in result.stderr
        assert mode_of(key_file) == 0o644

    def test_secret_env_master_key_works(self, arbe_home: Path) -> None:
        key = base64.b64encode(bytes(range(32))).decode()

        result = run_arbe(
            "secret",
            "set",
            "TOKEN",
            input="sk-test-123\n",
            env={"ARBE_MASTER_KEY": key},
        )

        assert result.returncode == 0, result.stderr
        assert not (arbe_home / "master.key").exists()


@pytest.mark.slow
class TestSecretConcurrency:
    def start(self, name: str, value_file: Path) -> subprocess.Popen[bytes]:
        with value_file.open("rb") as stdin:
            return subprocess.Popen(
                [str(ARBE_SCRIPT), "secret", "set", name],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=arbe_env(),
            )

    def value_files(self, tmp_path: Path, values: list[str]) -> list[Path]:
        files = []
        for number, value in enumerate(values):
            path = tmp_path / f"value-{number}"
            path.write_text(value + "\n")
            files.append(path)
        return files

    def wait_all(
        self, processes: list[subprocess.Popen[bytes]]
    ) -> list[tuple[int, str]]:
        results = []
        for process in processes:
            _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
            results.append((process.returncode, stderr.decode()))
        return results

    def test_secret_concurrent_sets_one_name(
        self, arbe_home: Path, tmp_path: Path
    ) -> None:
        """Twenty writers on a fresh home all land, one version each."""
        values = [f"sk-test-{n}" for n in range(CONCURRENT_WRITERS)]
        files = self.value_files(tmp_path, values)

        processes = [self.start("SHARED_TOKEN", file) for file in files]
        results = self.wait_all(processes)

        assert results == [(0, "")] * CONCURRENT_WRITERS
        assert secret_versions(arbe_home) == {"SHARED_TOKEN": CONCURRENT_WRITERS}
        assert secret_value(arbe_home, "SHARED_TOKEN") in values
        history = invoke("secret", "history", "SHARED_TOKEN", "--json")
        assert [v["version"] for v in json.loads(history.stdout)] == list(
            range(CONCURRENT_WRITERS, CONCURRENT_WRITERS - 10, -1)
        )

    def test_secret_concurrent_sets_many_names(
        self, arbe_home: Path, tmp_path: Path
    ) -> None:
        names = [f"TOKEN_{n}" for n in range(CONCURRENT_WRITERS)]
        files = self.value_files(tmp_path, [f"sk-test-{name}" for name in names])

        processes = [
            self.start(name, file) for name, file in zip(names, files, strict=True)
        ]
        results = self.wait_all(processes)

        assert results == [(0, "")] * CONCURRENT_WRITERS
        assert secret_versions(arbe_home) == dict.fromkeys(names, 1)
        assert secret_value(arbe_home, "TOKEN_7") == "sk-test-TOKEN_7"
