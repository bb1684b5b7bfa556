"""`arbe quickstart`: the main job on the local runtime with builtin/shell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from arbe_entry.cli import quickstart
from tests.helpers import run_arbe


def _repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    return root


def test_quickstart_runs_repo_tests(arbe_home: Path, tmp_path: Path) -> None:
    """The bot runs the repo's test command and the run ends completed."""
    repo = _repo(tmp_path / "proj", {"Makefile": "test:\n\t@echo all-tests-passed\n"})

    result = run_arbe("quickstart", "--repo", str(repo))

    assert result.returncode == 0, result.stderr
    assert "all-tests-passed" in result.stdout
    assert "arbe env delete quickstart --destroy-sandbox" in result.stderr


def test_quickstart_reuses_environment(arbe_home: Path, tmp_path: Path) -> None:
    """A second run reuses the environment instead of failing on the name."""
    repo = _repo(tmp_path / "proj", {"Makefile": "test:\n\t@echo ok\n"})
    run_arbe("quickstart", "--repo", str(repo))

    again = run_arbe("quickstart", "--repo", str(repo), "--json")

    assert again.returncode == 0, again.stderr
    assert "Reusing environment quickstart" in again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["state"] == "completed"
    assert summary["exit_code"] == 0


def test_quickstart_failing_tests_exit_one(arbe_home: Path, tmp_path: Path) -> None:
    """A test command that fails makes quickstart exit 1 and say so."""
    repo = _repo(tmp_path / "proj", {"README": "x\n"})

    result = run_arbe("quickstart", "--repo", str(repo), "--command", "exit 3")

    assert result.returncode == 1
    assert "exited with 3" in result.stderr


def test_quickstart_rejects_non_repository(arbe_home: Path, tmp_path: Path) -> None:
    """A directory without .git is rejected with the fix."""
    (tmp_path / "plain").mkdir()

    result = run_arbe("quickstart", "--repo", str(tmp_path / "plain"))

    assert result.returncode == 1
    assert "not a git repository" in result.stderr
    assert "--repo PATH" in result.stderr


def test_test_command_guesses_by_files(tmp_path: Path) -> None:
    """The test command follows the files the repository has."""
    (tmp_path / "package.json").write_text("{}")

    assert quickstart.test_command(tmp_path) == "npm test"


def test_arbe_checkout_found_from_source() -> None:
    """Running from this checkout, quickstart defaults to arbe's own repo."""
    checkout = quickstart._arbe_checkout()

    assert checkout is not None
    assert (checkout / "src" / "arbe_core").is_dir()
