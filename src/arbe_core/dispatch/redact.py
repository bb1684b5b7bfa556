"""Redaction: bound secret values never reach stored entries or a model."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["Redactor", "cut_middle"]

#: Lines of a multi-line value shorter than this are not redacted on their
#: own, because they are too common to mean the secret (a blank line, `}`).
MIN_LINE_CHARS = 4
#: Characters kept of a tool's output for the model: a head and a tail.
DEFAULT_TOOL_OUTPUT_CHARS = 16_000


class Redactor:
    """Replace every bound value, and each line of a multi-line value, by `***NAME***`.

    Longer values are matched first, so a value that is a prefix of another
    cannot leave the longer one's tail behind.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        needles: dict[str, str] = {}
        for name, value in values.items():
            if value:
                needles.setdefault(value, name)
            for line in value.splitlines():
                stripped = line.strip()
                if len(stripped) >= MIN_LINE_CHARS:
                    needles.setdefault(stripped, name)
        self._names = needles
        ordered = sorted(needles, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(n) for n in ordered)) if ordered else None
        )

    def __call__(self, text: str) -> str:
        """Return `text` with every bound value replaced."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"***{self._names[m.group(0)]}***", text)

    def redact_any(self, value: object) -> object:
        """Redact every string inside nested dicts and lists."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.redact_any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_any(v) for v in value]
        return value


def cut_middle(text: str, limit: int = DEFAULT_TOOL_OUTPUT_CHARS) -> str:
    """Keep a head and a tail of `text` within `limit` characters, noting the cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    left_out = len(text) - 2 * half
    cut_bytes = len(text[half:-half].encode("utf-8"))
    return (
        f"{text[:half]}\n[... {left_out} characters ({cut_bytes} bytes) left out ...]\n"
        f"{text[-half:]}"
    )
