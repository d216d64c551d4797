"""VPN fragment codec (tunnel.wire.vpn_fragment): golden bytes, round trips, rejections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire.tuntox import UDP_LOSSY_PACKET_ID
from tunnel.wire.vpn import (
    MAX_CUSTOM_PACKET_SIZE_BYTES,
    VPN_DATA_PACKET_ID,
    VPN_PROBE_PACKET_ID,
)
from tunnel.wire.vpn_fragment import (
    FRAGMENT_DATA_BYTES,
    MAX_FRAGMENTS,
    VPN_FRAGMENT_PACKET_ID,
    Fragment,
    decode_fragment_untrusted,
    fragment_count,
    split_packet,
)


def test_fragment_id_is_a_custom_lossy_id_of_its_own() -> None:
    assert 200 <= VPN_FRAGMENT_PACKET_ID <= 254
    assert VPN_FRAGMENT_PACKET_ID not in (
        200,  # toxvpn
        UDP_LOSSY_PACKET_ID,
        VPN_DATA_PACKET_ID,
        VPN_PROBE_PACKET_ID,
    )
    assert FRAGMENT_DATA_BYTES == 1366
    assert MAX_FRAGMENTS * FRAGMENT_DATA_BYTES >= 0xFFFF > (MAX_FRAGMENTS - 1) * 1366


def test_golden_fragments() -> None:
    last = Fragment(0x01020304, 1, 2, b"xyz")
    assert last.encode() == bytes.fromhex("e8010203040102") + b"xyz"
    first = Fragment(7, 0, 2, bytes(FRAGMENT_DATA_BYTES)).encode()
    assert first[:7] == bytes([0xE8, 0, 0, 0, 7, 0, 2])
    assert len(first) == MAX_CUSTOM_PACKET_SIZE_BYTES == 1373


def test_split_packet_fits_toxcore_lossy_packets_and_joins_back() -> None:
    packet = bytes(range(256)) * 32  # 8192 bytes
    pieces = split_packet(5, packet)
    assert len(pieces) == fragment_count(len(packet)) == 6
    assert all(len(p) <= MAX_CUSTOM_PACKET_SIZE_BYTES for p in pieces)
    decoded = [decode_fragment_untrusted(p) for p in pieces]
    assert [(f.number, f.index, f.count) for f in decoded] == [(5, i, 6) for i in range(6)]
    assert b"".join(bytes(f.data) for f in decoded) == packet
    assert [f.offset for f in decoded] == [i * FRAGMENT_DATA_BYTES for i in range(6)]
    assert split_packet(1 << 32, packet)[0][1:5] == bytes(4)  # the number wraps
    for size in (FRAGMENT_DATA_BYTES, 0, 0x10000):
        with pytest.raises(ValueError, match="cannot split"):
            split_packet(1, bytes(size))
    assert len(split_packet(1, bytes(0xFFFF))) == MAX_FRAGMENTS


@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(FRAGMENT_DATA_BYTES + 1, 0xFFFF),
    st.data(),
)
def test_round_trip(number: int, length: int, data: st.DataObject) -> None:
    pieces = split_packet(number, bytes(length))
    index = data.draw(st.integers(0, len(pieces) - 1))
    fragment = decode_fragment_untrusted(pieces[index])
    assert (fragment.number, fragment.index, fragment.count) == (number, index, len(pieces))
    assert fragment.encode() == pieces[index]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "truncated"),
        (bytes.fromhex("e8000000010102"), "truncated"),  # header only: empty fragment
        (bytes.fromhex("e400000001000278"), "not a VPN fragment"),
        (bytes.fromhex("e80000000100007878"), "count 0"),
        (bytes.fromhex("e80000000100017878"), "count 1"),
        (bytes.fromhex("e800000001003178"), "count 49"),
        (bytes.fromhex("e80000000102027878"), "index 2 >= count 2"),
        (bytes.fromhex("e80000000109037878"), "index 9 >= count 3"),
        (bytes.fromhex("e800000001000278"), "fragment 0 of 2 carries 1 bytes"),
        (bytes.fromhex("e8000000010102") + bytes(1367), "last fragment carries 1367"),
    ],
)
def test_rejections(data: bytes, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_fragment_untrusted(data)


def test_constructor_checks() -> None:
    for args in ((0, 2, 2, b"x"), (0, 0, 1, b"x"), (0, 0, 49, b"x"), (1 << 32, 1, 2, b"x")):
        with pytest.raises(ValueError):
            Fragment(*args)
    with pytest.raises(ValueError):
        Fragment(0, 0, 2, b"short")
    with pytest.raises(ValueError):
        Fragment(0, 1, 2, b"")


@given(st.binary(max_size=1400))
def test_random_input_raises_only_bad_packet(data: bytes) -> None:
    try:
        fragment = decode_fragment_untrusted(bytes([VPN_FRAGMENT_PACKET_ID]) + data)
    except BadPacket:
        return
    assert fragment.encode() == bytes([VPN_FRAGMENT_PACKET_ID]) + data
