"""`arbe worker`, `arbe plugins` and `arbe audit`."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import attrs
import typer

from arbe_entry.app import worker_pool_size
from arbe_entry.cli._common import JsonOption, arbe, print_json, print_table, state

audit_app = typer.Typer(help="The append-only audit trail.", no_args_is_help=True)


def worker(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Exit when no dispatch is left.")
    ] = False,
    concurrency: Annotated[
        int, typer.Option(min=1, max=256, help="Dispatches run at the same time.")
    ] = 1,
    lease: Annotated[
        float, typer.Option(min=1.0, help="Seconds a claim lasts without renewal.")
    ] = 30.0,
    json_: JsonOption = False,
) -> None:
    """Claim the house's queued dispatches and run them."""
    # Size the PostgreSQL pool for the dispatch and heartbeat threads before
    # the house, and with it the storage, is opened.
    cli_state = state(ctx)
    pool_size = worker_pool_size(concurrency)
    cli_state.settings = attrs.evolve(cli_state.settings, pool_size=pool_size)
    opened = cli_state.arbe
    # A worker with the wrong master key must fail before it claims anything.
    opened.houses.check_master_key()
    runner = opened.worker(concurrency=concurrency, lease_s=lease)

    def stop(signum: int, frame: object) -> None:
        sys.stderr.write("Stopping after the running dispatches...\n")
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    count = runner.run(once=once)
    if json_:
        print_json({"owner": runner.owner, "dispatches": count})
    else:
        sys.stderr.write(f"Worker {runner.owner} ran {count} dispatch(es).\n")


def plugins(ctx: typer.Context, json_: JsonOption = False) -> None:
    """List the loaded plugins and the runtimes and providers each registers."""
    loaded = arbe(ctx).plugins
    described = loaded.describe()
    if json_:
        print_json(
            {
                "plugins": described,
                "runtimes": [
                    {
                        "name": r.name,
                        "plugin": r.plugin,
                        "credential": r.credential,
                        "description": r.description,
                    }
                    for r in sorted(loaded.runtimes.values(), key=lambda r: r.name)
                ],
                "providers": [
                    {
                        "name": p.name,
                        "plugin": p.plugin,
                        "credential": p.credential,
                        "description": p.description,
                    }
                    for p in sorted(loaded.providers.values(), key=lambda p: p.name)
                ],
            }
        )
        return
    print_table(
        ["plugin", "runtimes", "providers"],
        [
            [
                d["plugin"],
                ", ".join(
                    r.name for r in loaded.runtimes.values() if r.plugin == d["plugin"]
                ),
                ", ".join(
                    p.name for p in loaded.providers.values() if p.plugin == d["plugin"]
                ),
            ]
            for d in described
        ],
    )


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    secret: Annotated[
        str | None, typer.Option(help="Events of this secret and what used it.")
    ] = None,
    env: Annotated[str | None, typer.Option(help="Events of this environment.")] = None,
    thread: Annotated[str | None, typer.Option(help="Events of this thread.")] = None,
    json_: JsonOption = False,
) -> None:
    """List audit events, oldest first, filtered by secret, environment or thread."""
    from arbe_entry.audit import follow_chain

    events = follow_chain(arbe(ctx), secret=secret, env=env, thread_id=thread)
    if json_:
        print_json(
            [
                {
                    "id": e.id,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "secret": e.secret,
                    "env": e.env,
                    "sandbox_id": e.sandbox_id,
                    "thread_id": e.thread_id,
                    "details": e.details,
                }
                for e in events
            ]
        )
        return
    print_table(
        ["at", "actor", "action", "secret", "env", "sandbox", "thread"],
        [
            [e.at, e.actor, e.action, e.secret, e.env, e.sandbox_id, e.thread_id]
            for e in events
        ],
    )
