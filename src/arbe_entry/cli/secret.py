"""`arbe secret`: set, rotate, view, list, history, rollback and delete."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from arbe_core.errors import InvalidInput
from arbe_core.models import Secret, SecretAudience
from arbe_core.names import MAX_SECRET_BYTES, check_secret_name
from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    print_fields,
    print_json,
    print_table,
)

app = typer.Typer(
    help="Secrets of the house: sealed at rest, read from stdin, never shown.",
    no_args_is_help=True,
)

NameArgument = Annotated[
    str, typer.Argument(help="Secret name: [A-Z_][A-Z0-9_]*, at most 128 characters.")
]


def _secret_dict(secret: Secret) -> dict[str, object]:
    return {
        "name": secret.name,
        "audience": secret.audience.value,
        "shared": secret.shared,
        "owner": secret.owner,
        "version": secret.version,
        "created_at": secret.created_at.isoformat(),
        "updated_at": secret.updated_at.isoformat(),
    }


def read_value(name: str) -> str:
    """Read a secret value from stdin, or prompt without echo on a terminal.

    One trailing `\\n` or `\\r\\n` is removed; every other byte is kept.
    """
    if sys.stdin is None:
        raise InvalidInput(f"No stdin to read the value of {name!r} from.")
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"Value for {name}: ")

    data = sys.stdin.buffer.read(MAX_SECRET_BYTES + 3)
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if len(data) > MAX_SECRET_BYTES:
        raise InvalidInput(
            f"The value for secret {name!r} is over the limit of "
            f"{MAX_SECRET_BYTES} bytes (64 KiB)."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"The value for secret {name!r} on stdin is not UTF-8 text; "
            "secrets are text, so encode binary values (for example with base64)."
        ) from None


@app.command("set")
def set_(
    ctx: typer.Context,
    name: NameArgument,
    audience: Annotated[
        SecretAudience | None,
        typer.Option(
            help="environment: may be bound into sandboxes (the default for a new "
            "secret); capability: for arbe itself, never enters a sandbox."
        ),
    ] = None,
    shared: Annotated[
        bool | None,
        typer.Option(
            "--shared/--private",
            help="Let every bot of the house use it (--shared) or only its owner.",
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create or rotate a secret; the value is read from stdin only.

    Example: printf '%s' "$TOKEN" | arbe secret set GITHUB_TOKEN --shared
    """
    check_secret_name(name)
    value = read_value(name)
    secret = arbe(ctx).secrets.set(name, value, audience=audience, shared=shared)
    if json_:
        print_json(_secret_dict(secret))
    else:
        verb = "Created" if secret.version == 1 else "Rotated"
        typer.echo(f"{verb} {secret.name} (version {secret.version}).")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the house's secrets (names and metadata, never values)."""
    secrets = arbe(ctx).secrets.list()
    if json_:
        print_json([_secret_dict(s) for s in secrets])
        return
    print_table(
        ["name", "audience", "shared", "version", "updated"],
        [
            [s.name, s.audience.value, s.shared, s.version, s.updated_at]
            for s in secrets
        ],
    )


alias(app, ["ls", "l"], list_)


@app.command("view")
def view(ctx: typer.Context, name: NameArgument, json_: JsonOption = False) -> None:
    """Show a secret's metadata; the value is never shown."""
    secret = arbe(ctx).secrets.view(name)
    if json_:
        print_json(_secret_dict(secret))
        return
    print_fields(
        [
            ("name", secret.name),
            ("audience", secret.audience.value),
            ("shared", secret.shared),
            ("owner", secret.owner),
            ("version", secret.version),
            ("created", secret.created_at),
            ("updated", secret.updated_at),
        ]
    )


@app.command("delete")
def delete(ctx: typer.Context, name: NameArgument, json_: JsonOption = False) -> None:
    """Delete a secret and every kept version of it."""
    secret = arbe(ctx).secrets.delete(name)
    if json_:
        print_json({**_secret_dict(secret), "deleted": True})
    else:
        typer.echo(f"Deleted {secret.name} and its history.")


alias(app, ["rm", "del"], delete)


@app.command("history")
def history(ctx: typer.Context, name: NameArgument, json_: JsonOption = False) -> None:
    """List the kept versions of a secret (the last 10), newest first."""
    versions = arbe(ctx).secrets.history(name)
    if json_:
        print_json(
            [
                {
                    "name": v.name,
                    "version": v.version,
                    "audience": v.audience.value,
                    "shared": v.shared,
                    "created_at": v.created_at.isoformat(),
                    "current": v.current,
                }
                for v in versions
            ]
        )
        return
    print_table(
        ["version", "current", "audience", "shared", "created"],
        [
            [v.version, v.current, v.audience.value, v.shared, v.created_at]
            for v in versions
        ],
    )


@app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: NameArgument,
    version: Annotated[int, typer.Argument(help="A kept version (see `history`).")],
    json_: JsonOption = False,
) -> None:
    """Make a kept version's value current again, as a new version."""
    secret = arbe(ctx).secrets.rollback(name, version)
    if json_:
        print_json({**_secret_dict(secret), "rolled_back_to": version})
    else:
        typer.echo(
            f"Rolled {secret.name} back to the value of version {version} "
            f"(now version {secret.version})."
        )
