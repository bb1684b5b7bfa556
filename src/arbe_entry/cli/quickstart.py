"""`arbe quickstart`: the main job, offline, in one command."""

from __future__ import annotations

import shlex
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from arbe_core.errors import EnvironmentNotFound, InvalidInput
from arbe_core.models import DEFAULT_MODEL, Dispatch, DispatchState, Entry, EntryKind
from arbe_entry.cli._common import arbe, note, print_json
from arbe_entry.cli.thread import _print_entry, entry_dict

ENV_NAME = "quickstart"
SHELL_MODEL = "builtin/shell"


def _arbe_checkout() -> Path | None:
    """Return the git checkout arbe runs from, if it runs from one."""
    root = Path(__file__).resolve().parents[3]
    return (
        root
        if (root / ".git").exists() and (root / "pyproject.toml").exists()
        else None
    )


def test_command(repo: Path) -> str:
    """Guess the command that runs a repository's tests."""
    python = shlex.quote(sys.executable)
    if (repo / "pyproject.toml").exists() or (repo / "setup.py").exists():
        if (repo / "src" / "arbe_core").exists():
            return f"{python} -m pytest -q -p no:cacheprovider tests/unit"
        return f"{python} -m pytest -q -p no:cacheprovider"
    if any(repo.glob("test_*.py")) or any(repo.glob("tests/test_*.py")):
        return f"{python} -m pytest -q -p no:cacheprovider"
    if (repo / "package.json").exists():
        return "npm test"
    if (repo / "Cargo.toml").exists():
        return "cargo test"
    if (repo / "go.mod").exists():
        return "go test ./..."
    makefile = repo / "Makefile"
    if makefile.exists() and "test:" in makefile.read_text(errors="replace"):
        return "make test"
    # No test runner was recognised: show the tree so the run still prints
    # something, and `--command` sets the real one.
    return "echo 'No test command recognised; give one with --command.' && ls -la"


def quickstart(
    ctx: typer.Context,
    repo: Annotated[
        str | None,
        typer.Option(help="A local git repository; default: arbe's own checkout."),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(
            help="The test command to run; guessed from the repo when absent."
        ),
    ] = None,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Use builtin/shell even when the house has OPENROUTER_API_KEY.",
        ),
    ] = False,
    json_: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON document per entry, then a summary."
        ),
    ] = False,
) -> None:
    """Create a local environment on a repo and have a bot run its tests there.

    Offline and with no account: the house, an environment `quickstart` on
    the local runtime, and a thread whose builtin/shell bot runs the tests.
    With OPENROUTER_API_KEY in the house, the default model does the work.
    """
    opened = arbe(ctx)
    repo_path = Path(repo).expanduser().resolve() if repo else _arbe_checkout()
    if repo_path is None:
        raise InvalidInput(
            "arbe is not running from a git checkout; give a repository with "
            "`arbe quickstart --repo PATH`."
        )
    if not (repo_path / ".git").exists():
        raise InvalidInput(
            f"Invalid repo {str(repo_path)!r}: not a git repository (no .git); give one "
            "with `arbe quickstart --repo PATH`."
        )
    use_model = not offline and opened.models.key_source("openrouter") == "house"
    model = DEFAULT_MODEL if use_model else SHELL_MODEL
    text = command or test_command(repo_path)
    if use_model:
        text = f"Run the tests of this repository with `{text}` and tell me whether they pass."
        note(
            f"Using {DEFAULT_MODEL}: the house has OPENROUTER_API_KEY (use --offline for builtin/shell)."
        )

    env = _environment(opened, repo_path)
    thread = opened.threads.create("quickstart", env=env.name, model=model)
    opened.threads.post(thread.id, text)
    note(
        f"House {opened.house.name}, environment {env.name} (sandbox {env.sandbox_id} on local), thread {thread.id}."
    )

    final = _run_and_follow(opened, thread.id, json_)
    exit_code = _last_exit_code(opened.threads.entries(thread.id, limit=1_000_000))
    ok = final is not None and final.state is DispatchState.COMPLETED
    summary = {
        "house": opened.house.name,
        "env": env.name,
        "sandbox_id": env.sandbox_id,
        "thread_id": thread.id,
        "model": model,
        "state": final.state.value if final else None,
        "exit_code": exit_code,
        "remove": f"arbe env delete {env.name} --destroy-sandbox",
    }
    if json_:
        print_json(summary)
    note(
        f"Created: house {opened.house.name}, environment {env.name}, sandbox "
        f"{env.sandbox_id}, thread {thread.id}. Read it again with "
        f"`arbe thread entries read {thread.id}`; remove the environment and "
        f"its sandbox with `arbe env delete {env.name} --destroy-sandbox`."
    )
    if not ok:
        raise typer.Exit(1)
    if not use_model and exit_code != 0:
        note(f"The test command exited with {exit_code}; see its output above.")
        raise typer.Exit(1)


def _last_exit_code(entries: list[Entry]) -> int | None:
    """Return the exit code of the thread's last command, or None."""
    for entry in reversed(entries):
        if entry.kind is EntryKind.TOOL_RESULT:
            code = entry.data.get("exit_code")
            return code if isinstance(code, int) else None
    return None


def _environment(opened: object, repo_path: Path):  # type: ignore[no-untyped-def]
    from arbe_entry.app import Arbe

    assert isinstance(opened, Arbe)
    try:
        env = opened.environments.get(ENV_NAME)
    except EnvironmentNotFound:
        env = None
    if env is not None and env.allowed_repos[:1] == (str(repo_path),):
        note(f"Reusing environment {ENV_NAME}.")
        return env
    if env is not None:
        # quickstart owns this environment, so it is replaced, not reused on
        # another repository.
        note(
            f"Replacing environment {ENV_NAME} (it was on "
            f"{', '.join(env.allowed_repos) or 'no repo'})."
        )
        opened.environments.delete(ENV_NAME, destroy_sandbox=True)
    note(f"Creating environment {ENV_NAME} on the local runtime with {repo_path}...")
    env, _ = opened.environments.create(
        ENV_NAME, runtime="local", repos=[str(repo_path)]
    )
    return env


def _run_and_follow(opened: object, thread_id: str, json_: bool) -> Dispatch | None:
    from arbe_entry.app import Arbe

    assert isinstance(opened, Arbe)
    worker = opened.worker()
    thread = threading.Thread(target=worker.run, kwargs={"once": True}, daemon=True)
    thread.start()
    final: Dispatch | None = None
    for item in opened.threads.follow(thread_id):
        if isinstance(item, Entry):
            if json_:
                print_json(entry_dict(item))
            else:
                _print_entry(item)
        else:
            final = item
    thread.join(timeout=5)
    return final
