"""Master key rotation: values never decrypted, the old key retired, crashes survived."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from arbe_adapters.crypto import AesGcmSealer
from arbe_entry import open_house
from arbe_entry.config import KEY_FILE_PENDING
from arbe_entry.keys import rotate_master_key
from tests.helpers import ARBE_SCRIPT, arbe_env, invoke, run_arbe

VALUES = {"acme": "sk-test-acme-7f3a", "other": "sk-test-other-91bc"}
#: SIGKILLed rotations in the crash loop.
ROTATION_KILLS = 24


@pytest.fixture
def houses(home: Path) -> Path:
    """Two houses with one secret each, under a key file."""
    for house, value in VALUES.items():
        invoke("house", "create", house)
        invoke("--house", house, "secret", "set", "TOKEN", input=value)
    return home


def resolved(home: Path) -> dict[str, str | None]:
    """Open each house afresh, as a new process would, and resolve its secret."""
    result = {}
    for house in VALUES:
        opened = open_house(house, home=home)
        try:
            found = opened.secrets.resolve("TOKEN")
        finally:
            opened.close()
        result[house] = None if found is None else found[0]
    return result


def stored_bytes(home: Path) -> bytes:
    """Return every byte of the database, its WAL and the key files."""
    return b"".join(p.read_bytes() for p in sorted(home.iterdir()) if p.is_file())


def sealed_values(home: Path) -> list[bytes]:
    with sqlite3.connect(home / "arbe.db") as db:
        rows = db.execute("SELECT sealed FROM secret_versions ORDER BY 1").fetchall()
    return [bytes(r[0]) for r in rows]


def test_rotate_key_never_opens_values(
    houses: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only data keys are rewrapped: no value is decrypted, none reaches the disk."""
    opens: list[object] = []
    original = AesGcmSealer.open

    def counting_open(self: AesGcmSealer, *args: object) -> str:
        opens.append(args)
        return original(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AesGcmSealer, "open", counting_open)
    sealed_before = sealed_values(houses)

    result = invoke("house", "rotate-key", "--json")

    assert result.exit_code == 0, result.stderr
    assert opens == []
    assert sealed_values(houses) == sealed_before
    for value in VALUES.values():
        assert value.encode() not in stored_bytes(houses)
    assert resolved(houses) == VALUES


@pytest.mark.parametrize(
    "args",
    [
        ["secret", "set", "TOKEN"],
        ["secret", "rollback", "TOKEN", "1"],
        ["house", "rotate-key"],
        ["worker", "--once"],
    ],
)
def test_old_key_file_rejected_after_rotation(
    houses: Path, tmp_path: Path, args: list[str]
) -> None:
    old_key = tmp_path / "old.key"
    shutil.copy2(houses / "master.key", old_key)
    rotated = run_arbe("house", "rotate-key")
    shutil.copy2(old_key, houses / "master.key")

    result = run_arbe("--house", "acme", *args, input="sk-test-new")

    assert rotated.returncode == 0, rotated.stderr
    assert result.returncode == 1
    assert result.stderr.startswith("error: The master key does not match")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


class TestRotationCrash:
    """A rotation cut short at each step leaves every value readable."""

    def test_crash_before_commit_keeps_old_key(
        self, houses: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key_before = (houses / "master.key").read_text()
        opened = open_house(home=houses)

        def crash(new_key: bytes) -> int:
            raise KeyboardInterrupt  # the process dies before the commit

        monkeypatch.setattr(opened.houses, "rotate_master_key", crash)
        with pytest.raises(KeyboardInterrupt):
            rotate_master_key(opened)

        assert (houses / KEY_FILE_PENDING).exists()
        assert resolved(houses) == VALUES
        assert (houses / "master.key").read_text() == key_before
        assert not (houses / KEY_FILE_PENDING).exists()

    def test_crash_between_commit_and_rename_finishes(
        self, houses: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        key_before = (houses / "master.key").read_text()
        opened = open_house(home=houses)

        def crash(source: object, target: object) -> None:
            raise KeyboardInterrupt  # the process dies before the rename

        monkeypatch.setattr(os, "replace", crash)
        with pytest.raises(KeyboardInterrupt):
            rotate_master_key(opened)
        monkeypatch.undo()
        pending = (houses / KEY_FILE_PENDING).read_text()

        assert resolved(houses) == VALUES
        assert (houses / "master.key").read_text() == pending
        assert pending != key_before
        assert not (houses / KEY_FILE_PENDING).exists()
        assert stat_mode(houses / "master.key") == 0o600

    def test_crash_after_rename_uses_new_key(self, houses: Path) -> None:
        opened = open_house(home=houses)

        rotate_master_key(opened)

        assert resolved(houses) == VALUES
        assert not (houses / KEY_FILE_PENDING).exists()

    def test_torn_pending_file_ignored(self, houses: Path) -> None:
        """A pending key cut short while written, before any rewrap, is dropped."""
        (houses / KEY_FILE_PENDING).write_text("c2hvcnQ=\n")
        os.chmod(houses / KEY_FILE_PENDING, 0o600)

        assert resolved(houses) == VALUES
        assert not (houses / KEY_FILE_PENDING).exists()


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.slow
def test_rotate_key_killed_at_random_moments(houses: Path) -> None:
    """SIGKILL `arbe house rotate-key` at random moments; every value survives."""
    rng = random.Random(11)
    started = time.monotonic()
    completed = run_arbe("house", "rotate-key")
    lifetime = time.monotonic() - started
    killed = 0

    for _ in range(ROTATION_KILLS):
        process = subprocess.Popen(
            [str(ARBE_SCRIPT), "house", "rotate-key"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=arbe_env(),
        )
        time.sleep(rng.uniform(0.0, lifetime * 1.2))
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
        killed += process.returncode == -signal.SIGKILL

        assert resolved(houses) == VALUES, stderr
        assert stat_mode(houses / "master.key") == 0o600

    assert completed.returncode == 0, completed.stderr
    assert killed >= ROTATION_KILLS // 2
