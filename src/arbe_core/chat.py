"""Value types of the chat-model port: messages, tools, replies."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import final

import attrs

__all__ = [
    "ChatMessage",
    "ChatReply",
    "ProviderContext",
    "ToolCall",
    "ToolSpec",
    "Usage",
]


@final
@attrs.frozen
class ToolSpec:
    """A tool offered to a model, with a JSON Schema for its arguments."""

    name: str
    description: str
    parameters: Mapping[str, object]


@final
@attrs.frozen
class ToolCall:
    """A tool call asked for by a model; `arguments` is the raw JSON text."""

    id: str
    name: str
    arguments: str


@final
@attrs.frozen
class ChatMessage:
    """One message of a chat, in the OpenAI chat-completions roles."""

    role: str
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@final
@attrs.frozen
class Usage:
    """Token counts of one model call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None


@final
@attrs.frozen
class ChatReply:
    """A model's reply: text, tool calls, finish reason and usage."""

    text: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    usage: Usage = attrs.field(factory=Usage)
    #: The model that replied, which may differ from the requested one.
    model: str | None = None


@final
@attrs.frozen
class ProviderContext:
    """The inputs a model-provider factory gets to build one chat model.

    `model` is the part of the ref after the provider, for example
    `anthropic/claude-haiku-4.5` for `openrouter/anthropic/claude-haiku-4.5`.
    `config` looks a setting up in the process environment, then the house.
    """

    model: str
    config: Callable[[str], str | None]
    credential: str | None = None
