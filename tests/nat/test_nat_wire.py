"""The NAT extension's messages (tunnel/nat/wire.py): golden bytes, round trips, rejections,
and random bytes raising nothing but BadPacket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.nat.wire import (
    Candidate,
    CandidateSource,
    Endpoints,
    Hello,
    NatBehaviour,
    Probe,
)
from tunnel.wire.ip_port import IPPort

TOKEN = bytes(range(1, 9))
GOLDEN_ENDPOINTS = Endpoints(
    7,
    TOKEN,
    NatBehaviour.ENDPOINT_INDEPENDENT,
    250,
    (
        Candidate(CandidateSource.OBSERVED, IPPort.parse("198.18.0.2", 54010)),
        Candidate(CandidateSource.LOCAL, IPPort.parse("10.1.0.2", 54010)),
    ),
)
# 0xB8 0x01 | gen 7 | token | nat 2 | 250 ms | 2 candidates | (source, family 2 (IPv4), ip, port)
GOLDEN_ENDPOINTS_BYTES = bytes.fromhex(
    "b8010000000701020304050607080200fa020102c6120002d2fa00020a010002d2fa"
)
GOLDEN_PROBE_BYTES = bytes.fromhex("b80101020304050607080000002a")


def test_nat_wire_golden() -> None:
    assert GOLDEN_ENDPOINTS.encode() == GOLDEN_ENDPOINTS_BYTES
    assert Endpoints.decode(GOLDEN_ENDPOINTS_BYTES) == GOLDEN_ENDPOINTS
    probe = Probe(TOKEN, 42, ack=True)
    assert probe.encode() == GOLDEN_PROBE_BYTES
    assert Probe.decode(GOLDEN_PROBE_BYTES) == probe


addresses = st.builds(
    IPPort.parse,
    st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str),
    st.integers(1, 65535),
)
candidates = st.builds(Candidate, st.sampled_from(list(CandidateSource)), addresses)


@given(
    st.integers(0, 2**32 - 1),
    st.binary(min_size=8, max_size=8),
    st.sampled_from(list(NatBehaviour)),
    st.integers(0, 65535),
    st.lists(candidates, max_size=16),
)
def test_nat_wire_endpoints_round_trip(
    gen: int, token: bytes, nat: NatBehaviour, delay: int, cands: list[Candidate]
) -> None:
    message = Endpoints(gen, token, nat, delay, tuple(cands))
    assert Endpoints.decode(message.encode()) == message


@given(st.binary(min_size=8, max_size=8), st.integers(0, 2**32 - 1), st.booleans())
def test_nat_wire_probe_round_trip(token: bytes, seq: int, ack: bool) -> None:
    probe = Probe(token, seq, ack)
    assert Probe.decode(probe.encode()) == probe


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOLDEN_ENDPOINTS_BYTES[:-1],  # truncated
        GOLDEN_ENDPOINTS_BYTES + b"\x00",  # trailing byte
        b"\xb9" + GOLDEN_ENDPOINTS_BYTES[1:],  # wrong packet id
        b"\xb8\x02" + GOLDEN_ENDPOINTS_BYTES[2:],  # unknown message type
        GOLDEN_ENDPOINTS_BYTES[:14] + b"\x09" + GOLDEN_ENDPOINTS_BYTES[15:],  # unknown NAT
        GOLDEN_ENDPOINTS_BYTES[:17] + b"\x11" + GOLDEN_ENDPOINTS_BYTES[18:],  # > 16 candidates
        GOLDEN_ENDPOINTS_BYTES[:18] + b"\x07" + GOLDEN_ENDPOINTS_BYTES[19:],  # unknown source
        GOLDEN_ENDPOINTS_BYTES[:19] + b"\x82" + GOLDEN_ENDPOINTS_BYTES[20:],  # TCP family
        GOLDEN_ENDPOINTS_BYTES[:19] + b"\x09" + GOLDEN_ENDPOINTS_BYTES[20:],  # bad family
    ],
)
def test_nat_wire_endpoints_rejects(data: bytes) -> None:
    with pytest.raises(BadPacket):
        Endpoints.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        GOLDEN_PROBE_BYTES[:-1],
        GOLDEN_PROBE_BYTES + b"\x00",
        b"\x00" + GOLDEN_PROBE_BYTES[1:],
        b"\xb8\x02" + GOLDEN_PROBE_BYTES[2:],  # unknown flag
    ],
)
def test_nat_wire_probe_rejects(data: bytes) -> None:
    with pytest.raises(BadPacket):
        Probe.decode(data)


@given(st.binary(max_size=200))
def test_nat_wire_random_bytes_only_bad_packet(data: bytes) -> None:
    for parse in (Endpoints.decode, Probe.decode, Hello.decode):
        try:
            parse(data)
        except BadPacket:
            pass


def test_nat_wire_hello() -> None:
    """0x9E | version 1 | flags 0 | [large_lossless u16]; later versions' extra bytes are
    ignored, and so is a lone byte where the large limit would be."""
    assert Hello().encode() == bytes.fromhex("9e0100")
    assert Hello.decode(bytes.fromhex("9e0100")) == Hello()
    assert Hello(large_lossless=16384).encode() == bytes.fromhex("9e01004000")
    assert Hello.decode(bytes.fromhex("9e01004000")) == Hello(1, 0, 16384)
    assert Hello.decode(bytes.fromhex("9e0203400000ff")) == Hello(2, 3, 0x4000)
    assert Hello.decode(bytes.fromhex("9e0203ff")) == Hello(2, 3)
    for bad in (b"", b"\x9e", b"\x9e\x01", b"\x9f\x01\x00", b"\x9e\x00\x00"):
        with pytest.raises(BadPacket):
            Hello.decode(bad)


@given(st.integers(1, 255), st.integers(0, 255), st.integers(0, 0xFFFF))
def test_nat_wire_hello_round_trip(version: int, flags: int, large: int) -> None:
    assert Hello.decode(Hello(version, flags, large).encode()) == Hello(version, flags, large)
