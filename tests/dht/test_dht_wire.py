"""DHT codecs (tox-protocol.md 4.2-4.4, 4.8-4.11): layouts, round-trips, rejections, fuzz."""

from __future__ import annotations

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair, shared_key
from tunnel.errors import BadPacket
from tunnel.wire.dht import (
    KIND_NODES_REQUEST,
    KIND_NODES_RESPONSE,
    KIND_PING_REQUEST,
    KIND_PING_RESPONSE,
    NODES_REQUEST_PACKET_SIZE,
    PING_PACKET_SIZE,
    BootstrapInfo,
    DhtPacket,
    DhtRequest,
    LanDiscovery,
    NatPing,
    NodesRequestPayload,
    NodesResponsePayload,
    PingPayload,
    bootstrap_info_request,
    is_bootstrap_info_request,
    seal_dht_packet,
)
from tunnel.wire.ip_port import IPPort
from tunnel.wire.packed_node import PackedNode

ALICE = KeyPair.from_secret_key(bytes(range(1, 33)))
BOB = KeyPair.from_secret_key(bytes(range(33, 65)))
NONCE = bytes(range(100, 124))
PING_ID = bytes.fromhex("0102030405060708")
KEY = shared_key(BOB.public_key, ALICE.secret_key)


def _nacl_open(packet: bytes, header: int) -> bytes:
    """Open with libsodium's one-shot crypto_box_open (independent of our precomputed path)."""
    nonce = packet[header - 24 : header]
    return nb.crypto_box_open(packet[header:], nonce, ALICE.public_key, BOB.secret_key)


def test_ping_request_layout() -> None:
    plain = PingPayload(KIND_PING_REQUEST, PING_ID).encode()
    assert plain == bytes.fromhex("000102030405060708")
    wire = seal_dht_packet(KIND_PING_REQUEST, ALICE.public_key, KEY, NONCE, plain)
    assert len(wire) == PING_PACKET_SIZE == 82
    assert wire[0] == 0x00
    assert wire[1:33] == ALICE.public_key
    assert wire[33:57] == NONCE
    assert _nacl_open(wire, 57) == plain
    packet = DhtPacket.decode_kind(wire, KIND_PING_REQUEST)
    assert packet.open_untrusted(shared_key(ALICE.public_key, BOB.secret_key)) == plain


def test_nodes_request_and_response_layout() -> None:
    plain = NodesRequestPayload(BOB.public_key, PING_ID).encode()
    wire = seal_dht_packet(KIND_NODES_REQUEST, ALICE.public_key, KEY, NONCE, plain)
    assert len(wire) == NODES_REQUEST_PACKET_SIZE == 113
    assert _nacl_open(wire, 57) == BOB.public_key + PING_ID
    node = PackedNode(IPPort.parse("127.0.0.1", 33445), bytes(range(32)))
    resp = NodesResponsePayload((node,), PING_ID).encode()
    assert resp == b"\x01" + bytes.fromhex("027f00000182a5") + bytes(range(32)) + PING_ID
    wire = seal_dht_packet(KIND_NODES_RESPONSE, ALICE.public_key, KEY, NONCE, resp)
    assert len(wire) == 82 + 39
    DhtPacket.decode_kind(wire, KIND_NODES_RESPONSE)


def test_dht_request_and_nat_ping_layout() -> None:
    req = DhtRequest.seal(
        BOB.public_key, ALICE.public_key, KEY, NONCE, 0xFE, NatPing(False, PING_ID).encode()
    )
    wire = req.encode()
    assert len(wire) == 115
    assert wire[0] == 0x20
    assert wire[1:33] == BOB.public_key
    assert wire[33:65] == ALICE.public_key
    assert _nacl_open(wire, 89) == b"\xfe\x00" + PING_ID
    back = DhtRequest.decode(wire)
    assert back.open_untrusted(shared_key(ALICE.public_key, BOB.secret_key)) == (
        0xFE,
        b"\x00" + PING_ID,
    )


def test_lan_and_bootstrap_info_layout() -> None:
    assert LanDiscovery(ALICE.public_key).encode() == b"\x21" + ALICE.public_key
    assert len(bootstrap_info_request()) == 78
    assert is_bootstrap_info_request(bootstrap_info_request())
    assert not is_bootstrap_info_request(b"\xf0" * 77)
    info = BootstrapInfo(1000002018, b"hello")
    assert info.encode() == b"\xf0" + (1000002018).to_bytes(4, "big") + b"hello"
    assert BootstrapInfo.decode(info.encode()) == info


