"""`arbe agent`: the bots of the house and their models."""

from __future__ import annotations

from typing import Annotated

import typer

from arbe_core.models import Agent
from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    print_fields,
    print_json,
    print_table,
)

app = typer.Typer(help="Bots: each replies with its own model.", no_args_is_help=True)

NameArgument = Annotated[str, typer.Argument(help="Bot name.")]


def agent_dict(agent: Agent) -> dict[str, object]:
    """Return the JSON shape of a bot."""
    return {
        "name": agent.name,
        "model": agent.model,
        "instructions": agent.instructions,
        "created_at": agent.created_at.isoformat(),
    }


@app.command("create")
def create(
    ctx: typer.Context,
    name: NameArgument,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model ref PROVIDER/MODEL (default openrouter/anthropic/claude-haiku-4.5)."
        ),
    ] = None,
    instructions: Annotated[
        str | None, typer.Option(help="The bot's system prompt.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create a bot."""
    agent = arbe(ctx).agents.create(name, model=model, instructions=instructions)
    if json_:
        print_json(agent_dict(agent))
    else:
        typer.echo(f"Created bot {agent.name} on {agent.model}.")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the bots of the house, the default bot `arbe` included."""
    agents = arbe(ctx).agents.list()
    if json_:
        print_json([agent_dict(a) for a in agents])
        return
    print_table(["name", "model"], [[a.name, a.model] for a in agents])


alias(app, ["ls", "l"], list_)


@app.command("view")
def view(ctx: typer.Context, name: NameArgument, json_: JsonOption = False) -> None:
    """Show a bot."""
    agent = arbe(ctx).agents.get(name)
    if json_:
        print_json(agent_dict(agent))
        return
    print_fields(
        [
            ("name", agent.name),
            ("model", agent.model),
            ("instructions", agent.instructions),
        ]
    )


@app.command("delete")
def delete(ctx: typer.Context, name: NameArgument, json_: JsonOption = False) -> None:
    """Delete a bot (not the default bot)."""
    agent = arbe(ctx).agents.delete(name)
    if json_:
        print_json({**agent_dict(agent), "deleted": True})
    else:
        typer.echo(f"Deleted bot {agent.name}.")


alias(app, ["rm", "del"], delete)
