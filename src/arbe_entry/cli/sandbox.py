"""`arbe sandbox`: the house's sandboxes on a runtime (bare: the sprite runtime)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from arbe_core.errors import InvalidInput, SandboxNotFound
from arbe_core.runtime import HOUSE_LABEL, SandboxInfo, SandboxSpec
from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    note,
    print_fields,
    print_json,
    print_table,
)

#: Without --runtime, sandbox commands act on the legacy sprite runtime.
BARE_RUNTIME = "sprite"
DEFAULT_SPRITE = "default"


class _SandboxGroup(TyperGroup):
    """Treat `arbe sandbox ID` as `arbe sandbox view ID`."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["view", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(
    cls=_SandboxGroup,
    help=(
        "Sandboxes of the house. Without --runtime, commands act on the legacy "
        "sprite runtime. `arbe sandbox ID` shows one sandbox."
    ),
    no_args_is_help=True,
)

RuntimeOption = Annotated[
    str, typer.Option("--runtime", help="daytona, local, sprite or a plugin's runtime.")
]
IdArgument = Annotated[str, typer.Argument(help="Sandbox id or name.")]


def _runtime(ctx: typer.Context, name: str) -> Any:
    return arbe(ctx).runtimes.get(name)


def _audit(ctx: typer.Context, action: str, sandbox_id: str, runtime: str) -> None:
    opened = arbe(ctx)
    with opened.deps.storage.unit_of_work() as uow:
        opened.deps.audit(
            uow,
            opened.house.id,
            opened.actor,
            action,
            sandbox_id=sandbox_id,
            details={"runtime": runtime},
        )
        uow.commit()


@app.command("list")
def list_(
    ctx: typer.Context, runtime: RuntimeOption = BARE_RUNTIME, json_: JsonOption = False
) -> None:
    """List the house's own sandboxes on a runtime."""
    sandboxes = _runtime(ctx, runtime).list()
    if json_:
        print_json([s.to_dict() for s in sandboxes])
        return
    print_table(
        ["id", "name", "state", "env", "created"],
        [
            [s.id, s.name, s.state, s.labels.get("arbe.env"), s.created_at]
            for s in sandboxes
        ],
    )


alias(app, ["ls", "l"], list_)


def _print_info(info: SandboxInfo) -> None:
    fields: list[tuple[str, Any]] = [
        ("id", info.id),
        ("name", info.name),
        ("runtime", info.runtime),
        (
            "state",
            info.state
            if info.raw_state in (None, str(info.state))
            else f"{info.state} ({info.raw_state})",
        ),
        ("created", info.created_at),
        ("workdir", info.workdir),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items()))),
    ]
    fields.extend((str(k), v) for k, v in info.details.items())
    print_fields(fields)


