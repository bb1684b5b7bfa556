"""A fake OpenRouter chat-completions server on 127.0.0.1, scripted per test.

It serves `POST /api/v1/chat/completions` in OpenRouter's wire format: real
server-sent events (`text/event-stream`, `data: …` events, `data: [DONE]`,
`: OPENROUTER PROCESSING` comments), plain JSON bodies, and JSON errors with
their HTTP status. Each request takes the next step of the script. A step is
a response (`Stream` or `Body`), or a callable that receives the recorded
request and returns one, so a test can check what the client sent.

Use the `fake_openrouter` fixture:

    fake_openrouter.enqueue(tool_call_reply(call("run_command", {"command": "ls"})))
    fake_openrouter.enqueue(text_reply("Done."))
    # or, for the same two steps:
    fake_openrouter.run_command_then_answer("ls", "Done.", check=check_redacted)

and point the client at `fake_openrouter.base_url`. A request that finds the
script empty, or a callable step that raises, gets a 400 error. The problem is
kept in `fake_openrouter.errors`, and the fixture fails the test at teardown.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

API_PATH = "/api/v1/chat/completions"
#: The model named in scripted replies: the resolved model, as OpenRouter sends it.
REPLY_MODEL = "anthropic/claude-4.5-haiku-20251001"
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "cost": 0.0001,
}
DONE = "data: [DONE]\n\n"


# --- Requests and responses --------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    #: Header names in lower case.
    headers: Mapping[str, str]
    #: The parsed JSON body, or None when the body is not JSON.
    body: Any

    @property
    def bearer(self) -> str | None:
        """The token of the `Authorization: Bearer` header, or None."""
        value = self.headers.get("authorization", "")
        return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's chat messages."""
        return (
            list(self.body.get("messages", [])) if isinstance(self.body, dict) else []
        )

    @property
    def tool_results(self) -> list[str]:
        """The contents of the request's `tool` messages, in order."""
        return [m.get("content", "") for m in self.messages if m.get("role") == "tool"]


@dataclass(frozen=True)
class Stream:
    """A `text/event-stream` response, sent as HTTP/1.1 chunked transfer."""

    #: The raw SSE text, such as `event(...) + DONE`.
    text: str
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Send the body in pieces of this many bytes, splitting events, lines
    #: and UTF-8 characters anywhere; None sends it in one piece.
    piece_size: int | None = None
    #: Seconds to wait between pieces.
    pause: float = 0.0
    #: Close the connection without ending the chunked body.
    drop: bool = False


@dataclass(frozen=True)
class Body:
    """A plain response with a whole body, such as JSON or an error."""

    status: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


Response = Stream | Body
Step = Response | Callable[[RecordedRequest], Response]


# --- Building SSE events -----------------------------------------------------


def event(payload: Mapping[str, Any]) -> str:
    """Return one SSE event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload)}\n\n"


def comment(text: str = "OPENROUTER PROCESSING") -> str:
    """Return an SSE comment line, as OpenRouter sends while a model works."""
    return f": {text}\n\n"


def chunk(
    delta: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage: Mapping[str, Any] | None = None,
    model: str = REPLY_MODEL,
) -> dict[str, Any]:
    """Return a `chat.completion.chunk` with one choice."""
    payload: dict[str, Any] = {
        "id": "gen-fake",
        "object": "chat.completion.chunk",
        "created": 1773323532,
        "model": model,
        "provider": "Fake",
        "choices": [
            {"index": 0, "delta": dict(delta or {}), "finish_reason": finish_reason}
        ],
    }
    if usage is not None:
        payload["usage"] = dict(usage)
    return payload


def usage_chunk(
    usage: Mapping[str, Any] = USAGE,
    *,
    form: str = "empty_choices",
    finish_reason: str = "stop",
) -> dict[str, Any]:
    """Return the usage chunk in one of OpenRouter's two forms.

    `empty_choices` is what recorded traffic shows (`"choices": []`);
    `repeat_finish` is what the docs describe (one choice with an empty delta
    that repeats the finish reason).
    """
    if form == "empty_choices":
        payload = chunk(usage=usage)
        payload["choices"] = []
        return payload
    if form == "repeat_finish":
        return chunk({}, finish_reason, usage=usage)
    raise ValueError(f"unknown usage form {form!r}")


def split(text: str, pieces: int) -> list[str]:
    """Split `text` into up to `pieces` parts of about the same length."""
    size = max(1, -(-len(text) // max(1, pieces)))
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


@dataclass(frozen=True)
class ScriptedCall:
    """A tool call for `tool_call_reply`."""

    name: str
    #: The raw argument text, which may be malformed on purpose.
    arguments: str
    #: The call id; None numbers the call by its place, `call_1` first.
    id: str | None = None


def call(
    name: str, arguments: Mapping[str, Any] | str, id: str | None = None
) -> ScriptedCall:
    """Script a tool call; a mapping is sent as JSON, a string unchanged."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ScriptedCall(name, text, id)


