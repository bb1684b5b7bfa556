"""`arbe thread`: conversations, their entries and dispatches."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from arbe_core.errors import InvalidInput
from arbe_core.models import Dispatch, DispatchState, Entry, EntryKind, Thread
from arbe_entry.app import Arbe
from arbe_entry.cli._common import (
    JsonOption,
    alias,
    arbe,
    print_fields,
    print_json,
    print_table,
)

app = typer.Typer(
    help="Threads: conversations that bots reply to.", no_args_is_help=True
)
entries_app = typer.Typer(help="Entries of a thread.", no_args_is_help=True)
app.add_typer(entries_app, name="entries")

ThreadArgument = Annotated[str, typer.Argument(help="Thread id (thr_...).")]


def _state(dispatch: Dispatch | None) -> str | None:
    return dispatch.state.value if dispatch is not None else None


def thread_dict(thread: Thread, dispatch: Dispatch | None = None) -> dict[str, object]:
    """Return the JSON shape of a thread."""
    return {
        "id": thread.id,
        "parent_ref": thread.parent_ref,
        "env": thread.env,
        "model": thread.model,
        "created_at": thread.created_at.isoformat(),
        "dispatch": dispatch_dict(dispatch) if dispatch else None,
    }


def dispatch_dict(dispatch: Dispatch) -> dict[str, object]:
    """Return the JSON shape of a dispatch."""
    return {
        "id": dispatch.id,
        "state": dispatch.state.value,
        "trigger_seq": dispatch.trigger_seq,
        "attempts": dispatch.attempts,
        "error": dispatch.error,
        "updated_at": dispatch.updated_at.isoformat(),
    }


def entry_dict(entry: Entry) -> dict[str, object]:
    """Return the JSON shape of an entry."""
    return {
        "id": entry.id,
        "thread_id": entry.thread_id,
        "seq": entry.seq,
        "author": entry.author,
        "kind": entry.kind.value,
        "body": entry.body,
        "data": entry.data,
        "created_at": entry.created_at.isoformat(),
    }


@app.command("create")
def create(
    ctx: typer.Context,
    parent_ref: Annotated[
        str | None, typer.Argument(help="What the thread is about, such as issue-42.")
    ] = None,
    env: Annotated[
        str | None, typer.Option(help="Environment; the active one when absent.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model ref that every bot of the thread uses, e.g. builtin/shell."
        ),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Create a thread and print only its id."""
    thread = arbe(ctx).threads.create(parent_ref, env=env, model=model)
    if json_:
        print_json(thread_dict(thread))
    else:
        typer.echo(thread.id)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="At most this many.")
    ] = 50,
    json_: JsonOption = False,
) -> None:
    """List the newest threads first."""
    service = arbe(ctx).threads
    threads = service.list(limit)
    dispatches = {t.id: service.dispatch(t.id) for t in threads}
    if json_:
        print_json([thread_dict(t, dispatches[t.id]) for t in threads])
        return
    print_table(
        ["id", "ref", "env", "model", "state", "created"],
        [
            [
                t.id,
                t.parent_ref,
                t.env,
                t.model,
                _state(dispatches[t.id]),
                t.created_at,
            ]
            for t in threads
        ],
    )


alias(app, ["ls", "l"], list_)


@app.command("view")
def view(
    ctx: typer.Context, thread_id: ThreadArgument, json_: JsonOption = False
) -> None:
    """Show a thread and its latest dispatch."""
    service = arbe(ctx).threads
    thread = service.get(thread_id)
    dispatch = service.dispatch(thread_id)
    if json_:
        print_json(thread_dict(thread, dispatch))
        return
    print_fields(
        [
            ("id", thread.id),
            ("ref", thread.parent_ref),
            ("env", thread.env),
            ("model", thread.model),
            ("created", thread.created_at),
            ("dispatch", f"{dispatch.id} {dispatch.state.value}" if dispatch else None),
            ("error", dispatch.error if dispatch else None),
        ]
    )


@app.command("cancel")
def cancel(
    ctx: typer.Context, thread_id: ThreadArgument, json_: JsonOption = False
) -> None:
    """Cancel the thread's live dispatch."""
    dispatch = arbe(ctx).threads.cancel(thread_id)
    if json_:
        print_json(dispatch_dict(dispatch))
    else:
        typer.echo(f"Cancelled dispatch {dispatch.id}.")


