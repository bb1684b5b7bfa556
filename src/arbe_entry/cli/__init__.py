"""The `arbe` command line."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from typing import Annotated

import typer

from arbe_core.errors import ArbeError
from arbe_entry.cli import (
    agent,
    env,
    house,
    misc,
    quickstart,
    sandbox,
    secret,
    serve,
    thread,
)
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
app.command("quickstart")(quickstart.quickstart)
app.command("serve")(serve.serve)


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
    if not verbose:
        # The CLI prints; it does not log. Without this handler Python's
        # last-resort handler would print library warnings bare on stderr.
        logging.getLogger("arbe").addHandler(logging.NullHandler())
    else:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


#: Root options that take a value, so the word after them is not a command.
_ROOT_VALUE_OPTIONS = ("--house", "--home")


def _app_for(args: list[str]) -> typer.Typer:
    """Return the app with only the top-level command or group that `args` names.

    Typer builds the click command of every registered function before it
    parses the command line. For all groups, that took longer than running
    `arbe secret list` itself (benchmarks/cli_startup.py times both). Without
    a known name (`arbe --help`, a typo, shell completion) this returns the
    whole app, so help and usage errors still list every command.
    """
    if any(name.startswith("_ARBE_COMPLETE") for name in os.environ):
        return app
    name = _command_name(args)
    groups = [g for g in app.registered_groups if g.name == name]
    commands = [c for c in app.registered_commands if c.name == name]
    if name is None or not (groups or commands):
        return app
    trimmed = copy.copy(app)
    trimmed.registered_groups = groups
    trimmed.registered_commands = commands
    return trimmed


def _command_name(args: list[str]) -> str | None:
    """Return the first word of `args` that is not a root option or its value."""
    after_option = False
    for arg in args:
        if after_option:
            after_option = False
        elif arg in _ROOT_VALUE_OPTIONS:
            after_option = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn arbe's errors into one sentence and an exit code.

    Exit codes: 0 success, 1 an arbe error or an internal one, 2 a usage
    error (an argument that is not UTF-8 included), 130 interrupted.
    """
    try:
        # typer 0.28 raises the exceptions of its own copy of click, which
        # are not click's; older typer versions raise click's.
        from typer._click.exceptions import ClickException
    except ImportError:
        from click import ClickException

    args = sys.argv[1:] if argv is None else argv
    undecodable = [n for n, a in enumerate(args, 1) if not _is_utf8(a)]
    if undecodable:
        # Python hands undecodable argument bytes over as lone surrogates,
        # which no database, file name or message can store.
        sys.stderr.write(
            f"error: argument {undecodable[0]} is not valid UTF-8 text; "
            "arbe takes UTF-8 arguments only.\n"
        )
        sys.exit(2)
    verbose = "-v" in args or "--verbose" in args
    command = typer.main.get_command(_app_for(args))
    try:
        code = command.main(args=args, prog_name="arbe", standalone_mode=False)
    except ArbeError as exc:
        _report(exc.message, exc.to_dict(), args)
        if verbose:
            raise
        sys.exit(1)
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        sys.exit(130)
    except ClickException as exc:
        exc.show()
        if _wants_json(args):
            error = {"error": "usage", "type": type(exc).__name__}
            sys.stdout.write(json.dumps({**error, "message": exc.format_message()}))
            sys.stdout.write("\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    except Exception as exc:
        # A bug, not a user error. Only the type is shown, because the text
        # of an unexpected exception may quote anything, a secret included.
        message = (
            f"internal error ({type(exc).__name__}); run the command again with "
            "-v to see the traceback, and report it."
        )
        _report(message, {"error": "internal", "type": type(exc).__name__}, args)
        if verbose:
            raise
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _report(message: str, data: dict[str, object], args: list[str]) -> None:
    sys.stderr.write(f"error: {message}\n")
    if _wants_json(args):
        sys.stdout.write(json.dumps(data) + "\n")
