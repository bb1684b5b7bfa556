"""`arbe sandbox`: the house's sandboxes on a runtime (bare: the sprite runtime)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from arbe_core.errors import InvalidInput, SandboxNotFound
from arbe_core.ports import Runtime
from arbe_core.runtime import (
    HOUSE_LABEL,
    THREAD_LABEL,
    Check,
    SandboxInfo,
    SandboxSpec,
    SandboxState,
)
from arbe_entry.app import Arbe
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
    """Treat `arbe sandbox ID` as `arbe sandbox view ID`.

    Options of the commands (`--runtime R`, `--json`) may also come before
    the command or ID, as in `arbe sandbox --runtime local ID`.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        leading: list[str] = []
        rest = list(args)
        while rest and (
            rest[0] in ("--runtime", "--json") or rest[0].startswith("--runtime=")
        ):
            take = 2 if rest[0] == "--runtime" and len(rest) > 1 else 1
            leading += rest[:take]
            rest = rest[take:]
        if leading and rest:
            args = [rest[0], *leading, *rest[1:]]
        return super().parse_args(ctx, args)

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


def _runtime(ctx: typer.Context, name: str) -> Runtime:
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
        ("state", _state_text(info)),
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
    runtime_ = _runtime(ctx, runtime)
    info = runtime_.stop(sandbox_id)
    _audit(ctx, "sandbox.stop", info.id, runtime)
    _report_lifecycle(runtime_, info, json_)


@app.command("start")
def start(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Start a sandbox and wait until it is started.

    A sprite wakes by itself on the next command, so for sprites this only
    reports the status.
    """
    runtime_ = _runtime(ctx, runtime)
    info = runtime_.start(sandbox_id)
    _audit(ctx, "sandbox.start", info.id, runtime)
    _report_lifecycle(runtime_, info, json_)


def _report_lifecycle(runtime_: Runtime, info: SandboxInfo, json_: bool) -> None:
    if json_:
        print_json(info.to_dict())
        return
    typer.echo(f"Sandbox {info.id} is {_state_text(info)}.")
    if not runtime_.capabilities.stop_start:
        note(
            f"Runtime {runtime_.name} has no stop or start, because its sandboxes "
            "sleep when idle and wake on the next command. Nothing was changed."
        )


def _state_text(info: SandboxInfo) -> str:
    """Return the state, with the runtime's own word for it when that differs."""
    if info.raw_state in (None, str(info.state)):
        return str(info.state)
    return f"{info.state} ({info.raw_state})"


@app.command("destroy")
def destroy(
    ctx: typer.Context,
    sandbox_id: IdArgument,
    runtime: RuntimeOption = BARE_RUNTIME,
    json_: JsonOption = False,
) -> None:
    """Destroy a sandbox; destroying one that is already gone is not an error."""
    runtime_ = _runtime(ctx, runtime)
    # The audit trail needs the id, and the user may have given a name.
    try:
        target = runtime_.get(sandbox_id).id
    except SandboxNotFound:
        target = sandbox_id
    existed = runtime_.destroy(target)
    if existed:
        _audit(ctx, "sandbox.destroy", target, runtime)
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
    invalid = InvalidInput(
        f"Invalid --older-than value {text!r}: use a whole number and a unit of "
        "s, m, h or d, such as 30m or 2d."
    )
    if unit not in units or not number.isascii() or not number.isdigit():
        raise invalid
    try:
        return timedelta(seconds=int(number) * units[unit])
    except OverflowError:
        raise invalid from None


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
    age = _parse_age(older_than)
    runtime_ = _runtime(ctx, runtime)
    leftovers = _find_leftovers(arbe(ctx), runtime, runtime_, age)

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
    if not leftovers:
        typer.echo("No leftover sandboxes.")
        return
    print_table(
        ["id", "name", "state", "created"],
        [[i.id, i.name, i.state, i.created_at] for i in leftovers],
    )
    if yes:
        typer.echo(f"Destroyed {len(destroyed)} leftover sandbox(es).")
    else:
        note(
            f"{len(leftovers)} leftover sandbox(es); run the command again with "
            "--yes to destroy them."
        )


def _find_leftovers(
    opened: Arbe, runtime: str, runtime_: Runtime, age: timedelta
) -> list[SandboxInfo]:
    """Return the house's sandboxes older than `age` that nothing uses."""
    envs = opened.environments.list()
    used = {e.sandbox_id for e in envs if e.runtime == runtime}
    with opened.deps.storage.unit_of_work(write=False) as uow:
        live_threads = {
            d.thread_id
            for e in envs
            for d in uow.dispatches.live_for_env(opened.house.id, e.name)
        }

    now = datetime.now(UTC)
    leftovers = []
    for info in runtime_.list():
        if info.id in used or info.labels.get(HOUSE_LABEL) != opened.house.id:
            continue
        if info.labels.get(THREAD_LABEL) in live_threads:
            continue
        created = _created(info)
        if created is not None and now - created < age:
            continue
        leftovers.append(info)
    return leftovers


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
        _report_checks(checks, json_, BARE_RUNTIME)
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
    typer.echo(
        f"Token accepted. {verb} sprite {info.name} ({info.id}), {_state_text(info)}."
    )


@app.command("ping")
def ping(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Sprite id or name.")] = DEFAULT_SPRITE,
    json_: JsonOption = False,
) -> None:
    """Report a sprite's status and the API call's latency.

    Exits 1 when the Sprites API cannot be reached.
    """
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
    else:
        detail = f" ({health.detail})" if health.detail else ""
        typer.echo(f"{name}: {health.state}, {health.latency_ms:.0f} ms{detail}")
    if health.state is SandboxState.UNREACHABLE:
        raise typer.Exit(1)


def _report_checks(checks: list[Check], json_: bool, runtime: str) -> None:
    failed = [c for c in checks if not c.ok]
    if json_:
        print_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        print_table(
            ["check", "result", "detail", "fix"],
            [
                [c.name, _result(c), c.detail, c.fix if _result(c) != "ok" else ""]
                for c in checks
            ],
        )
    if failed:
        note(f"{len(failed)} check(s) failed on runtime {runtime}.")


def _result(check: Check) -> str:
    if not check.ok:
        return "FAILED"
    return "warning" if check.warning else "ok"


@app.command("diagnose")
def diagnose(
    ctx: typer.Context, runtime: RuntimeOption = BARE_RUNTIME, json_: JsonOption = False
) -> None:
    """Check a runtime's credential, API and sandboxes; exit 1 on any failure."""
    checks = arbe(ctx).runtimes.get(runtime).diagnose()
    _report_checks(checks, json_, runtime)
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
    if not rows:
        typer.echo(f"Environment {name} binds no secrets.")
        return
    print_table(
        ["name", "value", "required", "status"],
        [[r["name"], r["value"], r["required"], r["status"]] for r in rows],
    )
