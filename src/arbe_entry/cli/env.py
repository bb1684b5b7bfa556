"""`arbe env`: environments, their bindings, the active one and diagnose."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from arbe_core.models import Environment
from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    note,
    print_fields,
    print_json,
    print_table,
    warn,
)
from arbe_entry.cli._spinner import spinner

app = typer.Typer(
    help="Environments: one sandbox, the repos a bot may use and the secrets bound in.",
    no_args_is_help=True,
)

EnvArgument = Annotated[str, typer.Argument(help="Environment name.")]
SecretArgument = Annotated[str, typer.Argument(help="Secret name to bind.")]


def env_dict(env: Environment, active: str | None) -> dict[str, object]:
    """Return the JSON shape of an environment (names only, never values)."""
    return {
        "name": env.name,
        "runtime": env.runtime,
        "sandbox_id": env.sandbox_id,
        "allowed_repos": list(env.allowed_repos),
        "bindings": [{"name": b.name, "required": b.required} for b in env.bindings],
        "auto_stop_minutes": env.auto_stop_minutes,
        "active": env.name == active,
        "created_at": env.created_at.isoformat(),
        "updated_at": env.updated_at.isoformat(),
    }


@app.command("list")
def list_(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List environments; `*` marks the active one."""
    service = arbe(ctx).environments
    envs = service.list()
    active = service.active()
    if json_:
        print_json([env_dict(e, active) for e in envs])
        return
    print_table(
        ["", "name", "runtime", "sandbox", "secrets", "repos"],
        [
            [
                "*" if e.name == active else "",
                e.name,
                e.runtime,
                e.sandbox_id,
                ", ".join(b.name + ("" if b.required else "?") for b in e.bindings),
                ", ".join(e.allowed_repos),
            ]
            for e in envs
        ],
    )


alias(app, ["ls", "l"], list_)


@app.command("view")
def view(ctx: typer.Context, name: EnvArgument, json_: JsonOption = False) -> None:
    """Show an environment: runtime, sandbox, repos and bindings."""
    service = arbe(ctx).environments
    env = service.get(name)
    active = service.active()
    if json_:
        print_json(env_dict(env, active))
        return
    bindings = [
        f"{b.name} ({'required' if b.required else 'optional'})" for b in env.bindings
    ]
    print_fields(
        [
            ("name", env.name + (" (active)" if env.name == active else "")),
            ("runtime", env.runtime),
            ("sandbox", env.sandbox_id),
            ("repos", ", ".join(env.allowed_repos) or None),
            ("secrets", ", ".join(bindings) or None),
            (
                "auto-stop",
                f"{env.auto_stop_minutes} min" if env.auto_stop_minutes else None,
            ),
            ("created", env.created_at),
        ]
    )


