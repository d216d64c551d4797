"""Large lossless fragments (issue 8): golden bytes, round trips, rejections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire.large_lossless import (
    FRAGMENT_DATA_BYTES,
    FRAGMENT_HEADER_BYTES,
    MAX_LARGE_LOSSLESS_BYTES,
    LargeFragment,
    split_fragments,
)


def test_fragment_golden_bytes() -> None:
    """0xEA | number u32 | total u16 | offset u16 | bytes, big endian."""
    fragment = LargeFragment(0x01020304, 2000, FRAGMENT_DATA_BYTES, b"\xaa" * (2000 - 1364))
    encoded = fragment.encode()
    assert encoded[:FRAGMENT_HEADER_BYTES] == bytes.fromhex("ea0102030407d00554")
    assert LargeFragment.decode_untrusted(encoded) == fragment


def test_split_covers_the_packet_in_order() -> None:
    payload = bytes(range(256)) * 20  # 5120 bytes
    pieces = [LargeFragment.decode_untrusted(p) for p in split_fragments(7, payload)]
    assert [p.offset for p in pieces] == [0, 1364, 2728, 4092]
    assert b"".join(p.data for p in pieces) == payload
    assert {p.number for p in pieces} == {7}
    assert all(len(p.encode()) <= 1373 for p in pieces)
    with pytest.raises(ValueError, match="not a large one"):
        split_fragments(7, bytes(1373))
    with pytest.raises(ValueError, match="not a large one"):
        split_fragments(7, bytes(MAX_LARGE_LOSSLESS_BYTES + 1))


@given(st.integers(0, 0xFFFFFFFF), st.integers(1374, MAX_LARGE_LOSSLESS_BYTES), st.data())
def test_fragment_round_trip(number: int, total: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, (total - 1) // FRAGMENT_DATA_BYTES))
    offset = index * FRAGMENT_DATA_BYTES
    piece = bytes(min(FRAGMENT_DATA_BYTES, total - offset))
    fragment = LargeFragment(number, total, offset, piece)
    assert LargeFragment.decode_untrusted(fragment.encode()) == fragment


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "too short"),
        (bytes.fromhex("ea0000000107d00000"), "too short"),  # header only
        (bytes.fromhex("eb0000000107d00000") + bytes(1364), "not a large fragment"),
        (bytes.fromhex("ea0000000105000000") + bytes(1280), "not a large one"),
        (bytes.fromhex("ea0000000107d00001") + bytes(1364), "offset 1"),
        (bytes.fromhex("ea0000000107d00aa8") + bytes(10), "offset 2728"),
        (bytes.fromhex("ea0000000107d00000") + bytes(1363), "1363 bytes at 0"),
        (bytes.fromhex("ea0000000107d00554") + bytes(637), "637 bytes at 1364"),
    ],
)
def test_fragment_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(BadPacket, match=reason):
        LargeFragment.decode_untrusted(raw)
