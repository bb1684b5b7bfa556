"""Render the CLI reference page from the Typer app itself.

`python -m arbe_entry.cli._reference > docs/cli.md` writes the page; a test
checks that the committed page matches, so the docs cannot drift from
`arbe --help`.
"""

from __future__ import annotations

import click
import typer

HEADER = """# CLI reference

Generated from `arbe --help` by `python -m arbe_entry.cli._reference`; a test
keeps this page and the CLI in step. Every command takes `--json`, which
prints one JSON document on stdout (`thread entries read --json` prints one
per entry, one per line). Errors print one sentence on stderr and exit 1;
usage errors exit 2.
"""


def _walk(
    command: click.Command, path: list[str]
) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            sub = command.commands[name]
            if sub.hidden:
                continue
            found.extend(_walk(sub, [*path, name]))
    return found


def render() -> str:
    """Return the reference page as Markdown: one section per command."""
    from arbe_entry.cli import app

    root = typer.main.get_command(app)
    parts = [HEADER]
    for path, command in _walk(root, ["arbe"]):
        with click.Context(
            command, info_name=" ".join(path), terminal_width=88, max_content_width=88
        ) as ctx:
            text = command.get_help(ctx)
        level = "#" * min(len(path) + 1, 4)
        parts.append(f"{level} `{' '.join(path)}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