@app.command("create")
def create(
    ctx: typer.Context,
    name: EnvArgument,
    sandbox: Annotated[
        str | None,
        typer.Option(
            help="Bind this existing sandbox (id or name); an unknown name is provisioned."
        ),
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="The runtime of the sandbox.")
    ] = "daytona",
    repo: Annotated[
        list[str] | None,
        typer.Option(
            "--repo", help="A repo a bot may work on; the first is cloned. Repeatable."
        ),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", help="Bind a required secret by name. Repeatable."),
    ] = None,
    optional_secret: Annotated[
        list[str] | None,
        typer.Option("--optional-secret", help="Bind an optional secret. Repeatable."),
    ] = None,
    auto_stop: Annotated[
        int | None,
        typer.Option(
            help="Minutes of idleness before the sandbox stops (runtime default 15)."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create an environment and provision (or bind) its sandbox."""
    service = arbe(ctx).environments
    with contextlib.ExitStack() as stack:
        # The spinner starts when provisioning does, so an invalid input
        # prints only its error on stderr.
        update: list[Callable[[str], None]] = []

        def progress(message: str) -> None:
            if not update:
                update.append(stack.enter_context(spinner(message)))
            else:
                update[0](message)

        env, warnings = service.create(
            name,
            runtime=runtime,
            sandbox=sandbox,
            repos=[_absolute_if_local(r) for r in repo or []],
            secrets=secret or [],
            optional_secrets=optional_secret or [],
            auto_stop_minutes=auto_stop,
            progress=progress,
        )
    for message in warnings:
        warn(message)
    active = service.active()
    if json_:
        print_json({**env_dict(env, active), "warnings": warnings})
        return
    typer.echo(
        f"Created environment {env.name} with sandbox {env.sandbox_id} on {env.runtime}."
    )
    if active == env.name:
        note(f"{env.name} is the active environment; `thread create` uses it.")


def _absolute_if_local(repo: str) -> str:
    """Return an existing local path as an absolute path, anything else unchanged.

    A relative path would resolve against the working directory of whichever
    process clones it later, such as a worker running `delegate_task`.
    """
    if "://" in repo:
        return repo
    path = Path(repo).expanduser()
    return str(path.resolve()) if path.exists() else repo


@app.command("bind-secret")
def bind_secret(
    ctx: typer.Context,
    env: EnvArgument,
    name: SecretArgument,
    optional: Annotated[
        bool,
        typer.Option("--optional", help="Bind as optional (skipped when missing)."),
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Bind a secret by name; values resolve at dispatch."""
    service = arbe(ctx).environments
    updated, warnings = service.bind(env, name, required=not optional)
    for message in warnings:
        warn(message)
    if json_:
        print_json({**env_dict(updated, service.active()), "warnings": warnings})
    else:
        kind = "optional" if optional else "required"
        typer.echo(f"Bound {name} to {env} ({kind}).")


@app.command("unbind-secret")
def unbind_secret(
    ctx: typer.Context,
    env: EnvArgument,
    name: SecretArgument,
    json_: JsonOption = False,
) -> None:
    """Remove a secret's binding from an environment."""
    service = arbe(ctx).environments
    updated = service.unbind(env, name)
    if json_:
        print_json(env_dict(updated, service.active()))
    else:
        typer.echo(f"Unbound {name} from {env}.")


@app.command("use")
def use(ctx: typer.Context, name: EnvArgument, json_: JsonOption = False) -> None:
    """Make an environment the active one; `thread create` uses it by default."""
    service = arbe(ctx).environments
    env = service.use(name)
    if json_:
        print_json(env_dict(env, env.name))
    else:
        typer.echo(f"Active environment is now {env.name}.")


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: EnvArgument,
    destroy_sandbox: Annotated[
        bool, typer.Option("--destroy-sandbox", help="Destroy its sandbox too.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Delete an environment; its sandbox is kept unless --destroy-sandbox."""
    env = arbe(ctx).environments.delete(name, destroy_sandbox=destroy_sandbox)
    if json_:
        print_json(
            {
                **env_dict(env, None),
                "deleted": True,
                "sandbox_destroyed": destroy_sandbox,
            }
        )
    else:
        kept = "destroyed" if destroy_sandbox else "kept"
        typer.echo(f"Deleted environment {env.name}; sandbox {env.sandbox_id} {kept}.")


alias(app, ["rm", "del"], delete)


@app.command("diagnose")
def diagnose(
    ctx: typer.Context,
    name: EnvArgument,
    model: Annotated[
        str | None,
        typer.Option(
            help="Check this model ref's key instead of the default bot's model, "
            "e.g. builtin/shell."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Run the dispatch preflight: bindings, credentials, model key, sandbox."""
    opened = arbe(ctx)
    if model is not None:
        opened.agents.check_model(model)
    checks = opened.environments.diagnose(name, model=model)
    failed = [c for c in checks if not c.ok]
    if json_:
        print_json(
            {"env": name, "ok": not failed, "checks": [c.to_dict() for c in checks]}
        )
    else:
        print_table(
            ["check", "result", "detail", "fix"],
            [
                [
                    c.name,
                    "ok"
                    if c.ok and not c.warning
                    else ("warning" if c.ok else "FAILED"),
                    c.detail,
                    c.fix if (not c.ok or c.warning) else "",
                ]
                for c in checks
            ],
        )
        if failed:
            sys.stderr.write(f"{len(failed)} check(s) failed for environment {name}.\n")
    if failed:
        raise typer.Exit(1)
