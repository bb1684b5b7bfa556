"""The OpenRouter and OpenAI-compatible chat models against the fake server."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from arbe_adapters.llm._openrouter import (
    DEFAULT_BASE_URL,
    OpenAICompatibleChatModel,
    OpenRouterChatModel,
)
from arbe_adapters.plugins._registry import load_plugins
from arbe_core.chat import ChatMessage, ChatReply, ProviderContext, ToolCall, ToolSpec
from arbe_core.errors import (
    ArbeError,
    CredentialMissing,
    CredentialRejected,
    InvalidInput,
    RateLimited,
    Transient,
    Unavailable,
)
from tests.fakes.openrouter import (
    DONE,
    Body,
    FakeOpenRouter,
    RecordedRequest,
    Stream,
    call,
    chunk,
    comment,
    completion,
    cut_stream,
    error_reply,
    event,
    stream_error,
    text_reply,
    tool_call_reply,
    usage_chunk,
)

KEY = "sk-test-123"
MODEL = "anthropic/claude-haiku-4.5"
REF = f"openrouter/{MODEL}"
RUN_COMMAND = ToolSpec(
    name="run_command",
    description="Run a shell command in the sandbox",
    parameters={
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
)
USER = [ChatMessage(role="user", content="list files")]


def make_model(
    fake: FakeOpenRouter, key: str | None = KEY, **options: Any
) -> OpenRouterChatModel:
    settings = {"OPENROUTER_BASE_URL": fake.base_url}
    context = ProviderContext(model=MODEL, config=settings.get, credential=key)
    options.setdefault("base_delay", 0.001)
    options.setdefault("max_delay", 0.01)
    return OpenRouterChatModel(context, **options)


def ask(fake: FakeOpenRouter, **options: Any) -> ChatReply:
    return make_model(fake, **options).complete(USER, [RUN_COMMAND])


def fail(fake: FakeOpenRouter, **options: Any) -> ArbeError:
    with pytest.raises(ArbeError) as caught:
        ask(fake, **options)
    return caught.value


class Sleeps:
    """A `sleep` stand-in that records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


# --- Requests ----------------------------------------------------------------


