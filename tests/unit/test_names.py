"""Name and value rules: secret names, slugs and secret values."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from arbe_core.errors import InvalidInput, InvalidName
from arbe_core.names import (
    MAX_SECRET_BYTES,
    check_secret_name,
    check_slug,
    check_value,
)

SECRET_FIRST = string.ascii_uppercase + "_"
SECRET_REST = SECRET_FIRST + string.digits
SLUG_FIRST = string.ascii_lowercase + string.digits
SLUG_REST = SLUG_FIRST + "-_"

#: Characters near the valid alphabets that a loose check might let through.
TRICKY = string.ascii_letters + string.digits + "-_. \t\n$/=" + "ÄéİıſK٣𝟙"


def is_secret_name(name: str) -> bool:
    """Return whether `name` matches `[A-Z_][A-Z0-9_]*` with at most 128 characters."""
    return (
        1 <= len(name) <= 128
        and name[0] in SECRET_FIRST
        and all(c in SECRET_REST for c in name[1:])
    )


def is_slug(name: str) -> bool:
    """Return whether `name` matches `[a-z0-9][a-z0-9_-]*` with at most 63 characters."""
    return (
        1 <= len(name) <= 63
        and name[0] in SLUG_FIRST
        and all(c in SLUG_REST for c in name[1:])
    )


def accepts(check: Callable[[str], str], name: str) -> bool:
    try:
        check(name)
    except InvalidName:
        return False
    return True


class TestCheckSecretName:
    @given(st.from_regex(r"[A-Z_][A-Z0-9_]{0,127}", fullmatch=True))
    def test_check_secret_name_accepts_valid_alphabet(self, name: str) -> None:
        result = check_secret_name(name)

        assert result == name

    @given(st.text(alphabet=TRICKY, max_size=140) | st.text(max_size=140))
    @example("")
    @example("lower")
    @example("DASH-ED")
    @example("1LEADING_DIGIT")
    @example("A" * 128)
    @example("A" * 129)
    @example("TRAILING_NEWLINE\n")
    def test_check_secret_name_accepts_exactly_rule(self, name: str) -> None:
        accepted = accepts(check_secret_name, name)

        assert accepted == is_secret_name(name)

    @pytest.mark.parametrize(
        "name", ["lower", "DASH-ED", "1ABC", "A" * 129, "", "SPACE D"]
    )
    def test_check_secret_name_error_message(self, name: str) -> None:
        with pytest.raises(InvalidName) as caught:
            check_secret_name(name)

        assert repr(name) in caught.value.message
        assert "[A-Z_][A-Z0-9_]*" in caught.value.message
        assert "128" in caught.value.message

    def test_check_secret_name_uses_given_kind(self) -> None:
        with pytest.raises(InvalidName) as caught:
            check_secret_name("bad", kind="binding")

        assert caught.value.kind == "binding"
        assert caught.value.message.startswith("Invalid binding name 'bad'")


class TestCheckSlug:
    @given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True))
    def test_check_slug_accepts_valid_alphabet(self, name: str) -> None:
        result = check_slug(name, "house")

        assert result == name

    @given(st.text(alphabet=TRICKY, max_size=70) | st.text(max_size=70))
    @example("")
    @example("Upper")
    @example("-leading-dash")
    @example("_leading_underscore")
    @example("a" * 63)
    @example("a" * 64)
    @example("0-ok_too")
    def test_check_slug_accepts_exactly_rule(self, name: str) -> None:
        accepted = accepts(lambda n: check_slug(n, "environment"), name)

        assert accepted == is_slug(name)

    def test_check_slug_error_message(self) -> None:
        with pytest.raises(InvalidName) as caught:
            check_slug("Bad Name", "environment")

        assert caught.value.message.startswith("Invalid environment name 'Bad Name'")
        assert "[a-z0-9][a-z0-9_-]*" in caught.value.message
        assert "63" in caught.value.message


class TestCheckValue:
    def test_check_value_accepts_64_kib(self) -> None:
        value = "x" * MAX_SECRET_BYTES

        result = check_value(value, "TOKEN")

        assert result == value

    def test_check_value_rejects_one_byte_over(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            check_value("x" * (MAX_SECRET_BYTES + 1), "TOKEN")

        assert "'TOKEN'" in caught.value.message
        assert "64 KiB" in caught.value.message

    def test_check_value_counts_utf8_bytes(self) -> None:
        """A value of few characters but over 64 KiB of UTF-8 is rejected."""
        value = "é" * (MAX_SECRET_BYTES // 2 + 1)

        with pytest.raises(InvalidInput):
            check_value(value, "TOKEN")

    def test_check_value_rejects_empty(self) -> None:
        with pytest.raises(InvalidInput) as caught:
            check_value("", "TOKEN")

        assert "'TOKEN'" in caught.value.message
        assert "empty" in caught.value.message

    def test_check_value_message_omits_value(self) -> None:
        value = "sk-test-123" * 7000

        with pytest.raises(InvalidInput) as caught:
            check_value(value, "TOKEN")

        assert "sk-test-123" not in caught.value.message
