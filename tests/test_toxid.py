"""Tox ID parsing and formatting (tox-protocol.md 2.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.toxid import ToxId, ToxIdError, tox_id_checksum

PK = bytes(range(32))
NOSPAM = bytes.fromhex("deadbeef")


def test_checksum_is_xor_of_words() -> None:
    data = PK + NOSPAM
    even = odd = 0
    for i in range(0, 36, 2):
        even ^= data[i]
        odd ^= data[i + 1]
    assert tox_id_checksum(data) == bytes((even, odd))


def test_round_trip_hex() -> None:
    tid = ToxId(PK, NOSPAM)
    text = str(tid)
    assert len(text) == 76
    assert text == text.upper()
    assert ToxId.parse(text) == tid
    assert ToxId.parse("  " + text.lower() + "\n") == tid


@given(st.binary(min_size=31, max_size=31), st.integers(0, 127), st.binary(min_size=4, max_size=4))
def test_round_trip_property(head: bytes, last: int, nospam: bytes) -> None:
    tid = ToxId(head + bytes((last,)), nospam)
    assert ToxId.from_bytes(tid.to_bytes()) == tid


def test_wrong_length() -> None:
    with pytest.raises(ToxIdError, match="76 hex characters, got 75"):
        ToxId.parse(str(ToxId(PK, NOSPAM))[:-1])


def test_bad_hex() -> None:
    with pytest.raises(ToxIdError, match="not hexadecimal"):
        ToxId.parse("zz" + str(ToxId(PK, NOSPAM))[2:])


def test_bad_checksum() -> None:
    text = str(ToxId(PK, NOSPAM))
    bad = text[:-1] + ("0" if text[-1] != "0" else "1")
    with pytest.raises(ToxIdError, match="checksum"):
        ToxId.parse(bad)


def test_invalid_public_key() -> None:
    raw = bytes(31) + b"\x80" + NOSPAM
    with pytest.raises(ToxIdError, match="invalid public key"):
        ToxId.from_bytes(raw + tox_id_checksum(raw))
