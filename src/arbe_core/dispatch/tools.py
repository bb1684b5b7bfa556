"""The tools offered to bots, their schemas and argument checks."""

from __future__ import annotations

import json
from typing import Any

from arbe_core.chat import ToolSpec
from arbe_core.errors import InvalidInput

__all__ = ["DELEGATE_TASK", "RUN_COMMAND", "parse_arguments"]

#: The maximum time a single command may run, in seconds.
MAX_TIMEOUT_S = 3600.0
DEFAULT_TIMEOUT_S = 600.0

RUN_COMMAND = ToolSpec(
    name="run_command",
    description=(
        "Run a shell command with bash in the environment's sandbox and return "
        "its exit code and output. Bound secrets are environment variables; "
        "their values are shown as ***NAME***."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The bash command to run."},
            "cwd": {
                "type": "string",
                "description": "Working directory, relative to the work tree.",
            },
            "timeout_s": {
                "type": "number",
                "description": f"Seconds before the command is killed (max {MAX_TIMEOUT_S:.0f}).",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    },
)

DELEGATE_TASK = ToolSpec(
    name="delegate_task",
    description=(
        "Hand one coding task to a helper bot that works in a fresh sandbox with "
        "the repository cloned, and get its summary back. The sandbox is "
        "destroyed afterwards."
    ),
    parameters={
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "What the helper should do."},
            "repo": {
                "type": "string",
                "description": "Repository URL; one of the environment's allowed repos.",
            },
        },
        "required": ["task"],
        "additionalProperties": False,
    },
)

_SCHEMAS = {RUN_COMMAND.name: RUN_COMMAND, DELEGATE_TASK.name: DELEGATE_TASK}


def parse_arguments(name: str, raw: str, offered: list[str]) -> dict[str, Any]:
    """Parse and check a tool call's JSON arguments.

    Raises:
        InvalidInput: unknown tool, empty or non-JSON arguments, not an
            object, a missing required field or a field of the wrong type.
    """
    if name not in offered:
        raise InvalidInput(f"unknown tool {name!r}; the tools are {', '.join(offered)}")
    if not raw or not raw.strip():
        raise InvalidInput(f"{name}: the arguments are empty; send a JSON object")
    try:
        args = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name}: the arguments are not JSON ({exc})") from None
    if not isinstance(args, dict):
        raise InvalidInput(f"{name}: the arguments must be a JSON object")

    properties: dict[str, Any] = _SCHEMAS[name].parameters["properties"]  # type: ignore[assignment]
    required: list[str] = _SCHEMAS[name].parameters["required"]  # type: ignore[assignment]
    for field in required:
        if field not in args:
            raise InvalidInput(f"{name}: the field {field!r} is missing")
    for field, value in args.items():
        if field not in properties:
            raise InvalidInput(f"{name}: unknown field {field!r}")
        _check_type(name, field, value, properties[field]["type"])
    return args


def _check_type(tool: str, field: str, value: object, kind: str) -> None:
    if kind == "string":
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"{tool}: {field!r} must be a non-empty string")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{tool}: {field!r} must be a number")
        if not 0 < value <= MAX_TIMEOUT_S:
            raise InvalidInput(
                f"{tool}: {field!r} must be above 0 and at most {MAX_TIMEOUT_S:.0f}"
            )
