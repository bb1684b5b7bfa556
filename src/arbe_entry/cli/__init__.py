"""The `arbe` command line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer

from arbe_core.errors import ArbeError
from arbe_entry.cli import agent, env, house, misc, sandbox, secret, thread
from arbe_entry.cli._common import State
from arbe_entry.config import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="arbe",
    help="arbe: the runtime layer for AI coding bots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(house.app, name="house")
app.add_typer(secret.app, name="secret")
app.add_typer(env.app, name="env")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(agent.app, name="agent")
app.add_typer(thread.app, name="thread")
app.add_typer(misc.audit_app, name="audit")
app.command("worker")(misc.worker)
app.command("plugins")(misc.plugins)


def _version(value: bool) -> None:
    if value:
        from arbe_entry import __version__

        typer.echo(f"arbe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    house_: Annotated[
        str | None,
        typer.Option("--house", envvar="ARBE_HOUSE", help="The house to work on."),
    ] = None,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            envvar="ARBE_HOME",
            help="The arbe home directory (default: the user data directory).",
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option("-v", "--verbose", count=True, help="Log more; -vv for debug."),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """arbe: sealed secrets, environments, sandboxes and threads for coding bots."""
    settings = Settings.from_env(home=home, house=house_)
    ctx.obj = State(settings, verbose)
    if verbose:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn arbe's errors into one sentence and an exit code.

    Exit codes: 0 success, 1 an arbe error, 2 a usage error, 130 interrupted.
    """
    import click

    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="arbe", standalone_mode=False)
    except ArbeError as exc:
        _report(exc.message, exc.to_dict(), args)
        if "-v" in args or "--verbose" in args:
            raise
        sys.exit(1)
    except click.exceptions.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _report(message: str, data: dict[str, object], args: list[str]) -> None:
    sys.stderr.write(f"error: {message}\n")
    if _wants_json(args):
        sys.stdout.write(json.dumps(data) + "\n")
