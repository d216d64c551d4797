"""Onion address exchange packet (tunnel.tor.announce): golden bytes, round trips, rejections."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.testing.rng import SeededRng
from tunnel.tor.announce import (
    TOR_ONION_PACKET_ID,
    OnionAddressAnnouncement,
    OnionQuery,
    OnionWithdraw,
    decode_onion_message_untrusted,
)
from tunnel.tor.onion_key import OnionKey

TORPROJECT = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"


def test_golden_bytes() -> None:
    msg = OnionAddressAnnouncement(bytes(range(32)), 33445, tor_only=True)
    assert msg.encode() == bytes.fromhex("b40101" + bytes(range(32)).hex() + "82a501")
    assert OnionWithdraw().encode() == b"\xb4\x02"
    assert OnionQuery().encode() == b"\xb4\x03"
    assert TOR_ONION_PACKET_ID == 180  # lossless custom range 160-191


def test_address_round_trip_with_a_real_key() -> None:
    key = OnionKey.generate(SeededRng("announce"))
    msg = OnionAddressAnnouncement(key.public_key, 443)
    assert msg.address == key.address
    assert OnionAddressAnnouncement.from_address(key.address, 443) == msg
    back = OnionAddressAnnouncement.from_address(TORPROJECT.upper(), 80)
    assert back.address == TORPROJECT
    with pytest.raises(ValueError, match="not a v3 onion"):
        OnionAddressAnnouncement.from_address("example.com", 80)


@given(st.binary(min_size=32, max_size=32), st.integers(1, 65535), st.booleans())
def test_round_trip(public_key: bytes, port: int, tor_only: bool) -> None:
    msg = OnionAddressAnnouncement(public_key, port, tor_only)
    assert decode_onion_message_untrusted(msg.encode()) == msg


def test_round_trip_empty_bodies() -> None:
    assert decode_onion_message_untrusted(b"\xb4\x02") == OnionWithdraw()
    assert decode_onion_message_untrusted(b"\xb4\x03") == OnionQuery()


GOOD = OnionAddressAnnouncement(bytes(32), 80).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",  # empty
        b"\xb4",  # no type
        b"\xa2\x01",  # other packet id
        b"\xb4\x09",  # unknown type
        GOOD[:-1],  # truncated
        GOOD + b"\x00",  # too long
        GOOD[:2] + b"\x02" + GOOD[3:],  # unknown version
        GOOD[:-3] + b"\x00\x00" + GOOD[-1:],  # port 0
        GOOD[:-1] + b"\x80",  # unknown flag
        b"\xb4\x02\x00",  # withdraw with a body
        b"\xb4\x03\x00",  # query with a body
    ],
)
def test_rejects(data: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_onion_message_untrusted(data)


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_badpacket(data: bytes) -> None:
    try:
        msg = decode_onion_message_untrusted(data)
    except BadPacket:
        return
    assert msg.encode() == data