nodes_st = st.builds(
    PackedNode,
    st.one_of(
        st.builds(IPPort.parse, st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
        st.builds(
            IPPort.parse,
            st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str),
            st.integers(0, 65535),
        ),
    ),
    st.binary(min_size=32, max_size=32),
)


@given(st.lists(nodes_st, min_size=1, max_size=4), st.binary(min_size=8, max_size=8))
def test_nodes_response_roundtrip(nodes: list[PackedNode], ping_id: bytes) -> None:
    payload = NodesResponsePayload(tuple(nodes), ping_id)
    assert NodesResponsePayload.decode(payload.encode()) == payload


@given(st.binary(min_size=8, max_size=8), st.booleans())
def test_nat_ping_roundtrip(ping_id: bytes, resp: bool) -> None:
    assert NatPing.decode(NatPing(resp, ping_id).encode()) == NatPing(resp, ping_id)


@given(st.binary(min_size=1, max_size=400))
def test_dht_packet_encode_decode(data: bytes) -> None:
    try:
        packet = DhtPacket.decode(data)
    except BadPacket:
        return
    assert packet.encode() == data


@pytest.mark.parametrize(
    ("kind", "size"),
    [
        (KIND_PING_REQUEST, 81),
        (KIND_PING_REQUEST, 83),
        (KIND_PING_RESPONSE, 113),
        (KIND_NODES_REQUEST, 112),
        (KIND_NODES_RESPONSE, 82),
        (KIND_NODES_RESPONSE, 82 + 205),
    ],
)
def test_reject_wrong_lengths(kind: int, size: int) -> None:
    with pytest.raises(BadPacket):
        DhtPacket.decode_kind(bytes((kind,)) + bytes(size - 1), kind)


def test_reject_malformed_payloads() -> None:
    with pytest.raises(BadPacket):
        PingPayload.decode(b"\x01" + PING_ID, KIND_PING_REQUEST)  # relabelled response
    with pytest.raises(BadPacket):
        PingPayload.decode(b"\x00" + PING_ID[:7], KIND_PING_REQUEST)
    with pytest.raises(BadPacket):
        NodesRequestPayload.decode(bytes(39))
    node = PackedNode(IPPort.parse("10.0.0.1", 1), bytes(32)).encode()
    with pytest.raises(BadPacket):  # count says 2, one node present
        NodesResponsePayload.decode(b"\x02" + node + PING_ID)
    with pytest.raises(BadPacket):  # zero nodes
        NodesResponsePayload.decode(b"\x00" + PING_ID)
    with pytest.raises(BadPacket):  # five nodes
        NodesResponsePayload.decode(b"\x05" + node * 5 + PING_ID)
    tcp = PackedNode(IPPort.parse("10.0.0.1", 1), bytes(32), tcp=True).encode()
    with pytest.raises(BadPacket):  # TCP nodes are not allowed in DHT responses
        NodesResponsePayload.decode(b"\x01" + tcp + PING_ID)
    with pytest.raises(BadPacket):  # trailing byte
        NodesResponsePayload.decode(b"\x01" + node + b"\x00" + PING_ID)
    with pytest.raises(BadPacket):
        DhtRequest.decode(b"\x20" + bytes(104))
    with pytest.raises(BadPacket):
        DhtRequest.decode(b"\x20" + bytes(1040))
    with pytest.raises(BadPacket):
        NatPing.decode(b"\x02" + PING_ID)
    with pytest.raises(BadPacket):
        LanDiscovery.decode(b"\x21" + bytes(31))
    with pytest.raises(BadPacket):
        BootstrapInfo.decode(b"\xf0" + bytes(3))
    with pytest.raises(BadPacket):
        BootstrapInfo.decode(b"\xf0" + bytes(4 + 257))


@given(st.binary(max_size=300))
def test_parsers_raise_only_badpacket(data: bytes) -> None:
    parsers = [
        DhtPacket.decode,
        lambda d: DhtPacket.decode_kind(d, KIND_NODES_RESPONSE),
        lambda d: PingPayload.decode(d, 0),
        NodesRequestPayload.decode,
        NodesResponsePayload.decode,
        DhtRequest.decode,
        NatPing.decode,
        LanDiscovery.decode,
        BootstrapInfo.decode,
    ]
    for parse in parsers:
        try:
            parse(data)
        except BadPacket:
            pass
