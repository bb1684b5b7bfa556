"""The workflow in the docs, run line for line against fake Daytona and OpenRouter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.daytona import FakeDaytona
from tests.fakes.openrouter import FakeOpenRouter, RecordedRequest

#: The documented workflow, exactly as the README and the issue give it.
WORKFLOW = r"""
set -e
printf '%s' "$OPENROUTER_API_KEY" | arbe secret set OPENROUTER_API_KEY --shared
printf '%s' "$GITHUB_TOKEN"       | arbe secret set GITHUB_TOKEN       --shared
printf '%s' "$DAYTONA_API_KEY"    | arbe secret set DAYTONA_API_KEY
arbe env create prod --repo https://github.com/org/repo \
  --secret OPENROUTER_API_KEY --secret GITHUB_TOKEN
arbe env use prod
THREAD_ID=$(arbe thread create issue-42)
arbe thread entries create "$THREAD_ID" "implement the login page"
arbe thread entries read "$THREAD_ID"
arbe sandbox list --runtime daytona
"""

GITHUB_TOKEN = "ghp-test-4242-secret"


def _make_repo(root: Path) -> Path:
    repo = root / "org" / "repo"
    repo.mkdir(parents=True)
    (repo / "login.html").write_text("<form>login</form>\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=repo, check=True)
    return repo


def test_documented_workflow_runs_verbatim(
    tmp_path: Path, fake_daytona: FakeDaytona, fake_openrouter: FakeOpenRouter
) -> None:
    """Each documented line runs as written; the bot works in a Daytona sandbox."""
    _make_repo(tmp_path / "repos")
    fake_daytona.map_url("https://github.com/", f"file://{tmp_path / 'repos'}/")
    seen: list[RecordedRequest] = []
    fake_openrouter.run_command_then_answer(
        'ls; echo "token=$GITHUB_TOKEN"',
        "The login page is in place.",
        check=seen.append,
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ARBE_HOME": str(tmp_path / "home"),
        "ARBE_PLUGINS": "",
        "OPENROUTER_API_KEY": "sk-test-123",
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "DAYTONA_API_KEY": fake_daytona.api_key,
        "DAYTONA_API_URL": fake_daytona.api_url,
        "OPENROUTER_BASE_URL": fake_openrouter.base_url,
    }

    result = subprocess.run(
        ["bash", "-c", WORKFLOW], env=env, capture_output=True, text=True, timeout=180
    )

    assert result.returncode == 0, result.stderr
    assert "login.html" in result.stdout
    assert "***GITHUB_TOKEN***" in result.stdout
    assert GITHUB_TOKEN not in result.stdout
    assert GITHUB_TOKEN not in result.stderr
    assert "The login page is in place." in result.stdout
    sandboxes = [
        s for s in fake_daytona.sandboxes.values() if s.labels.get("arbe.env") == "prod"
    ]
    assert len(sandboxes) == 1
    assert sandboxes[0].id in result.stdout
    first = fake_openrouter.requests[0]
    assert first.bearer == "sk-test-123"
    assert first.body["model"] == "anthropic/claude-haiku-4.5"
    assert seen
    assert GITHUB_TOKEN not in json.dumps(seen[0].body)
    assert all(GITHUB_TOKEN not in json.dumps(r.body) for r in fake_openrouter.requests)
