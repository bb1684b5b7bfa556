"""The command that prepares a new sprite's work directory, and its errors."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit, urlunsplit

from arbe_core.errors import ArbeError, OperationTimedOut, Unavailable
from arbe_core.runtime import ExecResult

__all__ = ["CLONE_TIMEOUT_S", "clone_argv", "clone_error"]

CLONE_TIMEOUT_S: Final = 600.0
#: Makes the work directory `$1` and clones `$2` into it when `$2` is not
#: empty. The path and URL arrive as arguments, so the shell never parses
#: them as code.
_SCRIPT: Final = (
    'mkdir -p -- "$1" && if [ -n "$2" ]; then git clone --quiet -- "$2" "$1"; fi'
)
#: Characters of git's error output kept in the message.
_MAX_GIT_ERROR: Final = 400


def clone_argv(workdir: str, repo: str | None) -> list[str]:
    """Return the argv that makes `workdir` and clones `repo` into it."""
    return ["bash", "-c", _SCRIPT, "arbe-provision", workdir, repo or ""]


def clone_error(sprite: str, repo: str | None, result: ExecResult) -> ArbeError:
    """Return the error for a failed `clone_argv` run.

    The message states that the sprite was destroyed, so the caller must
    destroy it. The repository URL's password, if any, is masked.
    """
    step = f"cloning {_redact(repo)!r}" if repo else "making the work directory"
    if result.timed_out:
        return OperationTimedOut(
            f"Sprite {sprite!r} was destroyed because {step} took over "
            f"{CLONE_TIMEOUT_S:g} s. Try again, or use a smaller repository."
        )
    if result.exit_code is None:
        return Unavailable(
            f"Sprite {sprite!r} was destroyed because the connection closed "
            f"while {step}. Try again."
        )

    output = result.stderr.strip()[-_MAX_GIT_ERROR:]
    output = _hide_password(" ".join(output.split()), repo)
    return Unavailable(
        f"Sprite {sprite!r} was destroyed because {step} failed with exit "
        f"status {result.exit_code}: {output}. Check the URL and that the sprite "
        f"can reach it."
    )


def _redact(url: str | None) -> str:
    """Return `url` with its password masked."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname or ''}"
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparsable repository URL>"
    return urlunsplit(parts._replace(netloc=netloc))


def _hide_password(text: str, url: str | None) -> str:
    try:
        password = urlsplit(url).password if url else None
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text
