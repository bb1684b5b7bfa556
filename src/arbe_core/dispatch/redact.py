"""Redaction: bound secret values never reach stored entries or a model."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

__all__ = ["Redactor", "cut_middle"]

#: Lines of a multi-line value shorter than this are not redacted on their
#: own, because they are too common to mean the secret (a blank line, `}`).
MIN_LINE_CHARS = 4
#: Characters kept of a tool's output for the model: a head and a tail.
DEFAULT_TOOL_OUTPUT_CHARS = 16_000

#: The markers that runtimes (`cap_output`) and `cut_middle` put where they
#: left text out. A value cut there shows only a piece on either side.
_OMISSION = re.compile(
    r"(\n\[\.\.\. \d+ (?:bytes omitted|characters \(\d+ bytes\) left out) \.\.\.\]\n)"
)
#: U+FFFD, which a byte cut inside a UTF-8 character decodes to.
_REPLACEMENT = "\ufffd"


class Redactor:
    """Replace every bound value, and each line of a multi-line value, by `***NAME***`.

    Longer values are matched first, so a value that is a prefix of another
    cannot leave the longer one's tail behind. A runtime cuts long output to
    a head and a tail before the redactor gets it, so a value can be cut in two at the
    omission marker. The piece of a value that ends the text before a marker,
    or starts the text after one, is replaced as well. That masks any text
    there that happens to match the start or end of a value too.
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
        redacted = self._pattern.sub(lambda m: f"***{self._names[m.group(0)]}***", text)
        if _OMISSION.search(redacted) is None:
            return redacted
        return self._mask_cut_pieces(redacted)

    def _mask_cut_pieces(self, text: str) -> str:
        """Replace the piece of a value on either side of each omission marker."""
        parts = _OMISSION.split(text)
        # `split` with a group alternates text and markers: t0, m1, t2, m3, t4.
        for index in range(0, len(parts), 2):
            if index + 1 < len(parts):
                parts[index] = self._mask_end(parts[index])
            if index > 0:
                parts[index] = self._mask_start(parts[index])
        return "".join(parts)

    def _mask_end(self, text: str) -> str:
        trimmed = text.rstrip(_REPLACEMENT)
        best, name = 0, ""
        for needle, needle_name in self._names.items():
            size = _prefix_overlap(trimmed, needle)
            if size > best:
                best, name = size, needle_name
        if not best:
            return text
        return f"{trimmed[: len(trimmed) - best]}***{name}***"

    def _mask_start(self, text: str) -> str:
        trimmed = text.lstrip(_REPLACEMENT)
        best, name = 0, ""
        for needle, needle_name in self._names.items():
            size = _prefix_overlap(trimmed[::-1], needle[::-1])
            if size > best:
                best, name = size, needle_name
        if not best:
            return text
        return f"***{name}***{trimmed[best:]}"

    def json_text(self, text: str) -> str:
        """Return JSON text, such as tool-call arguments, with every bound value replaced.

        In JSON a value may stand behind escapes (`\\n`, `\\u00e9`) that a search of
        the text misses, so the strings of a document are redacted one by one
        as well. Text that is not JSON is redacted as plain text.
        """
        redacted = self(text)
        try:
            document = json.loads(redacted)
        except ValueError:
            return redacted
        cleaned = self.redact_any(document)
        if cleaned == document:
            return redacted
        return json.dumps(cleaned, ensure_ascii=False)

    def redact_any(self, value: object) -> object:
        """Redact every string inside nested dicts and lists."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.redact_any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_any(v) for v in value]
        return value


def _prefix_overlap(text: str, needle: str) -> int:
    """Return the length of the longest proper prefix of `needle` that ends `text`.

    Knuth-Morris-Pratt matching keeps this linear in the lengths, even for a
    64 KiB value of one repeated character.
    """
    window = text[-(len(needle) - 1) :] if len(needle) > 1 else ""
    if not window:
        return 0
    failure = [0] * len(needle)
    k = 0
    for i in range(1, len(needle)):
        while k and needle[i] != needle[k]:
            k = failure[k - 1]
        if needle[i] == needle[k]:
            k += 1
        failure[i] = k
    matched = 0
    for char in window:
        while matched and needle[matched] != char:
            matched = failure[matched - 1]
        if needle[matched] == char:
            matched += 1
    return matched


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
