"""Helpers every command group shares: the opened house, output and JSON."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

import typer

from arbe_entry.app import Arbe
from arbe_entry.config import Settings

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout.")
]


class State:
    """Per-process CLI state, kept on the Typer context."""

    def __init__(self, settings: Settings, verbose: int) -> None:
        self.settings = settings
        self.verbose = verbose
        self._arbe: Arbe | None = None

    @property
    def arbe(self) -> Arbe:
        """The opened house (opened on first use)."""
        if self._arbe is None:
            self._arbe = Arbe(self.settings)
        return self._arbe


def state(ctx: typer.Context) -> State:
    """Return the CLI state of the root context."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, State):
        obj = State(Settings.from_env(), 0)
        root.obj = obj
    return obj


def arbe(ctx: typer.Context) -> Arbe:
    """Return the opened house for this command."""
    return state(ctx).arbe


def to_jsonable(value: Any) -> Any:
    """Turn models, enums and times into plain JSON values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "__attrs_attrs__"):
        import attrs

        return to_jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def print_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(to_jsonable(data), ensure_ascii=False) + "\n")


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows as aligned columns on stdout (plain text, no colour)."""
    table = [[_cell(c) for c in row] for row in rows]
    if not table:
        # stdout stays empty for scripts, and a person still gets a reply.
        sys.stderr.write("(none)\n")
        return
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    ]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    sys.stdout.write("\n".join(line.rstrip() for line in lines) + "\n")


def print_fields(fields: Sequence[tuple[str, Any]]) -> None:
    """Print `name: value` lines on stdout."""
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        sys.stdout.write(f"{name.ljust(width)}  {_cell(value)}\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    sys.stderr.write(f"warning: {message}\n")


def note(message: str) -> None:
    """Print progress or a hint on stderr."""
    sys.stderr.write(f"{message}\n")


def alias(app: typer.Typer, names: Sequence[str], function: Callable[..., Any]) -> None:
    """Register `function` under extra hidden names, such as `ls` for `list`."""
    for name in names:
        app.command(name, hidden=True)(function)
