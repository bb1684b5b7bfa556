"""The OpenAI chat-completions wire format: request bodies and reply assembly.

OpenRouter, vLLM, llama.cpp server and Ollama all speak this format. Nothing
here does I/O, because the HTTP client lives in `_client`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs

from arbe_core.chat import ChatMessage, ChatReply, ToolCall, ToolSpec, Usage

__all__ = ["ReplyBuilder", "WireError", "find_error", "request_body"]

#: Status used for an error whose code is not a number and whose type is not
#: listed below. OpenRouter sends 502 when a provider fails mid-reply.
_PROVIDER_ERROR_STATUS = 502

#: OpenRouter's `metadata.error_type` values, mapped to the HTTP status they
#: come with when the error arrives before the response starts.
_ERROR_TYPE_STATUS = {
    "invalid_request": 400,
    "context_length_exceeded": 400,
    "authentication": 401,
    "payment_required": 402,
    "rate_limit_exceeded": 429,
    "provider_unavailable": 502,
    "provider_overloaded": 503,
}


def request_body(
    model: str,
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolSpec],
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Build the JSON body of a streaming chat-completions request.

    Args:
        model: the model id on the server, such as
            `anthropic/claude-haiku-4.5`.
        messages: the chat so far.
        tools: the tools offered. An empty sequence sends neither `tools` nor
            `tool_choice`.
        extra: more top-level fields, such as `stream_options`.

    Returns:
        A JSON-ready mapping.
    """
    body: dict[str, object] = {
        "model": model,
        "stream": True,
        "messages": [_wire_message(message) for message in messages],
    }
    if tools:
        body["tools"] = [_wire_tool(tool) for tool in tools]
        body["tool_choice"] = "auto"
    body.update(extra or {})
    return body


def _wire_tool(tool: ToolSpec) -> dict[str, object]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": _plain(tool.parameters),
        },
    }


def _wire_message(message: ChatMessage) -> dict[str, object]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content or "",
        }
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": _replay_arguments(call.arguments),
                    },
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content or ""}


def _replay_arguments(raw: str) -> str:
    # OpenRouter ("invalid function arguments json string") and Anthropic
    # ("tool_use.input: Input should be a valid dictionary") reject a request
    # that replays arguments which are not a JSON object. Such a call is sent
    # back as `{}`, and the call's error result explains to the model what
    # was wrong.
    try:
        parsed = json.loads(raw)
    except ValueError:
        return "{}"
    return raw if isinstance(parsed, dict) else "{}"


def _plain(value: object) -> object:
    """Copy nested mappings and sequences into dicts and lists for `json`."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


@final
@attrs.frozen
class WireError:
    """An `error` object found in a response body or stream event."""

    #: The HTTP status that this error is equivalent to.
    status: int
    message: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def error_type(self) -> str | None:
        """OpenRouter's typed code, such as `context_length_exceeded`."""
        value = self.metadata.get("error_type")
        return value if isinstance(value, str) else None