# --- Scripted responses ------------------------------------------------------


def text_reply(
    text: str,
    *,
    pieces: int = 3,
    usage: Mapping[str, Any] = USAGE,
    usage_form: str = "empty_choices",
    done: bool = True,
    comments: bool = False,
    piece_size: int | None = None,
) -> Stream:
    """Stream a text reply in `pieces` deltas, then the finish and usage."""
    events = [comment()] if comments else []
    for number, part in enumerate(split(text, pieces)):
        delta = (
            {"role": "assistant", "content": part} if number == 0 else {"content": part}
        )
        events.append(event(chunk(delta)))
        if comments:
            events.append(comment())
    events.append(event(chunk({"content": ""}, "stop")))
    events.append(event(usage_chunk(usage, form=usage_form, finish_reason="stop")))
    if done:
        events.append(DONE)
    return Stream("".join(events), piece_size=piece_size)


def tool_call_reply(
    *calls: ScriptedCall,
    text: str | None = None,
    finish_reason: str | None = "tool_calls",
    fragments: int = 3,
    usage_form: str = "empty_choices",
    comments: bool = False,
    piece_size: int | None = None,
) -> Stream:
    """Stream tool calls as OpenRouter does: a header, then argument fragments.

    Each call gets its own `index`. The argument fragments of parallel calls
    are interleaved (one of each call in turn), so only joining by `index`
    keeps them apart. `text`, if given, streams before the calls.
    """
    events = [comment()] if comments else []
    if text is not None:
        events.append(event(chunk({"role": "assistant", "content": text})))
    for index, scripted in enumerate(calls):
        header = {
            "index": index,
            "id": scripted.id or f"call_{index + 1}",
            "type": "function",
            "function": {"name": scripted.name, "arguments": ""},
        }
        events.append(
            event(chunk({"role": "assistant", "content": None, "tool_calls": [header]}))
        )
    parts = [split(scripted.arguments, fragments) for scripted in calls]
    for round_number in range(max((len(p) for p in parts), default=0)):
        for index, call_parts in enumerate(parts):
            if round_number < len(call_parts):
                fragment = {
                    "index": index,
                    "function": {"arguments": call_parts[round_number]},
                }
                events.append(event(chunk({"tool_calls": [fragment]})))
        if comments:
            events.append(comment())
    events.append(event(chunk({"content": ""}, finish_reason)))
    reason = finish_reason or "tool_calls"
    events.append(event(usage_chunk(form=usage_form, finish_reason=reason)))
    events.append(DONE)
    return Stream("".join(events), piece_size=piece_size)


