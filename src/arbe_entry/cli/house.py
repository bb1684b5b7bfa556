"""`arbe house`: create, list, choose and inspect houses."""

from __future__ import annotations

import sys

import typer

from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    print_fields,
    print_json,
    print_table,
)

app = typer.Typer(
    help="Houses: one person's or one team's workspace.", no_args_is_help=True
)
token_app = typer.Typer(
    help="The API token that `arbe serve` asks for off the loopback interface.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

#: The home-wide setting that contains the SHA-256 of the API token, not the token.
API_TOKEN_SETTING = "api_token_sha256"  # noqa: S105 - a setting key, not a secret


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(
        help="House name: lower-case letters, digits, '-', '_'."
    ),
    json_: JsonOption = False,
) -> None:
    """Create a house with its own data key."""
    house = arbe(ctx).houses.create(name)
    if json_:
        print_json(house)
    else:
        typer.echo(f"Created house {house.name} ({house.id}).")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the houses of this arbe home; `*` marks the default."""
    service = arbe(ctx).houses
    houses = service.list()
    default = service.default_name()
    if json_:
        print_json([{**_house(h), "default": h.name == default} for h in houses])
        return
    print_table(
        ["", "name", "id", "created"],
        [
            ["*" if h.name == default else "", h.name, h.id, h.created_at]
            for h in houses
        ],
    )


alias(app, ["ls", "l"], list_)


@app.command("use")
def use(
    ctx: typer.Context,
    name: str = typer.Argument(help="The house to make the default."),
    json_: JsonOption = False,
) -> None:
    """Make a house the default for later commands."""
    house = arbe(ctx).houses.use(name)
    if json_:
        print_json({**_house(house), "default": True})
    else:
        typer.echo(f"Default house is now {house.name}.")


@app.command("view")
def view(
    ctx: typer.Context,
    name: str = typer.Argument(None, help="The house; the current one when absent."),
    json_: JsonOption = False,
) -> None:
    """Show a house: id, creation time and active environment."""
    opened = arbe(ctx)
    house = opened.houses.get(name) if name else opened.house
    if json_:
        print_json(_house(house))
        return
    print_fields(
        [
            ("name", house.name),
            ("id", house.id),
            ("created", house.created_at),
            ("active env", house.active_env),
        ]
    )


@app.command("rotate-key")
def rotate_key(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Rewrap every house's data key under a new master key.

    Values are not decrypted. With a key file, the new key replaces it
    atomically. With ARBE_MASTER_KEY, the new key is printed once on stdout,
    and you must put it in the variable yourself.
    """
    from arbe_entry.keys import rotate_master_key

    result = rotate_master_key(arbe(ctx))
    if json_:
        print_json(result)
        return
    typer.echo(f"Rewrapped {result['houses']} house key(s) under a new master key.")
    if result.get("new_key"):
        typer.echo(f"New ARBE_MASTER_KEY: {result['new_key']}")


def hash_api_token(token: str) -> str:
    """Return the hex SHA-256 of an API token, as stored in the home.

    One unsalted hash is enough because the token is 32 random bytes, too
    many to find from the hash by guessing.
    """
    import hashlib

    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@token_app.command("create")
def token_create(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Create the API token for `arbe serve` and print it once.

    Only its hash is stored, so a lost token cannot be shown again. A new
    token replaces the old one, and a running server then rejects the old
    token and its login sessions.
    """
    import secrets

    opened = arbe(ctx)
    house = opened.house
    token = "arbe_" + secrets.token_urlsafe(32)
    with opened.deps.storage.unit_of_work() as uow:
        uow.houses.set_setting(API_TOKEN_SETTING, hash_api_token(token))
        opened.deps.audit(uow, house.id, opened.actor, "api_token.create")
        uow.commit()
    if json_:
        print_json({"token": token})
        return
    typer.echo(token)
    sys.stderr.write(
        "This is the only time the token is shown; store it now. "
        "Send it as `Authorization: Bearer TOKEN`, or log in with it at /login.\n"
    )


def _house(house: object) -> dict[str, object]:
    from arbe_entry.cli._common import to_jsonable

    data = to_jsonable(house)
    assert isinstance(data, dict)
    return data