def find_error(payload: Mapping[str, Any]) -> WireError | None:
    """Find the error in a response body or stream event, if it carries one.

    A top-level `error` object counts, and so does a choice that finishes
    with `finish_reason: "error"`. The error code may be an int or a string.
    """
    error = payload.get("error")
    if isinstance(error, Mapping):
        metadata = error.get("metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        message = error.get("message")
        return WireError(
            status=_error_status(error.get("code"), metadata.get("error_type")),
            message=message if isinstance(message, str) else str(error),
            metadata=metadata,
        )
    for choice in _choices(payload):
        if choice.get("finish_reason") == "error":
            return WireError(
                status=_PROVIDER_ERROR_STATUS,
                message="the provider ended the reply with finish_reason 'error'",
            )
    return None


def _error_status(code: object, error_type: object) -> int:
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    if isinstance(error_type, str) and error_type in _ERROR_TYPE_STATUS:
        return _ERROR_TYPE_STATUS[error_type]
    if isinstance(code, str) and code in _ERROR_TYPE_STATUS:
        return _ERROR_TYPE_STATUS[code]
    return _PROVIDER_ERROR_STATUS


def _choices(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    choices = payload.get("choices")
    if not isinstance(choices, list):
        return []
    return [choice for choice in choices if isinstance(choice, Mapping)]


@attrs.define
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


@final
class ReplyBuilder:
    """Assembles one `ChatReply` from stream chunks or a whole response body.

    Tool-call fragments are joined by their `index`, so the fragments of
    parallel calls stay apart even when they interleave. The first
    `finish_reason` wins: OpenRouter repeats it in the usage chunk, and that
    repeat is not a second finish.
    """

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _CallParts] = {}
        self._last_index: int | None = None
        self._usage = Usage()
        self._model: str | None = None
        #: The first finish reason seen, or None while the reply is open.
        self.finish_reason: str | None = None

    def add_chunk(self, chunk: Mapping[str, Any]) -> None:
        """Add one `chat.completion.chunk` event of a stream."""
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = _usage(chunk["usage"])

        for choice in _choices(chunk):
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                self._add_delta(delta)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and self.finish_reason is None:
                self.finish_reason = reason

    def add_completion(self, body: Mapping[str, Any]) -> None:
        """Add a whole non-streaming `chat.completion` body."""
        choices = []
        for choice in _choices(body):
            message = choice.get("message")
            if not isinstance(message, Mapping):
                continue
            delta = dict(message)
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                delta["tool_calls"] = [
                    {"index": position, **call}
                    for position, call in enumerate(calls)
                    if isinstance(call, Mapping)
                ]
            choices.append({**choice, "delta": delta})
        self.add_chunk({**body, "choices": choices})

    def build(self) -> ChatReply:
        """Return the reply assembled so far."""
        calls = tuple(
            ToolCall(
                id=parts.id or f"call_{position + 1}",
                name=parts.name,
                arguments="".join(parts.arguments),
            )
            for position, (_, parts) in enumerate(sorted(self._calls.items()))
        )
        reason = self.finish_reason or ("tool_calls" if calls else "stop")
        return ChatReply(
            text="".join(self._text) or None,
            tool_calls=calls,
            finish_reason=reason,
            usage=self._usage,
            model=self._model,
        )

    def _add_delta(self, delta: Mapping[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str):
            self._text.append(content)
        fragments = delta.get("tool_calls")
        if isinstance(fragments, list):
            for fragment in fragments:
                if isinstance(fragment, Mapping):
                    self._add_fragment(fragment)

    def _add_fragment(self, fragment: Mapping[str, Any]) -> None:
        call_id = fragment.get("id")
        index = self._fragment_index(fragment.get("index"), call_id)
        self._last_index = index
        parts = self._calls.setdefault(index, _CallParts())

        if isinstance(call_id, str) and call_id and not parts.id:
            parts.id = call_id
        function = fragment.get("function")
        if not isinstance(function, Mapping):
            return
        name = function.get("name")
        if isinstance(name, str) and name and not parts.name:
            parts.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            parts.arguments.append(arguments)
        elif isinstance(arguments, Mapping):
            # Arguments sent as an object, not as JSON text, are encoded back.
            parts.arguments[:] = [json.dumps(arguments)]

    def _fragment_index(self, index: object, call_id: object) -> int:
        if isinstance(index, int):
            return index
        # Some servers leave `index` out: a fragment with a new id starts a
        # new call, and one without an id continues the last call.
        for known_index, parts in self._calls.items():
            if call_id and parts.id == call_id:
                return known_index
        if call_id or self._last_index is None:
            return max(self._calls, default=-1) + 1
        return self._last_index


def _usage(raw: Mapping[str, Any]) -> Usage:
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    total = _count(raw.get("total_tokens")) or prompt + completion
    cost = raw.get("cost")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cost=float(cost) if isinstance(cost, int | float) else None,
    )


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
