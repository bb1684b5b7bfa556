"""`builtin/shell`: a deterministic bot with no model behind it.

It runs the text of the user's entry as one `run_command` call and then
replies with the exit code and output, so the whole dispatch path (tools,
sandboxes, redaction, entries) works offline and without any key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import final

from arbe_core.chat import ChatMessage, ChatReply, ProviderContext, ToolCall, ToolSpec
from arbe_core.errors import InvalidInput

__all__ = ["ShellChatModel"]

#: The tool this bot calls.
RUN_COMMAND = "run_command"

#: `@name` mentions at the start of an entry, which address bots and are not
#: part of the command. Bot names match `[a-z0-9][a-z0-9_-]*`.
_LEADING_MENTIONS = re.compile(r"^(?:\s*@[a-z0-9][a-z0-9_-]*(?=\s|$))+\s*")

#: An exit code stated in a plain-text tool result, such as `exit code: 2`.
_EXIT_CODE_TEXT = re.compile(r"exit[ _]code\W{0,3}(-?\d+)", re.IGNORECASE)

_NO_ENVIRONMENT = (
    "builtin/shell runs each entry as a command in an environment's sandbox, "
    "and this thread has no environment. Create a thread with one "
    "(`arbe thread create --env NAME`), or make one active first "
    "(`arbe env use NAME`) and create a new thread."
)


@final
class ShellChatModel:
    """The `builtin/shell` bot: runs the entry's text, then reports the result.

    When the last message is a user message, it replies with one
    `run_command` call whose `command` is that text, minus leading `@name`
    mentions. When the last messages are tool results, it replies with their
    exit codes and output and no tool calls. Without a `run_command` tool (a
    thread with no environment) it replies with how to add an environment.

    Args:
        context: the model after `builtin/`, which must be `shell`.

    Raises:
        InvalidInput: the model is not `shell`.
    """

    def __init__(self, context: ProviderContext) -> None:
        if context.model != "shell":
            msg = (
                f"Model 'builtin/{context.model}' not found; the builtin provider "
                f"has only builtin/shell. Use `--model builtin/shell`."
            )
            raise InvalidInput(msg)
        self.model = f"builtin/{context.model}"

    def complete(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]
    ) -> ChatReply:
        """Reply to the chat without calling any model.

        Returns:
            A `run_command` call after a user message, else a text reply.
        """
        if not any(tool.name == RUN_COMMAND for tool in tools):
            return self._text(_NO_ENVIRONMENT)
        last = messages[-1] if messages else None
        if last is not None and last.role == "tool":
            return self._text(_report(_trailing_results(messages)))
        if last is None or last.role != "user":
            return self._text("builtin/shell replies only to a user entry.")

        command = _LEADING_MENTIONS.sub("", last.content or "", count=1).strip()
        if not command:
            return self._text("Nothing to run: the entry has no command text.")
        call = ToolCall(
            id=f"call_shell_{_count_calls(messages) + 1}",
            name=RUN_COMMAND,
            arguments=json.dumps({"command": command}),
        )
        return ChatReply(
            text=None, tool_calls=(call,), finish_reason="tool_calls", model=self.model
        )

    def _text(self, text: str) -> ChatReply:
        return ChatReply(
            text=text, tool_calls=(), finish_reason="stop", model=self.model
        )


def _count_calls(messages: Sequence[ChatMessage]) -> int:
    return sum(len(message.tool_calls) for message in messages)


def _trailing_results(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    results: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]


def _report(results: Sequence[ChatMessage]) -> str:
    return "\n\n".join(_describe(result.content or "") for result in results)


def _describe(content: str) -> str:
    """Describe one tool result: its exit code, then its output.

    The result may be a JSON object (`exit_code` plus `output`, or `stdout`
    and `stderr`) or plain text; plain text is quoted unchanged.
    """
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and "exit_code" in parsed:
        return _describe_fields(parsed)

    found = _EXIT_CODE_TEXT.search(content)
    head = f"Exit code {found.group(1)}." if found else "The command finished."
    return f"{head}\n{content}" if content.strip() else f"{head} It printed nothing."


def _describe_fields(result: Mapping[str, object]) -> str:
    code = result.get("exit_code")
    head = f"Exit code {code}." if code is not None else "Exit code unknown."
    if result.get("timed_out"):
        head += " The command timed out."
    output = result.get("output")
    if not isinstance(output, str):
        parts = [result.get("stdout"), result.get("stderr")]
        output = "".join(part for part in parts if isinstance(part, str))
    return f"{head}\n{output}" if output.strip() else f"{head} It printed nothing."
