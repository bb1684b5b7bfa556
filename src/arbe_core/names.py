"""Name rules for secrets, bindings, environments, houses and bots."""

from __future__ import annotations

import re

from arbe_core.errors import InvalidInput, InvalidName

__all__ = [
    "MAX_SECRET_BYTES",
    "SECRET_NAME_PATTERN",
    "SLUG_PATTERN",
    "check_model_ref",
    "check_secret_name",
    "check_slug",
    "check_value",
    "split_model_ref",
]

#: The pattern of secret and binding names (matched in full).
SECRET_NAME_PATTERN = re.compile(r"[A-Z_][A-Z0-9_]*")
#: The pattern of environment, house and bot names (matched in full).
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SECRET_NAME = SECRET_NAME_PATTERN
_SLUG = SLUG_PATTERN
MAX_SECRET_NAME = 128
MAX_SLUG = 63
MAX_SECRET_BYTES = 64 * 1024


def check_secret_name(name: str, kind: str = "secret") -> str:
    """Return `name` if it is a valid secret or binding name, else raise.

    Raises:
        InvalidName: the name breaks `[A-Z_][A-Z0-9_]*` or is too long.
    """
    rule = (
        "use upper-case letters, digits and underscores, not starting with a "
        f"digit ([A-Z_][A-Z0-9_]*), at most {MAX_SECRET_NAME} characters"
    )
    if len(name) > MAX_SECRET_NAME or not _SECRET_NAME.fullmatch(name):
        raise InvalidName(kind, name, rule)
    return name


def check_slug(name: str, kind: str) -> str:
    """Return `name` if it is a valid environment, house or bot name, else raise.

    Raises:
        InvalidName: the name breaks `[a-z0-9][a-z0-9_-]*` or is too long.
    """
    rule = (
        "use lower-case letters, digits, '-' and '_', starting with a letter or "
        f"digit ([a-z0-9][a-z0-9_-]*), at most {MAX_SLUG} characters"
    )
    if len(name) > MAX_SLUG or not _SLUG.fullmatch(name):
        raise InvalidName(kind, name, rule)
    return name


def check_value(value: str, name: str) -> str:
    """Return a secret value if it is non-empty and at most 64 KiB, else raise.

    The message names the secret, never the value.
    """
    if not value:
        raise InvalidInput(
            f"The value for secret {name!r} is empty; pipe a non-empty value "
            f"into `arbe secret set {name}`."
        )
    size = len(value.encode("utf-8"))
    if size > MAX_SECRET_BYTES:
        raise InvalidInput(
            f"The value for secret {name!r} is {size} bytes, over the limit of "
            f"{MAX_SECRET_BYTES} bytes (64 KiB)."
        )
    return value


def split_model_ref(ref: str) -> tuple[str, str]:
    """Split `PROVIDER/MODEL` into its two parts, or raise `InvalidInput`."""
    provider, sep, model = ref.partition("/")
    if not sep or not provider or not model or ref != ref.strip():
        raise InvalidInput(
            f"Invalid model ref {ref!r}: use PROVIDER/MODEL, for example "
            "openrouter/anthropic/claude-haiku-4.5 or builtin/shell."
        )
    return provider, model


def check_model_ref(ref: str, providers: list[str]) -> str:
    """Return `ref` if its provider is one of `providers`, else raise."""
    provider, _ = split_model_ref(ref)
    if provider not in providers:
        raise InvalidInput(
            f"Invalid model ref {ref!r}: unknown provider {provider!r}; the "
            f"loaded providers are {', '.join(sorted(providers))}."
        )
    return ref
