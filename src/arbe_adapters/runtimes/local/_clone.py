"""Clone a repository into a new sandbox with `git clone`."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

from arbe_adapters.runtimes.local._exec import run_in_group
from arbe_core.errors import InvalidInput, OperationTimedOut, Unavailable

#: Seconds a `git clone` in `provision` may take before it is killed.
CLONE_TIMEOUT_S = 900.0

#: The user and password part of a URL such as `https://user:token@host/x`.
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
#: Phrases in git's error output that mean the repository does not exist.
_MISSING_REPO_PHRASES = (
    "does not exist",
    "not found",
    "does not appear to be a git repository",
    "not a git repository",
)


def check_repo(repo: str) -> None:
    """Raise `InvalidInput` unless `repo` could be a URL or path for git."""
    if not repo.strip() or any(c in repo for c in "\0\n\r"):
        raise InvalidInput(
            f"Invalid repository {mask_userinfo(repo)!r}: give a URL or path "
            f"that git can clone, such as https://host/owner/repo.git."
        )


def mask_userinfo(text: str) -> str:
    """Replace the user and password in URLs with `***`, since they may be tokens."""
    return _URL_USERINFO.sub("***@", text)


def clone_repo(
    repo: str,
    dest: Path,
    *,
    git: str,
    path: str,
    ssh_auth_sock: str | None,
    sandbox_id: str,
) -> None:
    """Clone `repo` into `dest`, which must not exist yet.

    `repo` goes after `--`, so a value that starts with `-` is read as a path
    and never as a git option.

    Args:
        repo: any URL or path that git accepts.
        dest: the directory to create.
        git: the path of the git executable.
        path: the PATH that git runs with.
        ssh_auth_sock: the ssh agent socket to pass on, or None.
        sandbox_id: the sandbox being made, for messages.

    Raises:
        InvalidInput: the repository was not found or is not readable.
        Unavailable: the clone failed for another reason, such as the network.
        OperationTimedOut: the clone took longer than `CLONE_TIMEOUT_S`.
    """
    outcome = run_in_group(
        [git, "clone", "--quiet", "--", repo, str(dest)],
        cwd=dest.parent,
        env=_git_env(path, ssh_auth_sock),
        timeout=CLONE_TIMEOUT_S,
    )
    masked_repo = mask_userinfo(repo)
    if outcome.timed_out:
        raise OperationTimedOut(
            f"Cloning {masked_repo!r} into sandbox {sandbox_id!r} timed out after "
            f"{CLONE_TIMEOUT_S:.0f} s. Check that the repository is reachable."
        )
    if outcome.exit_code != 0:
        raise _clone_error(masked_repo, outcome.stderr.text())


def _git_env(path: str, ssh_auth_sock: str | None) -> dict[str, str]:
    """Return the environment of `git clone`: the user's git setup, no more.

    HOME is the user's home directory, so git finds the user's config and
    credential helpers. Terminal prompts are off, so a missing credential fails
    the clone at once instead of blocking it.
    """
    env = {
        "PATH": path,
        "HOME": pwd.getpwuid(os.getuid()).pw_dir,
        "LANG": "C.UTF-8",
        "GIT_TERMINAL_PROMPT": "0",
    }
    if ssh_auth_sock:
        env["SSH_AUTH_SOCK"] = ssh_auth_sock
    return env


def _clone_error(masked_repo: str, git_output: str) -> InvalidInput | Unavailable:
    """Map a failed `git clone` to an arbe error that quotes git's last line."""
    lines = [line.strip() for line in git_output.splitlines() if line.strip()]
    reason = mask_userinfo(lines[-1] if lines else "no error output")[:300]
    if any(phrase in reason.lower() for phrase in _MISSING_REPO_PHRASES):
        return InvalidInput(
            f"Cannot clone {masked_repo!r}: the repository was not found or is not "
            f"readable ({reason}). Check the URL or path."
        )
    return Unavailable(
        f"Cloning {masked_repo!r} failed ({reason}). Check that the repository is "
        f"reachable and that your git credentials can read it."
    )
