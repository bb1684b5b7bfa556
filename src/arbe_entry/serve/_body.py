"""Read JSON request bodies and query parameters, with one error per bad field."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from arbe_core.errors import InvalidInput
from arbe_entry.serve._errors import RequestError

#: The largest request body read, in bytes (a secret value is at most 64 KiB).
MAX_BODY_BYTES = 1024 * 1024


async def read_json(request: Request) -> dict[str, Any]:
    """Return the request's JSON object.

    Raises:
        RequestError: the content type is not JSON (415), the body is too
            large (413) or not valid JSON (400).
        InvalidInput: the JSON is not an object.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise RequestError(
            f"Unsupported content type {media_type or 'none'!r}: send the body "
            "as application/json.",
            status=415,
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(
                f"The request body is over the limit of {MAX_BODY_BYTES} bytes.",
                status=413,
            )
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return body


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


class Fields:
    """Take typed fields out of a JSON object; unknown fields are rejected."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self._seen: set[str] = set()

    def text(self, name: str, *, required: bool = False) -> str | None:
        """Return string field `name`, or None when absent and not required."""
        value = self._take(name, required)
        if value is None or isinstance(value, str):
            return value
        raise InvalidInput(f"Invalid field {name!r}: expected a string.")

    def flag(self, name: str) -> bool | None:
        """Return boolean field `name`, or None when absent."""
        value = self._take(name, False)
        if value is None or isinstance(value, bool):
            return value
        raise InvalidInput(f"Invalid field {name!r}: expected true or false.")

    def integer(self, name: str) -> int | None:
        """Return integer field `name`, or None when absent."""
        value = self._take(name, False)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise InvalidInput(f"Invalid field {name!r}: expected an integer.")

    def texts(self, name: str) -> list[str]:
        """Return list-of-strings field `name`, or an empty list when absent."""
        value = self._take(name, False)
        if value is None:
            return []
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise InvalidInput(f"Invalid field {name!r}: expected a list of strings.")

    def done(self) -> None:
        """Raise `InvalidInput` if the body has a field no reader took."""
        unknown = sorted(set(self._body) - self._seen)
        if unknown:
            raise InvalidInput(
                f"Unknown field {unknown[0]!r}; the fields are "
                f"{', '.join(sorted(self._seen))}."
            )

    def _take(self, name: str, required: bool) -> Any:
        self._seen.add(name)
        if name not in self._body:
            if required:
                raise InvalidInput(f"Missing field {name!r}.")
            return None
        value = self._body[name]
        if value is None and required:
            raise InvalidInput(f"Missing field {name!r}.")
        return value


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Return integer query parameter `name` within [low, high], else raise."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(
            f"Invalid query parameter {name}={text[:50]!r}: expected an integer."
        ) from None
    if not low <= value <= high:
        raise InvalidInput(
            f"Invalid query parameter {name}={value}: expected {low} to {high}."
        )
    return value


def query_flag(request: Request, name: str) -> bool:
    """Return boolean query parameter `name` (`true` or `false`; absent is false)."""
    text = request.query_params.get(name)
    if text is None:
        return False
    if text in ("true", "false"):
        return text == "true"
    raise InvalidInput(
        f"Invalid query parameter {name}={text[:50]!r}: expected true or false."
    )


def split_names(values: Iterable[str]) -> list[str]:
    """Split form values on commas and whitespace into names, dropping blanks."""
    names: list[str] = []
    for value in values:
        names.extend(part for part in value.replace(",", " ").split() if part)
    return list(dict.fromkeys(names))
