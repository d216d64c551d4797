"""Messenger / friend_connection packet codecs (tox-protocol.md 8.1-8.2)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire.ip_port import IPPort
from tunnel.wire.messenger import (
    ALIVE,
    ONLINE,
    decode_byte_untrusted,
    decode_share_relays_untrusted,
    decode_text_untrusted,
    encode_share_relays,
    encode_text,
    encode_typing,
    encode_userstatus,
)
from tunnel.wire.packed_node import PackedNode


def test_golden_bytes() -> None:
    assert ALIVE == b"\x10"
    assert ONLINE == b"\x18"
    assert encode_text(64, b"hi") == b"\x40hi"
    assert encode_text(48, b"") == b"\x30"
    assert encode_userstatus(2) == b"\x32\x02"
    assert encode_typing(True) == b"\x33\x01"
    relay = PackedNode(IPPort.parse("127.0.0.1", 33445), bytes(range(32)), tcp=True)
    assert encode_share_relays([relay]) == b"\x11" + bytes.fromhex("827f00000182a5") + bytes(
        range(32)
    )


@given(st.sampled_from([48, 49, 64, 65]), st.binary(min_size=1, max_size=128))
def test_text_roundtrip(packet_id: int, text: bytes) -> None:
    assert decode_text_untrusted(encode_text(packet_id, text)) == text


def test_text_limits() -> None:
    with pytest.raises(BadPacket):
        decode_text_untrusted(b"\x40")  # empty message
    with pytest.raises(BadPacket):
        decode_text_untrusted(b"\x30" + bytes(129))
    with pytest.raises(BadPacket):
        decode_text_untrusted(b"\x31" + bytes(1008))
    with pytest.raises(BadPacket):
        decode_text_untrusted(b"\x40" + bytes(1373))
    with pytest.raises(BadPacket):
        decode_text_untrusted(b"\x99abc")
    with pytest.raises(BadPacket):
        decode_byte_untrusted(b"\x32\x03", 50, 2)
    with pytest.raises(BadPacket):
        decode_byte_untrusted(b"\x32", 50, 2)
    with pytest.raises(BadPacket):
        decode_share_relays_untrusted(b"\x11\x99")
    with pytest.raises(ValueError, match="outside"):
        encode_text(64, b"")


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    for decode in (
        decode_text_untrusted,
        decode_share_relays_untrusted,
        lambda d: decode_byte_untrusted(d, 50, 2),
    ):
        try:
            decode(data)
        except BadPacket:
            pass
    try:
        decode_share_relays_untrusted(b"\x11" + data)
    except BadPacket:
        pass
