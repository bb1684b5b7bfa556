"""Loading the master key from ARBE_MASTER_KEY or the key file beside the database."""

from __future__ import annotations

import base64
import multiprocessing
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from arbe_adapters.crypto import load_master_key
from arbe_core.errors import CryptoError, KeyFileInsecure

KEY = bytes(range(32))
KEY_TEXT = base64.b64encode(KEY).decode("ascii")
CREATORS = 8


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_in_child(key_file: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(load_master_key(None, Path(key_file)))


class TestLoadMasterKeyFromEnv:
    def test_load_master_key_decodes_env_value(self, tmp_path: Path) -> None:
        key = load_master_key(KEY_TEXT, tmp_path / "master.key")

        assert key == KEY

    def test_load_master_key_env_ignores_spaces(self, tmp_path: Path) -> None:
        key = load_master_key(f"  {KEY_TEXT}\n", tmp_path / "master.key")

        assert key == KEY

    def test_load_master_key_env_creates_no_file(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"

        load_master_key(KEY_TEXT, key_file)

        assert not key_file.exists()

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("not base64!", id="not-base64"),
            pytest.param(KEY_TEXT[:-1], id="bad-padding"),
            pytest.param(base64.b64encode(bytes(16)).decode(), id="16-bytes"),
            pytest.param(base64.b64encode(bytes(33)).decode(), id="33-bytes"),
            pytest.param(base64.urlsafe_b64encode(b"\xff" * 32).decode(), id="urlsafe"),
        ],
    )
    def test_load_master_key_rejects_bad_env(self, tmp_path: Path, value: str) -> None:
        with pytest.raises(CryptoError) as caught:
            load_master_key(value, tmp_path / "master.key")

        assert "ARBE_MASTER_KEY" in caught.value.message
        assert "base64 of 32 bytes" in caught.value.message
        assert value not in caught.value.message


class TestLoadMasterKeyFromFile:
    def test_load_master_key_creates_file_0600(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"

        key = load_master_key(None, key_file)

        assert len(key) == 32
        assert mode_of(key_file) == 0o600

    def test_load_master_key_file_holds_base64(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"

        key = load_master_key(None, key_file)

        assert base64.b64decode(key_file.read_text()) == key

    def test_load_master_key_reads_existing_file(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        first = load_master_key(None, key_file)

        second = load_master_key(None, key_file)

        assert second == first

    def test_load_master_key_leaves_no_temp_file(self, tmp_path: Path) -> None:
        load_master_key(None, tmp_path / "master.key")

        assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]

    @pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
    def test_load_master_key_rejects_open_mode(self, tmp_path: Path, mode: int) -> None:
        """A key file that group or others could read is rejected, as ssh does."""
        key_file = tmp_path / "master.key"
        key_file.write_text(KEY_TEXT + "\n")
        os.chmod(key_file, mode)

        with pytest.raises(KeyFileInsecure) as caught:
            load_master_key(None, key_file)

        assert f"chmod 600 {key_file}" in caught.value.message
        assert f"{mode:o}" in caught.value.message

    @pytest.mark.parametrize("mode", [0o400, 0o600, 0o700])
    def test_load_master_key_accepts_owner_mode(
        self, tmp_path: Path, mode: int
    ) -> None:
        key_file = tmp_path / "master.key"
        key_file.write_text(KEY_TEXT + "\n")
        os.chmod(key_file, mode)

        key = load_master_key(None, key_file)

        assert key == KEY

    def test_load_master_key_insecure_file_unchanged(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        key_file.write_text(KEY_TEXT + "\n")
        os.chmod(key_file, 0o644)

        with pytest.raises(KeyFileInsecure):
            load_master_key(None, key_file)

        assert key_file.read_text() == KEY_TEXT + "\n"
        assert mode_of(key_file) == 0o644

    def test_load_master_key_rejects_bad_file(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        key_file.write_text("too short\n")
        os.chmod(key_file, 0o600)

        with pytest.raises(CryptoError) as caught:
            load_master_key(None, key_file)

        assert str(key_file) in caught.value.message

    def test_load_master_key_missing_without_create(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"

        with pytest.raises(CryptoError) as caught:
            load_master_key(None, key_file, create=False)

        assert "ARBE_MASTER_KEY" in caught.value.message
        assert not key_file.exists()

    def test_load_master_key_env_wins_over_file(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        from_file = load_master_key(None, key_file)

        key = load_master_key(KEY_TEXT, key_file)

        assert key == KEY
        assert key != from_file


class TestConcurrentCreation:
    def test_load_master_key_threads_share_key(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        barrier = threading.Barrier(CREATORS)

        def load() -> bytes:
            barrier.wait()
            return load_master_key(None, key_file)

        with ThreadPoolExecutor(CREATORS) as pool:
            keys = list(pool.map(lambda _: load(), range(CREATORS)))

        assert len(set(keys)) == 1
        assert base64.b64decode(key_file.read_text()) == keys[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]

    def test_load_master_key_processes_share_key(self, tmp_path: Path) -> None:
        key_file = tmp_path / "master.key"
        context = multiprocessing.get_context("fork")
        barrier = context.Barrier(CREATORS)
        results = context.Queue()
        processes = [
            context.Process(
                target=load_in_child, args=(str(key_file), barrier, results)
            )
            for _ in range(CREATORS)
        ]

        for process in processes:
            process.start()
        keys = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)

        assert [p.exitcode for p in processes] == [0] * CREATORS
        assert len(set(keys)) == 1
        assert base64.b64decode(key_file.read_text()) == keys[0]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["master.key"]