def error_body(
    status: int,
    message: str,
    *,
    code: int | str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return OpenRouter's error object; `code` defaults to the status."""
    error: dict[str, Any] = {
        "code": status if code is None else code,
        "message": message,
    }
    if metadata is not None:
        error["metadata"] = dict(metadata)
    return {"error": error}


def error_reply(
    status: int,
    message: str,
    *,
    retry_after: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Body:
    """Return an HTTP error response with OpenRouter's JSON error body."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = json.dumps(error_body(status, message, metadata=metadata)).encode()
    return Body(status, body, headers)


def stream_error(
    code: int | str,
    message: str,
    *,
    text_before: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Stream:
    """Start a 200 stream, then send one error event and end without `[DONE]`."""
    events = [comment()]
    if text_before is not None:
        events.append(event(chunk({"role": "assistant", "content": text_before})))
    payload = chunk({"content": ""}, "error")
    payload.update(error_body(0, message, code=code, metadata=metadata))
    events.append(event(payload))
    return Stream("".join(events))


def cut_stream(text: str = "Partial answ", *, drop: bool = False) -> Stream:
    """Stream some text, then end with neither a finish reason nor `[DONE]`.

    With `drop`, the connection closes in the middle of the chunked body;
    otherwise the body ends cleanly.
    """
    events = [event(chunk({"role": "assistant", "content": text}))]
    return Stream("".join(events), drop=drop)


def completion(
    text: str | None = None,
    calls: Sequence[ScriptedCall] = (),
    *,
    finish_reason: str | None = None,
    usage: Mapping[str, Any] = USAGE,
    status: int = 200,
) -> Body:
    """Return a whole non-streaming `chat.completion` response.

    The body starts with whitespace, as OpenRouter sends while a model works.
    """
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {
                "id": scripted.id or f"call_{index + 1}",
                "type": "function",
                "function": {"name": scripted.name, "arguments": scripted.arguments},
            }
            for index, scripted in enumerate(calls)
        ]
    reason = finish_reason or ("tool_calls" if calls else "stop")
    body = {
        "id": "gen-fake",
        "object": "chat.completion",
        "created": 1773323532,
        "model": REPLY_MODEL,
        "choices": [{"index": 0, "finish_reason": reason, "message": message}],
        "usage": dict(usage),
    }
    return Body(status, b"\n  \n" + json.dumps(body).encode())


# --- The server --------------------------------------------------------------


class FakeOpenRouter:
    """A scripted chat-completions server on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        #: Problems seen while serving: unscripted requests, failed checks.
        self.errors: list[str] = []
        #: The step used when the script is empty. None makes the fake reply
        #: with a 400 error.
        self.default: Step | None = None
        self._script: deque[Step] = deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # A short poll interval lets `close` return at once.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), daemon=True
        )
        self._thread.start()
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/api/v1"

    def enqueue(self, *steps: Step) -> None:
        """Append steps to the script, one per request to come."""
        with self._lock:
            self._script.extend(steps)

    def always(self, step: Step) -> None:
        """Reply to every request with `step` once the script is empty."""
        self.default = step

    def run_command_then_answer(
        self,
        command: str,
        answer: str,
        *,
        check: Callable[[RecordedRequest], None] | None = None,
        call_id: str = "call_run_1",
    ) -> None:
        """Script a bot that calls `run_command` with `command`, then replies `answer`.

        `check`, if given, receives the second request (the one that carries
        the tool result) before the answer is sent; an assertion it raises is
        reported at teardown.
        """
        self.enqueue(
            tool_call_reply(call("run_command", {"command": command}, call_id))
        )

        def answer_step(request: RecordedRequest) -> Response:
            if check is not None:
                check(request)
            return text_reply(answer)

        self.enqueue(answer_step)

    @property
    def pending(self) -> int:
        """How many scripted steps no request has taken yet."""
        with self._lock:
            return len(self._script)

    def close(self) -> None:
        """Stop the server and close its socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _respond(self, request: RecordedRequest) -> Response:
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            step = self._script.popleft() if self._script else self.default
        if request.path != API_PATH:
            return self._fail(404, f"no route {request.method} {request.path}")
        if step is None:
            return self._fail(400, f"no scripted response left for request {number}")
        if callable(step):
            try:
                return step(request)
            except Exception as exc:  # reported at teardown
                return self._fail(
                    400, f"script step of request {number} raised {exc!r}"
                )
        return step

    def _fail(self, status: int, problem: str) -> Body:
        with self._lock:
            self.errors.append(problem)
        return error_reply(status, f"fake OpenRouter: {problem}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenRouter

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record an error of a handler; ignore a client that hung up."""
        error = sys.exc_info()[1]
        # Clients close the connection early after an error event, so a
        # reset or broken pipe is normal here.
        if isinstance(error, ConnectionError):
            return
        with self.fake._lock:
            self.fake.errors.append(f"handler raised {error!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        # Send every piece at once, so a test's byte boundaries reach the client.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest("POST", self.path, headers, body)
        response = self.server.fake._respond(request)
        if isinstance(response, Stream):
            self._send_stream(response)
        else:
            self._send_body(response)

    def _send_body(self, response: Body) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.content)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(response.content)

    def _send_stream(self, response: Stream) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Generation-Id", "gen-fake")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()

        data = response.text.encode()
        size = response.piece_size or max(1, len(data))
        for start in range(0, len(data), size):
            piece = data[start : start + size]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            if response.pause:
                time.sleep(response.pause)
        if response.drop:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    """Yield a started fake OpenRouter; fail at teardown if it saw a problem."""
    fake = FakeOpenRouter()
    try:
        yield fake
    finally:
        fake.close()
    assert fake.errors == [], f"the fake OpenRouter saw problems: {fake.errors}"
