"""The deterministic `builtin/shell` bot."""

from __future__ import annotations

import json

import pytest

from arbe_adapters.llm._shell import ShellChatModel
from arbe_adapters.plugins._registry import load_plugins
from arbe_core.chat import ChatMessage, ProviderContext, ToolCall, ToolSpec
from arbe_core.errors import InvalidInput

RUN_COMMAND = ToolSpec(
    name="run_command",
    description="Run a shell command in the sandbox",
    parameters={"type": "object", "properties": {"command": {"type": "string"}}},
)
DELEGATE_TASK = ToolSpec(
    name="delegate_task",
    description="Run a task in a fresh sandbox",
    parameters={"type": "object", "properties": {"task": {"type": "string"}}},
)
TOOLS = [RUN_COMMAND, DELEGATE_TASK]


def shell() -> ShellChatModel:
    return ShellChatModel(ProviderContext(model="shell", config=lambda name: None))


def command_turn(command: str, call_id: str, result: str) -> list[ChatMessage]:
    call = ToolCall(call_id, "run_command", json.dumps({"command": command}))
    return [
        ChatMessage(role="user", content=command),
        ChatMessage(role="assistant", content=None, tool_calls=(call,)),
        ChatMessage(role="tool", content=result, tool_call_id=call_id),
    ]


class TestShellChatModel:
    def test_user_entry_becomes_one_run_command(self) -> None:
        messages = [ChatMessage(role="user", content='echo "$GITHUB_TOKEN"; ls')]

        reply = shell().complete(messages, TOOLS)

        assert reply.text is None
        assert reply.finish_reason == "tool_calls"
        assert len(reply.tool_calls) == 1
        assert reply.tool_calls[0].id == "call_shell_1"
        assert reply.tool_calls[0].name == "run_command"
        assert json.loads(reply.tool_calls[0].arguments) == {
            "command": 'echo "$GITHUB_TOKEN"; ls'
        }
        assert reply.model == "builtin/shell"

    def test_multiline_command_kept_whole(self) -> None:
        text = "cd repo\ngit log --oneline | head -3"

        reply = shell().complete([ChatMessage(role="user", content=text)], TOOLS)

        assert json.loads(reply.tool_calls[0].arguments)["command"] == text

    def test_leading_mentions_stripped(self) -> None:
        messages = [ChatMessage(role="user", content="@shell @ops-bot  git status")]

        reply = shell().complete(messages, TOOLS)

        assert json.loads(reply.tool_calls[0].arguments) == {"command": "git status"}

    def test_call_ids_count_up_across_thread(self) -> None:
        messages = [
            *command_turn("ls", "call_shell_1", '{"exit_code": 0, "output": "a"}'),
            ChatMessage(role="assistant", content="Exit code 0.\na"),
            ChatMessage(role="user", content="pwd"),
        ]

        reply = shell().complete(messages, TOOLS)

        assert reply.tool_calls[0].id == "call_shell_2"

    def test_json_result_reported(self) -> None:
        result = json.dumps({"exit_code": 2, "stdout": "a.txt\n", "stderr": "oops\n"})

        reply = shell().complete(command_turn("ls", "call_shell_1", result), TOOLS)

        assert reply.tool_calls == ()
        assert reply.finish_reason == "stop"
        assert reply.text == "Exit code 2.\na.txt\noops\n"

    def test_timed_out_result_says_so(self) -> None:
        result = json.dumps({"exit_code": None, "output": "", "timed_out": True})

        reply = shell().complete(command_turn("sleep 999", "c1", result), TOOLS)

        assert (
            reply.text
            == "Exit code unknown. The command timed out. It printed nothing."
        )

    def test_text_result_quoted_with_exit_code(self) -> None:
        result = "exit code: 0\nREADME.md\n***GITHUB_TOKEN***"

        reply = shell().complete(command_turn("ls", "c1", result), TOOLS)

        assert reply.text == f"Exit code 0.\n{result}"

    def test_text_result_without_exit_code_quoted(self) -> None:
        reply = shell().complete(command_turn("ls", "c1", "README.md"), TOOLS)

        assert reply.text == "The command finished.\nREADME.md"

    def test_no_run_command_tool_explains_fix(self) -> None:
        reply = shell().complete([ChatMessage(role="user", content="ls")], [])

        assert reply.tool_calls == ()
        assert reply.finish_reason == "stop"
        assert reply.text is not None
        assert "has no environment" in reply.text
        assert "arbe thread create --env NAME" in reply.text
        assert "arbe env use NAME" in reply.text

    def test_empty_entry_runs_nothing(self) -> None:
        reply = shell().complete([ChatMessage(role="user", content="  @shell ")], TOOLS)

        assert reply.tool_calls == ()
        assert reply.text == "Nothing to run: the entry has no command text."

    def test_last_message_from_assistant_runs_nothing(self) -> None:
        """Replying with a call to anything but a user entry would re-run a command."""
        messages = [
            ChatMessage(role="user", content="ls"),
            ChatMessage(role="assistant", content="Done."),
        ]

        reply = shell().complete(messages, TOOLS)

        assert reply.tool_calls == ()

    def test_other_builtin_model_rejected(self) -> None:
        context = ProviderContext(model="echo", config=lambda name: None)

        with pytest.raises(InvalidInput) as caught:
            ShellChatModel(context)

        assert "builtin/echo" in str(caught.value)
        assert "--model builtin/shell" in str(caught.value)

    def test_plugin_builds_shell_without_credential(self) -> None:
        plugins = load_plugins(allowed="")
        context = ProviderContext(model="shell", config=lambda name: None)

        model = plugins.chat_model("builtin", context)

        assert plugins.provider_registration("builtin").credential is None
        assert isinstance(model, ShellChatModel)