@app.command("view", hidden=True)
def view(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Show one sandbox in detail."""
    info = _runtime(ctx, runtime).get(sandbox_id)
    if json_:
        print_json(info.to_dict())
    else:
        _print_info(info)


@app.command("stop")
def stop(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Stop a sandbox (sprites sleep by themselves; there it reports the status)."""
    info = _runtime(ctx, runtime).stop(sandbox_id)
    _audit(ctx, "sandbox.stop", info.id, runtime)
    if json_:
        print_json(info.to_dict())
    else:
        typer.echo(f"Sandbox {info.id} is {info.state}.")


@app.command("start")
def start(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Start a sandbox and wait until it is started."""
    info = _runtime(ctx, runtime).start(sandbox_id)
    _audit(ctx, "sandbox.start", info.id, runtime)
    if json_:
        print_json(info.to_dict())
    else:
        typer.echo(f"Sandbox {info.id} is {info.state}.")


@app.command("destroy")
def destroy(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Destroy a sandbox; destroying one that is already gone is not an error."""
    existed = _runtime(ctx, runtime).destroy(sandbox_id)
    if existed:
        _audit(ctx, "sandbox.destroy", sandbox_id, runtime)
    if json_:
        print_json(
            {
                "id": sandbox_id,
                "runtime": runtime,
                "destroyed": existed,
                "already_gone": not existed,
            }
        )
    else:
        typer.echo(
            f"Destroyed sandbox {sandbox_id}."
            if existed
            else f"Sandbox {sandbox_id} was already gone."
        )


alias(app, ["rm", "del"], destroy)


def _parse_age(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        raise InvalidInput(
            f"Invalid age {text!r}: use a number and s, m, h or d, such as 1h."
        )
    return timedelta(seconds=int(number) * units[unit])


@app.command("gc")
def gc(
    ctx: typer.Context,
    runtime: RuntimeOption = BARE_RUNTIME,
    older_than: Annotated[
        str, typer.Option(help="Only sandboxes older than this, e.g. 30m, 1h, 2d.")
    ] = "1h",
    yes: Annotated[
        bool, typer.Option("--yes", help="Destroy them; without it, only list.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """List, then destroy, house sandboxes no environment or running dispatch uses."""
    opened = arbe(ctx)
    age = _parse_age(older_than)
    runtime_ = opened.runtimes.get(runtime)
    used = {e.sandbox_id for e in opened.environments.list() if e.runtime == runtime}
    now = datetime.now(UTC)
    with opened.deps.storage.unit_of_work(write=False) as uow:
        live_threads = {
            d.thread_id
            for e in opened.environments.list()
            for d in uow.dispatches.live_for_env(opened.house.id, e.name)
        }
    leftovers = []
    for info in runtime_.list():
        if info.id in used or info.labels.get(HOUSE_LABEL) != opened.house.id:
            continue
        if info.labels.get("arbe.thread") in live_threads:
            continue
        created = _created(info)
        if created is not None and now - created < age:
            continue
        leftovers.append(info)
    destroyed = []
    if yes:
        for info in leftovers:
            if runtime_.destroy(info.id):
                _audit(ctx, "sandbox.destroy", info.id, runtime)
            destroyed.append(info.id)
    if json_:
        print_json(
            {"leftovers": [i.to_dict() for i in leftovers], "destroyed": destroyed}
        )
        return
    print_table(
        ["id", "name", "state", "created"],
        [[i.id, i.name, i.state, i.created_at] for i in leftovers],
    )
    if not leftovers:
        typer.echo("No leftover sandboxes.")
    elif not yes:
        note(f"{len(leftovers)} leftover sandbox(es); destroy them with --yes.")


def _created(info: SandboxInfo) -> datetime | None:
    if not info.created_at:
        return None
    try:
        created = datetime.fromisoformat(info.created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


# --- Bare verbs of the legacy sprite runtime -----------------------------------


@app.command("setup")
def setup(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Check the sprite token, then find or create the house's default sprite."""
    opened = arbe(ctx)
    runtime_ = opened.runtimes.get(BARE_RUNTIME)
    checks = runtime_.diagnose()
    failed = [c for c in checks if not c.ok]
    if failed:
        _report_checks(checks, json_)
        raise typer.Exit(1)
    try:
        info = runtime_.get(DEFAULT_SPRITE)
        created = False
    except SandboxNotFound:
        info = runtime_.provision(
            SandboxSpec(labels={HOUSE_LABEL: opened.house.id}, name=DEFAULT_SPRITE)
        )
        created = True
        _audit(ctx, "sandbox.provision", info.id, BARE_RUNTIME)
    if json_:
        print_json(
            {
                "checks": [c.to_dict() for c in checks],
                "sprite": info.to_dict(),
                "created": created,
            }
        )
        return
    verb = "Created" if created else "Found"
    typer.echo(f"Token accepted. {verb} sprite {info.name} ({info.state}).")


@app.command("ping")
def ping(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Sprite id or name.")] = DEFAULT_SPRITE,
    json_: JsonOption = False,
) -> None:
    """Report a sprite's status and how long the answer took."""
    started = time.monotonic()
    health = arbe(ctx).runtimes.get(BARE_RUNTIME).ping(name)
    if json_:
        print_json(
            {
                "name": name,
                "state": str(health.state),
                "latency_ms": round(health.latency_ms, 1),
                "detail": health.detail,
            }
        )
        return
    typer.echo(
        f"{name}: {health.state} ({health.latency_ms:.0f} ms){' ' + health.detail if health.detail else ''}"
    )
    del started


def _report_checks(checks: list[Any], json_: bool) -> None:
    if json_:
        print_json(
            {"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]}
        )
        return
    print_table(
        ["check", "result", "detail", "fix"],
        [
            [c.name, "ok" if c.ok else "FAILED", c.detail, "" if c.ok else c.fix]
            for c in checks
        ],
    )


@app.command("diagnose")
def diagnose(
    ctx: typer.Context, runtime: RuntimeOption = BARE_RUNTIME, json_: JsonOption = False
) -> None:
    """Check the runtime's token, API and each sprite; exit 1 on any failure."""
    checks = arbe(ctx).runtimes.get(runtime).diagnose()
    _report_checks(checks, json_)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("env")
def env(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Environment whose command environment to show.")
    ],
    json_: JsonOption = False,
) -> None:
    """Show the variables a command in an environment's sandbox would get (values as ***)."""
    opened = arbe(ctx)
    environment = opened.environments.get(name)
    rows = []
    for binding in environment.bindings:
        found = opened.secrets.resolve(binding.name, agent="arbe")
        rows.append(
            {
                "name": binding.name,
                "value": "***" if found else None,
                "required": binding.required,
                "status": "set" if found else "missing or not shared",
            }
        )
    if json_:
        print_json(
            {
                "env": name,
                "runtime": environment.runtime,
                "sandbox_id": environment.sandbox_id,
                "variables": rows,
            }
        )
        return
    print_table(
        ["name", "value", "required", "status"],
        [[r["name"], r["value"], r["required"], r["status"]] for r in rows],
    )
