"""Sprite names: a house prefix replaces the labels that Sprites lack.

Sprites carry no key-value labels, so arbe marks a house's sprites by name:
every one starts with `arbe-<tag>-`, where `<tag>` is the first 8 hex digits
of the SHA-256 of the house id. The tag has a fixed length, so no house's
prefix can start another house's prefix (a house named `a` and one named
`a-b` would collide if the prefix held the house name). The rest, the short
name, is the name given to `provision`, or `<house name>-<8 random hex
digits>`. A sandbox's id is the full sprite name and its name the short one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final, final

from arbe_core.errors import InvalidName

__all__ = ["SpriteNames"]

#: Sprite names are used as DNS labels in sprite URLs, so they follow the
#: DNS label rule: lower-case letters, digits and inner hyphens, at most 63.
_SPRITE_NAME: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
MAX_SPRITE_NAME: Final = 63
_TAG_DIGITS: Final = 8
#: Characters of the house name kept in a generated sprite name.
_HOUSE_PART: Final = 20


@final
class SpriteNames:
    """The names of one house's sprites: build, recognise and resolve them."""

    def __init__(self, house_id: str, house_name: str) -> None:
        tag = hashlib.sha256(house_id.encode("utf-8")).hexdigest()[:_TAG_DIGITS]
        self.prefix = f"arbe-{tag}-"
        self._house_part = _to_label(house_name)[:_HOUSE_PART].strip("-") or "house"

    def owns(self, name: str) -> bool:
        """Tell whether `name` is a sprite name of this house."""
        return name.startswith(self.prefix) and _is_valid(name)

    def new(self, requested: str | None) -> str:
        """Return the name to create a sprite under.

        Args:
            requested: the name from the sandbox spec, with or without the
                house prefix; `_` becomes `-`. None picks a fresh name.

        Raises:
            InvalidName: the resulting name breaks the sprite name rule.
        """
        if requested is None:
            return f"{self.prefix}{self._house_part}-{secrets.token_hex(4)}"

        name = self._with_prefix(requested)
        if not _is_valid(name):
            rule = (
                "use lower-case letters, digits, '-' and '_', starting and ending "
                f"with a letter or digit, at most {MAX_SPRITE_NAME - len(self.prefix)} "
                f"characters after the house prefix {self.prefix!r}"
            )
            raise InvalidName("sandbox", requested, rule)
        return name

    def resolve(self, sandbox_id: str) -> str | None:
        """Return the full sprite name for an id or short name, or None.

        A name without this house's prefix is read as a short name and gets
        the prefix, so no call can reach another house's sprite. None means
        no sprite of this house can have the name.
        """
        name = self._with_prefix(sandbox_id)
        return name if _is_valid(name) else None

    def short(self, name: str) -> str:
        """Return a house sprite's name without the house prefix."""
        return name.removeprefix(self.prefix)

    def _with_prefix(self, sandbox_id: str) -> str:
        if sandbox_id.startswith(self.prefix):
            return sandbox_id
        return self.prefix + sandbox_id.replace("_", "-")


def _to_label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower())


def _is_valid(name: str) -> bool:
    return len(name) <= MAX_SPRITE_NAME and _SPRITE_NAME.fullmatch(name) is not None