@entries_app.command("create")
def entries_create(
    ctx: typer.Context,
    thread_id: ThreadArgument,
    text: Annotated[str, typer.Argument(help="What to say; '-' reads it from stdin.")],
    wait: Annotated[
        bool,
        typer.Option(
            "--start-worker/--no-start-worker",
            help="Start a background worker for the house when none is running.",
        ),
    ] = True,
    json_: JsonOption = False,
) -> None:
    """Append a user entry; a dispatch is queued if none is live."""
    if text == "-":
        text = _read_stdin_text()
    opened = arbe(ctx)
    entry, dispatch = opened.threads.post(thread_id, text)
    started = False
    if wait:
        from arbe_entry.spawn import ensure_worker

        started = ensure_worker(opened)
    if json_:
        print_json(
            {
                **entry_dict(entry),
                "dispatch": dispatch_dict(dispatch),
                "worker_started": started,
            }
        )
    else:
        typer.echo(
            f"{entry.id} (seq {entry.seq}); dispatch {dispatch.id} {dispatch.state.value}"
        )


def _read_stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            "The entry text on stdin is not UTF-8 text; send UTF-8 text."
        ) from None


def _print_entry(entry: Entry) -> None:
    if entry.kind is EntryKind.MESSAGE:
        head = f"[{entry.seq}] {entry.author}:"
    elif entry.kind is EntryKind.TOOL_CALL:
        head = f"[{entry.seq}] {entry.author} -> {entry.data.get('name', 'tool')}:"
    elif entry.kind is EntryKind.TOOL_RESULT:
        head = f"[{entry.seq}] {entry.data.get('name', 'tool')} result:"
    else:
        head = f"[{entry.seq}] {entry.author} status:"
    body = (
        entry.body
        if entry.kind is not EntryKind.TOOL_CALL
        else str(entry.data.get("arguments", entry.body))
    )
    sys.stdout.write(f"{head}\n{_indent(body)}\n")
    sys.stdout.flush()


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines()) or "  "


class _WorkerHint:
    """Say once on stderr when a dispatch waits with no worker to run it."""

    poll_s = 1.0
    #: Seconds a queued dispatch may wait before the hint is printed.
    after_s = 5.0

    def __init__(self, opened: Arbe) -> None:
        self.opened = opened
        self.started = time.monotonic()
        self.shown = False

    def check(self, thread_id: str) -> None:
        if self.shown or time.monotonic() - self.started < self.after_s:
            return
        dispatch = self.opened.threads.dispatch(thread_id)
        if dispatch is None or dispatch.state is not DispatchState.QUEUED:
            return
        now = self.opened.deps.clock.now()
        with self.opened.deps.storage.unit_of_work(write=False) as uow:
            busy = uow.dispatches.has_live_lease(self.opened.house.id, now)
        if not busy:
            sys.stderr.write(
                f"Dispatch {dispatch.id} is queued and no worker is running; "
                "start one with `arbe worker`.\n"
            )
            self.shown = True


@entries_app.command("read")
def entries_read(
    ctx: typer.Context,
    thread_id: ThreadArgument,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow",
            help="Follow new entries until the dispatch ends (exit 0 completed, 1 failed).",
        ),
    ] = True,
    after: Annotated[
        int, typer.Option(min=0, help="Print entries after this seq.")
    ] = 0,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON document per entry, one per line."),
    ] = False,
) -> None:
    """Print the thread's entries, then follow new ones until the dispatch ends."""
    import json

    service = arbe(ctx).threads

    def emit_json(entry: Entry) -> None:
        sys.stdout.write(json.dumps(entry_dict(entry), ensure_ascii=False) + "\n")
        sys.stdout.flush()

    emit = emit_json if json_ else _print_entry
    if not follow:
        for entry in service.entries(thread_id, after, limit=1_000_000):
            emit(entry)
        return
    final: Dispatch | None = None
    hint = _WorkerHint(arbe(ctx))

    def idle() -> None:
        hint.check(thread_id)

    for item in service.follow(thread_id, after, poll=hint.poll_s, on_idle=idle):
        if isinstance(item, Dispatch):
            final = item
        else:
            emit(item)
    if final is not None and final.state is not DispatchState.COMPLETED:
        raise typer.Exit(1)