class TestRequest:
    def test_request_carries_key_model_and_attribution(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Hi."))

        ask(fake_openrouter)

        request = fake_openrouter.requests[0]
        assert request.path == "/api/v1/chat/completions"
        assert request.bearer == KEY
        assert request.body["model"] == MODEL
        assert request.body["stream"] is True
        assert request.headers["x-openrouter-title"] == "arbe"
        assert request.headers["http-referer"].startswith("https://")
        assert request.headers["accept"] == "text/event-stream"

    def test_request_maps_messages_and_tools(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Two files."))
        messages = [
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="list files"),
            ChatMessage(
                role="assistant",
                content=None,
                tool_calls=(ToolCall("call_1", "run_command", '{"command": "ls"}'),),
            ),
            ChatMessage(role="tool", content="a.txt\nb.txt", tool_call_id="call_1"),
        ]

        make_model(fake_openrouter).complete(messages, [RUN_COMMAND])

        body = fake_openrouter.requests[0].body
        assert body["messages"] == [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "list files"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "run_command",
                            "arguments": '{"command": "ls"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
        ]
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "run_command",
                    "description": "Run a shell command in the sandbox",
                    "parameters": dict(RUN_COMMAND.parameters),
                },
            }
        ]
        assert body["tool_choice"] == "auto"

    def test_request_without_tools_omits_tool_fields(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Hi."))

        make_model(fake_openrouter).complete(USER, [])

        body = fake_openrouter.requests[0].body
        assert "tools" not in body
        assert "tool_choice" not in body

    def test_malformed_arguments_replayed_as_object(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        """Providers reject replayed arguments that are not a JSON object."""
        fake_openrouter.enqueue(text_reply("Sorry."))
        calls = (
            ToolCall("call_1", "run_command", '{"command": "l'),
            ToolCall("call_2", "run_command", '["ls"]'),
        )
        messages = [
            *USER,
            ChatMessage(role="assistant", content=None, tool_calls=calls),
            ChatMessage(
                role="tool", content="invalid arguments", tool_call_id="call_1"
            ),
            ChatMessage(
                role="tool", content="invalid arguments", tool_call_id="call_2"
            ),
        ]

        make_model(fake_openrouter).complete(messages, [RUN_COMMAND])

        sent = fake_openrouter.requests[0].body["messages"][1]["tool_calls"]
        assert [c["function"]["arguments"] for c in sent] == ["{}", "{}"]

    def test_base_url_defaults_to_openrouter(self) -> None:
        """Only the attribute is read: no test sends anything to openrouter.ai."""
        context = ProviderContext(model=MODEL, config=lambda name: None, credential=KEY)

        model = OpenRouterChatModel(context)

        assert model.base_url == DEFAULT_BASE_URL

    def test_base_url_not_http_rejected(self) -> None:
        settings = {"OPENROUTER_BASE_URL": "ftp://127.0.0.1/api/v1"}
        context = ProviderContext(model=MODEL, config=settings.get, credential=KEY)

        with pytest.raises(InvalidInput) as caught:
            OpenRouterChatModel(context)

        assert "OPENROUTER_BASE_URL" in str(caught.value)

    def test_missing_key_raises_credential_missing(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        with pytest.raises(CredentialMissing) as caught:
            make_model(fake_openrouter, key=None)

        assert caught.value.name == "OPENROUTER_API_KEY"
        assert REF in str(caught.value)
        assert "arbe secret set OPENROUTER_API_KEY" in str(caught.value)
        assert fake_openrouter.requests == []


# --- Streams -----------------------------------------------------------------


class TestStream:
    def test_text_reply_returns_text_and_usage(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("The repo has two files."))

        reply = ask(fake_openrouter)

        assert reply.text == "The repo has two files."
        assert reply.tool_calls == ()
        assert reply.finish_reason == "stop"
        assert reply.usage.prompt_tokens == 12
        assert reply.usage.completion_tokens == 5
        assert reply.usage.total_tokens == 17
        assert reply.usage.cost == pytest.approx(0.0001)
        assert reply.model == "anthropic/claude-4.5-haiku-20251001"

    def test_text_split_at_every_byte_keeps_utf8(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        text = "Déjà vu 😀 — done."
        fake_openrouter.enqueue(text_reply(text, pieces=5, piece_size=1, comments=True))

        reply = ask(fake_openrouter)

        assert reply.text == text

    def test_comments_between_events_skipped(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Still here.", comments=True))

        reply = ask(fake_openrouter)

        assert reply.text == "Still here."

    def test_tool_call_fragments_joined(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(
            tool_call_reply(call("run_command", {"command": "ls -la"}, "call_a"))
        )

        reply = ask(fake_openrouter)

        assert reply.tool_calls == (
            ToolCall("call_a", "run_command", '{"command": "ls -la"}'),
        )
        assert reply.finish_reason == "tool_calls"
        assert reply.text is None

    def test_parallel_calls_stay_apart(self, fake_openrouter: FakeOpenRouter) -> None:
        """Three calls, interleaved and sent in 7-byte pieces, come back apart."""
        fake_openrouter.enqueue(
            tool_call_reply(
                call("run_command", {"command": "ls"}, "call_a"),
                call(
                    "run_command", {"command": "git status", "cwd": "/repo"}, "call_b"
                ),
                call("delegate_task", {"task": "fix the tests"}, "call_c"),
                text="Looking around.",
                fragments=4,
                comments=True,
                piece_size=7,
            )
        )

        reply = ask(fake_openrouter)

        assert reply.text == "Looking around."
        assert [c.id for c in reply.tool_calls] == ["call_a", "call_b", "call_c"]
        assert [c.name for c in reply.tool_calls] == [
            "run_command",
            "run_command",
            "delegate_task",
        ]
        assert json.loads(reply.tool_calls[0].arguments) == {"command": "ls"}
        assert json.loads(reply.tool_calls[1].arguments) == {
            "command": "git status",
            "cwd": "/repo",
        }
        assert json.loads(reply.tool_calls[2].arguments) == {"task": "fix the tests"}

    def test_malformed_arguments_returned_raw(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        """Validating arguments is the dispatcher's job, so the raw text passes."""
        fake_openrouter.enqueue(tool_call_reply(call("run_command", '{"command": "ls')))

        reply = ask(fake_openrouter)

        assert reply.tool_calls[0].arguments == '{"command": "ls'
        assert reply.tool_calls[0].id == "call_1"

    def test_tool_calls_returned_whatever_finish_reason(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(
            tool_call_reply(
                call("run_command", {"command": "ls"}), finish_reason="stop"
            )
        )

        reply = ask(fake_openrouter)

        assert len(reply.tool_calls) == 1
        assert reply.finish_reason == "stop"

    @pytest.mark.parametrize("form", ["empty_choices", "repeat_finish"])
    def test_usage_chunk_both_forms(
        self, fake_openrouter: FakeOpenRouter, form: str
    ) -> None:
        usage = {"prompt_tokens": 394, "completion_tokens": 66, "total_tokens": 460}
        fake_openrouter.enqueue(text_reply("Ok.", usage=usage, usage_form=form))

        reply = ask(fake_openrouter)

        assert reply.text == "Ok."
        assert reply.finish_reason == "stop"
        assert reply.usage.prompt_tokens == 394
        assert reply.usage.completion_tokens == 66
        assert reply.usage.total_tokens == 460
        assert reply.usage.cost is None

    def test_repeated_finish_reason_not_second_finish(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        """A usage chunk that repeats a different reason keeps the first one."""
        text = (
            event(chunk({"role": "assistant", "content": "Half"}))
            + event(chunk({"content": ""}, "length"))
            + event(usage_chunk(form="repeat_finish", finish_reason="stop"))
            + DONE
        )
        fake_openrouter.enqueue(Stream(text))

        reply = ask(fake_openrouter)

        assert reply.finish_reason == "length"
        assert reply.usage.total_tokens == 17

    def test_finish_without_done_accepted(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Finished.", done=False))

        reply = ask(fake_openrouter)

        assert reply.text == "Finished."
        assert len(fake_openrouter.requests) == 1

    def test_done_without_finish_accepted(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        text = event(chunk({"role": "assistant", "content": "Short."})) + DONE
        fake_openrouter.enqueue(Stream(text))

        reply = ask(fake_openrouter)

        assert reply.text == "Short."
        assert reply.finish_reason == "stop"

    def test_cut_stream_retried_then_transient(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.always(cut_stream())

        error = fail(fake_openrouter, max_attempts=3)

        assert type(error) is Transient
        assert "ended before a finish reason or [DONE]" in str(error)
        assert REF in str(error)
        assert len(fake_openrouter.requests) == 3

    def test_dropped_connection_retried(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(cut_stream(drop=True), text_reply("Second try."))

        reply = ask(fake_openrouter)

        assert reply.text == "Second try."
        assert len(fake_openrouter.requests) == 2

    def test_invalid_json_event_retried(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(Stream("data: {not json\n\n"), text_reply("Fine."))

        reply = ask(fake_openrouter)

        assert reply.text == "Fine."

    def test_non_streaming_body_parsed(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(
            completion("Checking.", [call("run_command", {"command": "ls"}, "call_1")])
        )

        reply = ask(fake_openrouter)

        assert reply.text == "Checking."
        assert reply.tool_calls == (
            ToolCall("call_1", "run_command", '{"command": "ls"}'),
        )
        assert reply.finish_reason == "tool_calls"
        assert reply.usage.total_tokens == 17

    def test_non_streaming_object_arguments_encoded(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "function": {"name": "run_command", "arguments": {"command": "ls"}},
                }
            ],
        }
        body = {
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}]
        }
        fake_openrouter.enqueue(Body(200, json.dumps(body).encode()))

        reply = ask(fake_openrouter)

        assert json.loads(reply.tool_calls[0].arguments) == {"command": "ls"}


# --- Errors inside a 200 -----------------------------------------------------


class TestErrorInsideSuccess:
    def test_mid_stream_502_retried(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(
            stream_error(502, "Provider disconnected", text_before="Hal"),
            text_reply("Whole answer."),
        )

        reply = ask(fake_openrouter)

        assert reply.text == "Whole answer."
        assert len(fake_openrouter.requests) == 2

    def test_mid_stream_string_code_is_transient(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.always(stream_error("server_error", "Upstream failed"))

        error = fail(fake_openrouter, max_attempts=2)

        assert type(error) is Transient
        assert "Upstream failed" in str(error)
        assert len(fake_openrouter.requests) == 2

    def test_mid_stream_429_is_rate_limit(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        metadata = {"error_type": "rate_limit_exceeded"}
        fake_openrouter.always(
            stream_error("429", "Rate limit exceeded", metadata=metadata)
        )

        error = fail(fake_openrouter, max_attempts=2)

        assert isinstance(error, RateLimited)

    def test_mid_stream_400_not_retried(self, fake_openrouter: FakeOpenRouter) -> None:
        metadata = {"error_type": "context_length_exceeded"}
        fake_openrouter.enqueue(
            stream_error(400, "Prompt is too long", metadata=metadata)
        )

        error = fail(fake_openrouter)

        assert isinstance(error, InvalidInput)
        assert "longer context" in str(error)
        assert len(fake_openrouter.requests) == 1

    def test_finish_reason_error_without_object_fails(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        text = event(chunk({"content": "Par"})) + event(chunk({}, "error")) + DONE
        fake_openrouter.always(Stream(text))

        error = fail(fake_openrouter, max_attempts=2)

        assert type(error) is Transient
        assert "finish_reason 'error'" in str(error)

    def test_error_in_non_streaming_body(self, fake_openrouter: FakeOpenRouter) -> None:
        body = {"error": {"code": 401, "message": "User not found."}}
        fake_openrouter.enqueue(Body(200, json.dumps(body).encode()))

        error = fail(fake_openrouter)

        assert isinstance(error, CredentialRejected)


# --- HTTP errors and retries -------------------------------------------------


class TestHttpErrors:
    def test_401_names_model_and_fix(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(error_reply(401, "No auth credentials found"))

        error = fail(fake_openrouter)

        assert isinstance(error, CredentialRejected)
        assert REF in str(error)
        assert "arbe secret set OPENROUTER_API_KEY" in str(error)
        assert len(fake_openrouter.requests) == 1

    @pytest.mark.parametrize(
        ("status", "message", "expected", "fix"),
        [
            (400, "tools.0: invalid schema", InvalidInput, "Check the model ref"),
            (402, "Insufficient credits", Unavailable, "Add credits"),
            (403, "Input was flagged", InvalidInput, "moderation"),
            (
                404,
                "No endpoints found that support tool use.",
                InvalidInput,
                "tool support",
            ),
            (404, "Model not found", InvalidInput, "--model openrouter/MODEL"),
        ],
    )
    def test_client_errors_not_retried(
        self,
        fake_openrouter: FakeOpenRouter,
        status: int,
        message: str,
        expected: type[ArbeError],
        fix: str,
    ) -> None:
        fake_openrouter.enqueue(error_reply(status, message))

        error = fail(fake_openrouter)

        assert type(error) is expected
        assert REF in str(error)
        assert message in str(error)
        assert fix in str(error)
        assert len(fake_openrouter.requests) == 1

    @pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
    def test_retryable_status_then_success(
        self, fake_openrouter: FakeOpenRouter, status: int
    ) -> None:
        fake_openrouter.enqueue(error_reply(status, "try later"), text_reply("Done."))

        reply = ask(fake_openrouter)

        assert reply.text == "Done."
        assert len(fake_openrouter.requests) == 2

    def test_429_honours_retry_after(self, fake_openrouter: FakeOpenRouter) -> None:
        sleeps = Sleeps()
        fake_openrouter.enqueue(
            error_reply(429, "Rate limit exceeded", retry_after="1"), text_reply("Ok.")
        )

        reply = ask(fake_openrouter, sleep=sleeps)

        assert reply.text == "Ok."
        assert len(sleeps.waits) == 1
        assert sleeps.waits[0] >= 1.0

    def test_429_exhausted_raises_rate_limited(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        sleeps = Sleeps()
        fake_openrouter.always(error_reply(429, "Rate limit exceeded", retry_after="2"))

        error = fail(fake_openrouter, max_attempts=3, sleep=sleeps)

        assert isinstance(error, RateLimited)
        assert error.retry_after == 2.0
        assert REF in str(error)
        assert "after 3 attempts" in str(error)
        assert len(fake_openrouter.requests) == 3
        assert len(sleeps.waits) == 2

    def test_retry_after_past_budget_stops_at_once(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        sleeps = Sleeps()
        fake_openrouter.always(error_reply(503, "No provider", retry_after="120"))

        error = fail(fake_openrouter, max_total_wait=10.0, sleep=sleeps)

        assert type(error) is Transient
        assert "retry budget of 10 s" in str(error)
        assert sleeps.waits == []
        assert len(fake_openrouter.requests) == 1

    def test_402_in_flight_budget_retried(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        metadata = {"limit_source": "openrouter_in_flight_budget"}
        fake_openrouter.enqueue(
            error_reply(402, "Too many requests in flight", metadata=metadata),
            text_reply("Ok."),
        )

        reply = ask(fake_openrouter)

        assert reply.text == "Ok."
        assert len(fake_openrouter.requests) == 2

    def test_non_json_error_body_quoted(self, fake_openrouter: FakeOpenRouter) -> None:
        page = b"<html>Bad Gateway</html>"
        fake_openrouter.always(Body(502, page, content_type="text/html"))

        error = fail(fake_openrouter, max_attempts=2)

        assert "502 Bad Gateway: <html>Bad Gateway</html>" in str(error)


class TestRetryBounds:
    def test_retries_bounded_in_count(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.always(error_reply(503, "Overloaded"))

        error = fail(fake_openrouter, max_attempts=4)

        assert type(error) is Transient
        assert "after 4 attempts" in str(error)
        assert len(fake_openrouter.requests) == 4

    def test_backoff_doubles_with_jitter(self, fake_openrouter: FakeOpenRouter) -> None:
        sleeps = Sleeps()
        fake_openrouter.always(error_reply(502, "Provider down"))

        fail(
            fake_openrouter, max_attempts=5, base_delay=1.0, max_delay=3.0, sleep=sleeps
        )

        ceilings = [1.0, 2.0, 3.0, 3.0]
        assert len(sleeps.waits) == 4
        for wait, ceiling in zip(sleeps.waits, ceilings, strict=True):
            assert ceiling / 2 <= wait <= ceiling

    def test_retries_bounded_in_time(self, fake_openrouter: FakeOpenRouter) -> None:
        """Real sleeps: the waits stop before they would pass the budget."""
        fake_openrouter.always(error_reply(503, "Overloaded"))
        started = time.monotonic()

        error = fail(
            fake_openrouter,
            max_attempts=50,
            base_delay=0.02,
            max_delay=0.04,
            max_total_wait=0.2,
        )

        elapsed = time.monotonic() - started
        assert type(error) is Transient
        assert "retry budget of 0.2 s" in str(error)
        assert elapsed < 2.0
        assert 5 <= len(fake_openrouter.requests) < 50

    def test_transport_error_retried_then_transient(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = {"OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1"}
        context = ProviderContext(model=MODEL, config=settings.get, credential=KEY)
        sleeps = Sleeps()
        model = OpenRouterChatModel(context, max_attempts=3, sleep=sleeps)

        with pytest.raises(Transient) as caught:
            model.complete(USER, [RUN_COMMAND])

        assert "Could not reach OpenRouter" in str(caught.value)
        assert "ConnectError" in str(caught.value)
        assert "OPENROUTER_BASE_URL" in str(caught.value)
        assert len(sleeps.waits) == 2
        assert isinstance(caught.value.__cause__, httpx.ConnectError)

    def test_max_attempts_below_one_rejected(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        with pytest.raises(ValueError, match="max_attempts"):
            make_model(fake_openrouter, max_attempts=0)


# --- Secrets and logs --------------------------------------------------------


class TestNoKeyLeaks:
    def test_key_never_in_errors_or_logs(
        self, fake_openrouter: FakeOpenRouter, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        echo = f"Key {KEY} is not valid"
        fake_openrouter.enqueue(
            error_reply(429, echo, retry_after="0"),
            stream_error(502, echo),
            error_reply(400, echo),
            error_reply(401, echo),
            error_reply(403, echo),
            error_reply(404, echo),
        )
        errors = []

        for _ in range(4):
            with pytest.raises(ArbeError) as caught:
                ask(fake_openrouter)
            errors.append(caught.value)

        assert len(fake_openrouter.requests) == 6
        for error in errors:
            assert KEY not in str(error)
            assert KEY not in repr(error.to_dict())
            assert "***" in str(error) or isinstance(error, CredentialRejected)
        for record in caplog.records:
            assert KEY not in record.getMessage()
            assert KEY not in repr(record.args)

    def test_log_lines_per_call_and_retry(
        self, fake_openrouter: FakeOpenRouter, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="arbe.llm.openrouter")
        fake_openrouter.enqueue(
            error_reply(503, "Overloaded"), text_reply("Secret plan.")
        )

        ask(fake_openrouter)

        records = [r for r in caplog.records if r.name == "arbe.llm.openrouter"]
        assert [r.levelname for r in records] == ["WARNING", "INFO"]
        assert "status=503" in records[0].getMessage()
        info = records[1].getMessage()
        assert MODEL in info
        assert "status=200" in info
        assert "prompt_tokens=12" in info
        assert "completion_tokens=5" in info
        assert "Secret plan" not in info
        assert "list files" not in info


# --- Client overrides --------------------------------------------------------


class TestOverrides:
    def test_transport_override_used(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            body = comment() + event(chunk({"content": "Mocked."}, "stop")) + DONE
            return httpx.Response(
                200, headers={"Content-Type": "text/event-stream"}, text=body
            )

        settings = {"OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1"}
        context = ProviderContext(model=MODEL, config=settings.get, credential=KEY)
        model = OpenRouterChatModel(context, transport=httpx.MockTransport(handler))

        reply = model.complete(USER, [])

        assert reply.text == "Mocked."
        assert str(seen[0].url) == "http://127.0.0.1:9/api/v1/chat/completions"

    def test_client_override_used_and_left_open(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("One."), text_reply("Two."))

        with httpx.Client() as client:
            model = make_model(fake_openrouter, client=client)
            first = model.complete(USER, [])
            second = model.complete(USER, [])
            assert not client.is_closed

        assert first.text == "One."
        assert second.text == "Two."


# --- OpenAI-compatible servers -----------------------------------------------


def make_openai(
    fake: FakeOpenRouter, key: str | None = None, **settings: str
) -> OpenAICompatibleChatModel:
    config: Mapping[str, str] = {"OPENAI_BASE_URL": fake.base_url, **settings}
    context = ProviderContext(model="qwen3-coder", config=config.get, credential=key)
    return OpenAICompatibleChatModel(context, base_delay=0.001)


class TestOpenAICompatible:
    def test_no_key_sends_no_authorization(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(text_reply("Local."))

        reply = make_openai(fake_openrouter).complete(USER, [RUN_COMMAND])

        request = fake_openrouter.requests[0]
        assert reply.text == "Local."
        assert "authorization" not in request.headers
        assert "x-openrouter-title" not in request.headers
        assert request.body["model"] == "qwen3-coder"
        assert request.body["stream_options"] == {"include_usage": True}

    def test_key_from_setting_sent(self, fake_openrouter: FakeOpenRouter) -> None:
        fake_openrouter.enqueue(text_reply("Local."))

        make_openai(fake_openrouter, OPENAI_API_KEY="sk-test-local").complete(USER, [])

        assert fake_openrouter.requests[0].bearer == "sk-test-local"

    def test_401_without_key_asks_for_key(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        fake_openrouter.enqueue(error_reply(401, "Unauthorized"))

        with pytest.raises(CredentialMissing) as caught:
            make_openai(fake_openrouter).complete(USER, [])

        assert "openai/qwen3-coder" in str(caught.value)
        assert "arbe secret set OPENAI_API_KEY" in str(caught.value)

    def test_missing_base_url_names_setting(self) -> None:
        context = ProviderContext(model="llama3", config=lambda name: None)

        with pytest.raises(Unavailable) as caught:
            OpenAICompatibleChatModel(context)

        assert "openai/llama3" in str(caught.value)
        assert "OPENAI_BASE_URL" in str(caught.value)

    def test_errors_name_server_without_userinfo(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        base = fake_openrouter.base_url.replace("http://", "http://user:pw-test@")
        fake_openrouter.enqueue(error_reply(404, "model 'qwen3-coder' not found"))

        with pytest.raises(InvalidInput) as caught:
            make_openai(fake_openrouter, OPENAI_BASE_URL=base).complete(USER, [])

        assert fake_openrouter.base_url in str(caught.value)
        assert "pw-test" not in str(caught.value)

    def test_plugin_registers_openai_provider(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        plugins = load_plugins(allowed="")
        settings = {"OPENAI_BASE_URL": fake_openrouter.base_url}
        context = ProviderContext(model="qwen3-coder", config=settings.get)

        model = plugins.chat_model("openai", context)

        assert plugins.provider_registration("openai").credential is None
        assert isinstance(model, OpenAICompatibleChatModel)


def test_fake_callable_step_sees_request(fake_openrouter: FakeOpenRouter) -> None:
    """The scripting helper hands the tool-result request to a check."""
    seen: list[RecordedRequest] = []

    def check(request: RecordedRequest) -> None:
        seen.append(request)
        assert request.tool_results == ["***GITHUB_TOKEN***\nREADME.md"]

    fake_openrouter.run_command_then_answer(
        "echo $GITHUB_TOKEN; ls", "Done.", check=check
    )
    model = make_model(fake_openrouter)

    first = model.complete(USER, [RUN_COMMAND])
    result = ChatMessage(
        role="tool", content="***GITHUB_TOKEN***\nREADME.md", tool_call_id="call_run_1"
    )
    second = model.complete(
        [*USER, ChatMessage("assistant", None, first.tool_calls), result], [RUN_COMMAND]
    )

    assert json.loads(first.tool_calls[0].arguments) == {
        "command": "echo $GITHUB_TOKEN; ls"
    }
    assert second.text == "Done."
    assert len(seen) == 1
    assert fake_openrouter.pending == 0


class TestCallDeadline:
    """One model call ends at its deadline, however the provider trickles."""

    def test_keepalive_trickle_stops_at_deadline(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        """Keep-alive comments that never end in a reply fail within the deadline."""
        from arbe_core.errors import Transient
        from tests.fakes.openrouter import Stream, comment

        fake_openrouter.always(Stream(comment() * 200, piece_size=16, pause=0.05))
        model = make_model(fake_openrouter, call_deadline=1.0, max_attempts=3)
        started = time.monotonic()

        with pytest.raises(Transient, match="no complete reply within 1 s"):
            model.complete([ChatMessage("user", "hi")], [])

        assert time.monotonic() - started < 3.0

    def test_silent_provider_stops_at_deadline(
        self, fake_openrouter: FakeOpenRouter
    ) -> None:
        """A reply that never starts streaming fails within the deadline too."""
        from arbe_core.errors import Transient
        from tests.fakes.openrouter import Stream, comment

        fake_openrouter.always(Stream(comment() * 3, piece_size=4, pause=5.0))
        model = make_model(fake_openrouter, call_deadline=1.0, max_attempts=2)
        started = time.monotonic()

        with pytest.raises(Transient, match="no complete reply within 1 s"):
            model.complete([ChatMessage("user", "hi")], [])

        assert time.monotonic() - started < 3.0
