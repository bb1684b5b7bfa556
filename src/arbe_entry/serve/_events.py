"""Server-sent events: a thread's entries as they arrive, and its dispatch state.

Events:

- `entry`: one entry as `entry_dict` shapes it. The event id is its seq, so a
  reconnecting client resumes after the last one it saw (`Last-Event-ID`).
- `dispatch`: the thread's newest dispatch as `dispatch_dict` shapes it,
  sent first and again whenever its state changes.
- `end`: the dispatch reached a terminal state (or the thread has none) and
  every entry was sent. The stream then closes, as `thread entries read`
  exits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from arbe_core.errors import InvalidInput
from arbe_core.models import Dispatch
from arbe_core.services.threads import ThreadService
from arbe_entry.cli.thread import dispatch_dict, entry_dict
from arbe_entry.serve._body import query_int

#: Seconds between two reads of the thread while nothing new arrives.
POLL_INTERVAL_S = 0.3
#: Seconds of silence after which a comment line keeps proxies from closing.
KEEPALIVE_S = 15.0
#: Milliseconds a browser waits before reconnecting a dropped stream.
RETRY_MS = 2000
_BATCH = 500


async def thread_events(request: Request) -> Response:
    """Stream a thread's entries past `after` (or `Last-Event-ID`) as SSE."""
    thread_id = request.path_params["thread_id"]
    after = _resume_after(request)
    opener = request.app.state.opener
    threads: ThreadService = (await run_in_threadpool(opener)).threads
    await run_in_threadpool(threads.get, thread_id)
    return StreamingResponse(
        _stream(request, threads, thread_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _resume_after(request: Request) -> int:
    last_id = request.headers.get("last-event-id", "").strip()
    if last_id:
        if not last_id.isdigit():
            raise InvalidInput(
                f"Invalid Last-Event-ID {last_id[:50]!r}: expected an entry seq."
            )
        return int(last_id)
    return query_int(request, "after", 0, 0, 2**62)


async def _stream(
    request: Request, threads: ThreadService, thread_id: str, after: int
) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    seq = after
    shown: tuple[str, str] | None = None
    quiet_since = time.monotonic()
    while True:
        # The dispatch is read before the entries: a dispatch seen at its
        # terminal was committed with its last entries, so the read that
        # follows includes them.
        dispatch = await run_in_threadpool(threads.dispatch, thread_id)
        batch = await run_in_threadpool(threads.entries, thread_id, seq, _BATCH)
        for entry in batch:
            seq = entry.seq
            yield _event("entry", entry_dict(entry), event_id=str(entry.seq))
        if dispatch is not None and (dispatch.id, dispatch.state.value) != shown:
            shown = (dispatch.id, dispatch.state.value)
            yield _event("dispatch", dispatch_dict(dispatch))
        if batch:
            quiet_since = time.monotonic()
            continue
        if _finished(dispatch):
            yield _event("end", dispatch_dict(dispatch) if dispatch else None)
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_INTERVAL_S)


def _finished(dispatch: Dispatch | None) -> bool:
    return dispatch is None or not dispatch.state.live


def _event(name: str, data: object, event_id: str | None = None) -> str:
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False))
    return "\n".join(lines) + "\n\n"
