"""Path MTU probe codecs (tunnel.wire.vpn Probe/ProbeAck): golden bytes, round-trips,
rejections, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire.vpn import (
    MAX_PROBE_SIZE_BYTES,
    MIN_PROBE_SIZE_BYTES,
    VPN_CONTROL_PACKET_ID,
    VPN_DATA_PACKET_ID,
    VPN_PROBE_PACKET_ID,
    Probe,
    ProbeAck,
    decode_probe_untrusted,
)


def test_probe_id_is_a_custom_lossy_id_of_its_own() -> None:
    assert 200 <= VPN_PROBE_PACKET_ID <= 254
    assert VPN_PROBE_PACKET_ID not in (200, 226, VPN_DATA_PACKET_ID, VPN_DATA_PACKET_ID + 1)
    assert VPN_PROBE_PACKET_ID != VPN_CONTROL_PACKET_ID


def test_golden_probe_and_ack() -> None:
    probe = Probe(0x01020304, 20)
    assert probe.encode() == bytes.fromhex("e601010203040014") + bytes(13)
    assert len(probe.encode()) == 21
    assert (
        ProbeAck(0x01020304, 9000).encode()
        == bytes.fromhex("e602010203042328")
        == bytes([0xE6, 2, 1, 2, 3, 4, 0x23, 0x28])
    )


@given(st.integers(0, 0xFFFFFFFF), st.integers(MIN_PROBE_SIZE_BYTES, 12000))
def test_round_trips(nonce: int, size: int) -> None:
    probe = Probe(nonce, size)
    data = probe.encode()
    assert len(data) == size + 1
    assert decode_probe_untrusted(data) == probe
    assert decode_probe_untrusted(memoryview(data)) == probe
    ack = ProbeAck(nonce, size)
    assert decode_probe_untrusted(ack.encode()) == ack


def test_largest_probe() -> None:
    probe = Probe(7, MAX_PROBE_SIZE_BYTES)
    assert decode_probe_untrusted(probe.encode()) == probe


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([VPN_PROBE_PACKET_ID, 1, 0, 0, 0, 1, 0]),  # truncated header
        bytes([VPN_DATA_PACKET_ID, 1, 0, 0, 0, 1, 0, 7]),  # wrong id
        bytes([VPN_PROBE_PACKET_ID, 3, 0, 0, 0, 1, 0, 7]),  # unknown type
        bytes([VPN_PROBE_PACKET_ID, 0, 0, 0, 0, 1, 0, 7]),  # type 0
        bytes([VPN_PROBE_PACKET_ID, 1, 0, 0, 0, 1, 0, 6]),  # size below the header
        bytes([VPN_PROBE_PACKET_ID, 2, 0, 0, 0, 1, 0, 6]),  # ack of an impossible size
        Probe(1, 20).encode()[:-1],  # shorter than its size
        Probe(1, 20).encode() + b"\x00",  # longer than its size
        Probe(1, 20).encode()[:-1] + b"\x01",  # non-zero padding
        Probe(1, 20).encode()[:8] + b"\x01" + bytes(12),  # non-zero padding, first byte
        ProbeAck(1, 20).encode() + b"\x00",  # ack with trailing bytes
    ],
)
def test_rejects(data: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_probe_untrusted(data)


@pytest.mark.parametrize(("nonce", "size"), [(-1, 100), (1 << 32, 100), (1, 6), (1, 1 << 16)])
def test_constructor_rejects_out_of_range(nonce: int, size: int) -> None:
    with pytest.raises(ValueError):
        Probe(nonce, size)
    with pytest.raises(ValueError):
        ProbeAck(nonce, size)


@given(st.binary(max_size=64))
def test_fuzz_only_bad_packet(data: bytes) -> None:
    for candidate in (data, bytes([VPN_PROBE_PACKET_ID]) + data):
        try:
            message = decode_probe_untrusted(candidate)
        except BadPacket:
            continue
        assert message.encode() == candidate
