"""AES-GCM envelope encryption: round trips, bound context and the master key."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from arbe_adapters.crypto import AesGcmSealer, generate_master_key
from arbe_core.errors import CryptoError, MasterKeyMismatch
from arbe_core.ports import SealContext

MASTER_KEY = bytes(range(32))
OTHER_MASTER_KEY = bytes(range(1, 33))

SEALER = AesGcmSealer(MASTER_KEY)
WRAPPED_KEY = SEALER.new_data_key()
CONTEXT = SealContext(
    house_id="hse_000001", name="OPENROUTER_API_KEY", version=1, wrapped_key=WRAPPED_KEY
)

names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
house_ids = st.from_regex(r"hse_[0-9a-f]{6}", fullmatch=True)
versions = st.integers(min_value=1, max_value=10_000)


class TestAesGcmSealer:
    @given(st.text())
    def test_sealer_round_trips_any_text(self, value: str) -> None:
        sealed = SEALER.seal(value, CONTEXT)

        opened = SEALER.open(sealed, CONTEXT)

        assert opened == value

    def test_sealer_output_hides_plaintext(self) -> None:
        sealed = SEALER.seal("sk-test-123", CONTEXT)

        assert b"sk-test-123" not in sealed

    def test_sealer_uses_fresh_nonce(self) -> None:
        first = SEALER.seal("sk-test-123", CONTEXT)
        second = SEALER.seal("sk-test-123", CONTEXT)

        assert first != second

    @given(st.text(min_size=1), names)
    def test_sealer_rejects_other_secret_name(self, value: str, name: str) -> None:
        assume(name != CONTEXT.name)
        other = attrs.evolve(CONTEXT, name=name)
        sealed = SEALER.seal(value, CONTEXT)

        with pytest.raises(CryptoError):
            SEALER.open(sealed, other)

    @given(st.text(min_size=1), versions)
    def test_sealer_rejects_other_version(self, value: str, version: int) -> None:
        assume(version != CONTEXT.version)
        other = attrs.evolve(CONTEXT, version=version)
        sealed = SEALER.seal(value, CONTEXT)

        with pytest.raises(CryptoError):
            SEALER.open(sealed, other)

    @given(st.text(min_size=1), house_ids)
    def test_sealer_rejects_other_house_id(self, value: str, house_id: str) -> None:
        """The house id is bound even when the same data key is used."""
        assume(house_id != CONTEXT.house_id)
        other = attrs.evolve(CONTEXT, house_id=house_id)
        sealed = SEALER.seal(value, CONTEXT)

        with pytest.raises(CryptoError):
            SEALER.open(sealed, other)

    def test_sealer_rejects_other_house_key(self) -> None:
        other = attrs.evolve(CONTEXT, wrapped_key=SEALER.new_data_key())
        sealed = SEALER.seal("sk-test-123", CONTEXT)

        with pytest.raises(CryptoError) as caught:
            SEALER.open(sealed, other)

        assert type(caught.value) is CryptoError

    def test_sealer_rejects_context_fields_moved(self) -> None:
        """The fields are length-prefixed, so moving text between them fails."""
        sealed = SEALER.seal("sk-test-123", attrs.evolve(CONTEXT, house_id="hse_1"))
        shifted = attrs.evolve(CONTEXT, house_id="hse_", name="1" + CONTEXT.name)

        with pytest.raises(CryptoError):
            SEALER.open(sealed, shifted)

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="flipped-tag"),
            pytest.param(lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], id="flipped"),
            pytest.param(lambda b: b[:10], id="truncated"),
            pytest.param(lambda b: b"\x02" + b[1:], id="unknown-format"),
            pytest.param(lambda b: b"", id="empty"),
        ],
    )
    def test_sealer_rejects_altered_value(
        self, tamper: Callable[[bytes], bytes]
    ) -> None:
        sealed = SEALER.seal("sk-test-123", CONTEXT)

        with pytest.raises(CryptoError) as caught:
            SEALER.open(tamper(sealed), CONTEXT)

        assert "OPENROUTER_API_KEY" in caught.value.message
        assert "sk-test-123" not in caught.value.message


class TestMasterKey:
    @given(st.binary(min_size=32, max_size=32))
    def test_sealer_wrong_master_key_mismatch(self, other_key: bytes) -> None:
        assume(other_key != MASTER_KEY)
        sealed = SEALER.seal("sk-test-123", CONTEXT)
        other = AesGcmSealer(other_key)

        with pytest.raises(MasterKeyMismatch):
            other.open(sealed, CONTEXT)

    def test_sealer_check_wrong_master_key(self) -> None:
        other = AesGcmSealer(OTHER_MASTER_KEY)

        with pytest.raises(MasterKeyMismatch) as caught:
            other.check(WRAPPED_KEY)

        assert "does not match this database" in caught.value.message

    def test_sealer_check_right_master_key(self) -> None:
        fresh = AesGcmSealer(MASTER_KEY)

        fresh.check(WRAPPED_KEY)

    def test_sealer_wrong_master_key_cannot_seal(self) -> None:
        other = AesGcmSealer(OTHER_MASTER_KEY)

        with pytest.raises(MasterKeyMismatch):
            other.seal("sk-test-123", CONTEXT)

    @pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
    def test_sealer_rejects_master_key_size(self, size: int) -> None:
        with pytest.raises(CryptoError) as caught:
            AesGcmSealer(b"k" * size)

        assert f"not {size}" in caught.value.message

    def test_generate_master_key_is_random(self) -> None:
        first = generate_master_key()
        second = generate_master_key()

        assert len(first) == 32
        assert first != second


class TestRewrap:
    def test_rewrap_opens_under_new_key(self) -> None:
        new_key = generate_master_key()
        sealed = SEALER.seal("sk-test-123", CONTEXT)
        rewrapped = SEALER.rewrap(WRAPPED_KEY, new_key)

        opened = AesGcmSealer(new_key).open(
            sealed, attrs.evolve(CONTEXT, wrapped_key=rewrapped)
        )

        assert opened == "sk-test-123"

    def test_rewrap_old_key_mismatch(self) -> None:
        rewrapped = SEALER.rewrap(WRAPPED_KEY, generate_master_key())

        with pytest.raises(MasterKeyMismatch):
            AesGcmSealer(MASTER_KEY).check(rewrapped)

    def test_rewrap_changes_wrapped_key(self) -> None:
        new_key = generate_master_key()

        rewrapped = SEALER.rewrap(WRAPPED_KEY, new_key)

        assert rewrapped != WRAPPED_KEY
