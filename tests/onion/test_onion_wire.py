"""Onion codecs (tox-protocol.md section 5): golden vectors from c-toxcore 0.2.18 first,
then Hypothesis round-trips, rejection tests and "random bytes raise only BadPacket"."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.ip_port import IPPort, encode_onion_ip_port
from tunnel.wire.onion import (
    ANNOUNCE_REQUEST_SIZE,
    ANNOUNCE_RESPONSE_MIN_SIZE,
    ONION_RETURN_1_SIZE,
    ONION_RETURN_2_SIZE,
    ONION_RETURN_3_SIZE,
    AnnounceRequest,
    AnnounceRequestPayload,
    AnnounceResponse,
    AnnounceResponsePayload,
    DataRequest,
    DataResponse,
    DhtPkPayload,
    DhtPkViaDht,
    FriendRequestPayload,
    OnionExit,
    OnionHop,
    OnionRequest0,
    OnionRequest1,
    OnionRequest2,
    OnionResponse1,
    OnionResponse2,
    OnionResponse3,
    TcpOnionRequest,
    decode_onion_data_payload_untrusted,
    decode_onion_exit_untrusted,
    decode_onion_hop_untrusted,
    open_data_response,
    seal_data_request,
    seal_onion_data_inner,
    seal_onion_request,
    seal_tcp_onion_request,
)
from tunnel.wire.packed_node import PackedNode

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "onion_c_toxcore_0_2_18.json").read_text()
)


def _kp(n: int) -> KeyPair:
    return KeyPair.from_secret_key(bytes((n + i) & 255 for i in range(32)))


CLIENT_DHT, A, B, C, D, T2, T3, REAL, DATA, DEST_REAL = (_kp(n) for n in range(1, 11))
B_ADDR = IPPort.parse("192.0.2.2", 33446)
C_ADDR = IPPort.parse("2001:db8::3", 33447)
D_ADDR = IPPort.parse("198.51.100.4", 443)
PING_ID = bytes(range(0xA0, 0xC0))
SENDBACK = (0x0102030405060708).to_bytes(8, "little")


class StreamRng:
    """The deterministic byte stream the C generator used: byte k = (k*7+3) & 255."""

    def __init__(self, start: int) -> None:
        self.k = start

    def __call__(self, n: int) -> bytes:
        out = bytes(((self.k + i) * 7 + 3) & 255 for i in range(n))
        self.k += n
        return out


def _k(pk: bytes, sk: bytes) -> bytes:
    return nb.crypto_box_beforenm(pk, sk)


def _announce_request() -> AnnounceRequest:
    payload = AnnounceRequestPayload(PING_ID, REAL.public_key, DATA.public_key, SENDBACK)
    return AnnounceRequest.seal(StreamRng(0), REAL, D.public_key, payload)


# --- golden vectors -----------------------------------------------------------------------


def test_golden_announce_request_matches_c_toxcore() -> None:
    expected = bytes.fromhex(VECTORS["announce_request"])
    assert len(expected) == ANNOUNCE_REQUEST_SIZE == 177
    assert _announce_request().encode() == expected
    parsed = AnnounceRequest.decode(expected)
    assert parsed.public_key == REAL.public_key
    plain = parsed.open(_k(REAL.public_key, D.secret_key))
    assert plain == AnnounceRequestPayload(PING_ID, REAL.public_key, DATA.public_key, SENDBACK)


def _hop_keys() -> list[tuple[bytes, bytes]]:
    return [
        (_k(A.public_key, CLIENT_DHT.secret_key), CLIENT_DHT.public_key),
        (_k(B.public_key, T2.secret_key), T2.public_key),
        (_k(C.public_key, T3.secret_key), T3.public_key),
    ]


def test_golden_onion_request_matches_c_toxcore() -> None:
    expected = bytes.fromhex(VECTORS["onion_request_0"])
    payload = bytes.fromhex(VECTORS["announce_request"])
    nonce = StreamRng(100)(24)
    packet = seal_onion_request(nonce, _hop_keys(), [B_ADDR, C_ADDR], D_ADDR, payload)
    assert packet.encode() == expected
    assert len(expected) == 403  # tox-protocol.md 5.2 example size for a 177-byte payload
    # Peel it the way relays A, B and C do.
    req0 = OnionRequest0.decode(expected)
    hop_a = decode_onion_hop_untrusted(
        nb.crypto_box_open_afternm(req0.encrypted, req0.nonce, _k(req0.public_key, A.secret_key))
    )
    assert hop_a.ip_port == B_ADDR
    assert hop_a.public_key == T2.public_key
    hop_b = decode_onion_hop_untrusted(
        nb.crypto_box_open_afternm(hop_a.encrypted, req0.nonce, _k(T2.public_key, B.secret_key))
    )
    assert hop_b.ip_port == C_ADDR
    exit_c = decode_onion_exit_untrusted(
        nb.crypto_box_open_afternm(hop_b.encrypted, req0.nonce, _k(T3.public_key, C.secret_key))
    )
    assert exit_c == OnionExit(D_ADDR, payload)


def test_golden_tcp_onion_request_matches_c_toxcore() -> None:
    expected = bytes.fromhex(VECTORS["tcp_onion_request"])
    payload = bytes.fromhex(VECTORS["announce_request"])
    nonce = StreamRng(200)(24)
    packet = seal_tcp_onion_request(nonce, _hop_keys()[1:], [B_ADDR, C_ADDR], D_ADDR, payload)
    # c-toxcore's create_onion_packet_tcp writes the packet without the 0x08 id byte.
    assert packet.encode() == b"\x08" + expected
    assert TcpOnionRequest.decode(b"\x08" + expected) == packet


def test_golden_data_request_from_c_toxcore_opens() -> None:
    inner_expected = bytes.fromhex(VECTORS["data_inner"])
    nonce = bytes(range(0x50, 0x68))
    payload = bytes.fromhex("20deadbeef") + b"hello"
    assert seal_onion_data_inner(REAL, DEST_REAL.public_key, nonce, payload) == inner_expected
    request = DataRequest.decode(bytes.fromhex(VECTORS["data_request"]))
    assert request.destination_public_key == DEST_REAL.public_key
    assert request.nonce == nonce
    # Node D turns it into 0x86; the destination (whose data key is DATA) opens it.
    sender, opened = open_data_response(
        DataResponse.decode(request.to_response().encode()), DATA.secret_key, DEST_REAL.secret_key
    )
    assert sender == REAL.public_key
    assert opened == payload
    assert FriendRequestPayload.decode(opened) == FriendRequestPayload(
        b"\xde\xad\xbe\xef", b"hello"
    )


def test_golden_payload_layouts() -> None:
    pk = bytes(range(32))
    node = PackedNode(IPPort.parse("127.0.0.1", 33445), pk)
    relay = PackedNode(IPPort.parse("198.18.0.1", 443), pk, tcp=True)
    dhtpk = DhtPkPayload(0x0102030405060708, pk, (relay, node)).encode()
    assert dhtpk == (
        b"\x9c" + bytes.fromhex("0102030405060708") + pk
        + bytes.fromhex("82c612000101bb") + pk + bytes.fromhex("027f00000182a5") + pk
    )  # fmt: skip
    assert FriendRequestPayload(b"\x01\x02\x03\x04", b"hi").encode() == bytes.fromhex(
        "20010203046869"
    )
    response = AnnounceResponsePayload(2, PING_ID, (node,)).encode()
    assert response == b"\x02" + PING_ID + bytes.fromhex("027f00000182a5") + pk
    hop = OnionHop(B_ADDR, pk, b"\xaa" * 20).encode()
    assert hop == encode_onion_ip_port(B_ADDR) + pk + b"\xaa" * 20
    assert hop[:19] == bytes.fromhex("02c0000202" + "00" * 12 + "82a6")


def test_sizes_of_layers() -> None:
    ret1, ret2, ret3 = b"\x01" * 59, b"\x02" * 118, b"\x03" * 177
    req0 = OnionRequest0.decode(bytes.fromhex(VECTORS["onion_request_0"]))
    # A forwards nonce, t2_pk|box2 and ret1: 395 bytes, B forwards 387 bytes, D gets 354.
    req1 = OnionRequest1(req0.nonce, T2.public_key, b"\x00" * (395 - 1 - 24 - 32 - 59), ret1)
    assert len(req1.encode()) == 395
    assert OnionRequest1.decode(req1.encode()) == req1
    req2 = OnionRequest2(req0.nonce, T3.public_key, b"\x00" * (387 - 1 - 24 - 32 - 118), ret2)
    assert OnionRequest2.decode(req2.encode()) == req2
    resp = AnnounceResponse(SENDBACK, bytes(24), b"\x00" * 49).encode()
    assert len(resp) == ANNOUNCE_RESPONSE_MIN_SIZE == 82
    for cls, ret in ((OnionResponse3, ret3), (OnionResponse2, ret2), (OnionResponse1, ret1)):
        packet = cls(ret, resp)  # type: ignore[arg-type]
        assert cls.decode(packet.encode()) == packet  # type: ignore[attr-defined]


# --- crypto round trips -------------------------------------------------------------------


def test_announce_response_round_trip_and_wrong_key() -> None:
    key = _k(REAL.public_key, D.secret_key)
    node = PackedNode(IPPort.parse("2001:db8::9", 1), bytes(32))
    payload = AnnounceResponsePayload(0, PING_ID, (node,))
    response = AnnounceResponse.seal(StreamRng(5), key, SENDBACK, payload)
    assert AnnounceResponse.decode(response.encode()).open(key) == payload
    with pytest.raises(DecryptError):
        response.open(_k(A.public_key, D.secret_key))


def test_data_request_round_trip_and_forgery() -> None:
    nonce = bytes(24)
    inner = seal_onion_data_inner(REAL, DEST_REAL.public_key, nonce, b"\x9c" + bytes(40))
    request = seal_data_request(StreamRng(9), nonce, DEST_REAL.public_key, DATA.public_key, inner)
    response = request.to_response()
    assert open_data_response(response, DATA.secret_key, DEST_REAL.secret_key)[0] == (
        REAL.public_key
    )
    with pytest.raises(DecryptError):
        open_data_response(response, A.secret_key, DEST_REAL.secret_key)
    with pytest.raises(DecryptError):
        open_data_response(response, DATA.secret_key, A.secret_key)
    low_order = DataResponse(nonce, bytes(32), response.encrypted)
    with pytest.raises(DecryptError):
        open_data_response(low_order, DATA.secret_key, DEST_REAL.secret_key)


def test_dhtpk_via_dht_round_trip() -> None:
    payload = DhtPkPayload(7, CLIENT_DHT.public_key)
    sealed = DhtPkViaDht.seal(StreamRng(1), REAL, DEST_REAL.public_key, payload)
    assert len(sealed.encode()) == 113
    assert DhtPkViaDht.decode(sealed.encode()).open(DEST_REAL.secret_key) == payload
    with pytest.raises(DecryptError):
        sealed.open(A.secret_key)


# --- Hypothesis round trips ---------------------------------------------------------------

ip_ports = st.builds(
    IPPort,
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None)),
    st.integers(0, 65535),
)
keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)
udp_nodes = st.builds(PackedNode, ip_ports, keys, st.just(False))
any_nodes = st.builds(PackedNode, ip_ports, keys, st.booleans())
response_payload = st.binary(min_size=1, max_size=1000).map(lambda b: b"\x84" + b)


@given(nonces, keys, st.binary(min_size=170, max_size=1342))
def test_request0_round_trip(nonce: bytes, pk: bytes, enc: bytes) -> None:
    packet = OnionRequest0(nonce, pk, enc)
    assert OnionRequest0.decode(packet.encode()) == packet


@given(nonces, keys, st.binary(min_size=103, max_size=1284), st.binary(min_size=59, max_size=59))
def test_request1_round_trip(nonce: bytes, pk: bytes, enc: bytes, ret: bytes) -> None:
    packet = OnionRequest1(nonce, pk, enc, ret)
    assert OnionRequest1.decode(packet.encode()) == packet


@given(nonces, keys, st.binary(min_size=36, max_size=1225), st.binary(min_size=118, max_size=118))
def test_request2_round_trip(nonce: bytes, pk: bytes, enc: bytes, ret: bytes) -> None:
    packet = OnionRequest2(nonce, pk, enc, ret)
    assert OnionRequest2.decode(packet.encode()) == packet


@given(nonces, ip_ports, keys, st.binary(min_size=84, max_size=1284))
def test_tcp_request_round_trip(nonce: bytes, ip: IPPort, pk: bytes, enc: bytes) -> None:
    packet = TcpOnionRequest(nonce, ip, pk, enc)
    assert TcpOnionRequest.decode(packet.encode()) == packet


@given(st.binary(min_size=177, max_size=177), response_payload)
def test_response3_round_trip(ret: bytes, payload: bytes) -> None:
    packet = OnionResponse3(ret, payload)
    assert OnionResponse3.decode(packet.encode()) == packet


@given(st.binary(min_size=59, max_size=59), response_payload)
def test_response1_round_trip(ret: bytes, payload: bytes) -> None:
    packet = OnionResponse1(ret, payload)
    assert OnionResponse1.decode(packet.encode()) == packet


@given(ip_ports, keys, st.binary(min_size=17, max_size=300))
def test_hop_round_trip(ip: IPPort, pk: bytes, enc: bytes) -> None:
    hop = OnionHop(ip, pk, enc)
    assert decode_onion_hop_untrusted(hop.encode()) == hop


@given(ip_ports, st.sampled_from([b"\x83", b"\x85"]), st.binary(max_size=200))
def test_exit_round_trip(ip: IPPort, kind: bytes, rest: bytes) -> None:
    exit_ = OnionExit(ip, kind + rest)
    assert decode_onion_exit_untrusted(exit_.encode()) == exit_


@given(keys, keys, keys, st.binary(min_size=8, max_size=8))
def test_announce_payload_round_trip(a: bytes, b: bytes, c: bytes, s: bytes) -> None:
    payload = AnnounceRequestPayload(a, b, c, s)
    assert AnnounceRequestPayload.decode(payload.encode()) == payload


@given(st.integers(0, 255), keys, st.lists(udp_nodes, max_size=4))
def test_announce_response_payload_round_trip(
    is_stored: int, key: bytes, nodes: list[PackedNode]
) -> None:
    payload = AnnounceResponsePayload(is_stored, key, tuple(nodes))
    assert AnnounceResponsePayload.decode(payload.encode()) == payload


@given(st.binary(min_size=8, max_size=8), nonces, st.binary(min_size=49, max_size=593))
def test_announce_response_round_trip(sendback: bytes, nonce: bytes, enc: bytes) -> None:
    packet = AnnounceResponse(sendback, nonce, enc)
    assert AnnounceResponse.decode(packet.encode()) == packet


@given(keys, nonces, keys, st.binary(min_size=65, max_size=1012))
def test_data_request_round_trip(dest: bytes, nonce: bytes, temp: bytes, enc: bytes) -> None:
    packet = DataRequest(dest, nonce, temp, enc)
    assert DataRequest.decode(packet.encode()) == packet
    assert DataResponse.decode(packet.to_response().encode()) == packet.to_response()


@given(st.integers(0, 2**64 - 1), keys, st.lists(any_nodes, max_size=4))
def test_dhtpk_round_trip(no_replay: int, pk: bytes, nodes: list[PackedNode]) -> None:
    payload = DhtPkPayload(no_replay, pk, tuple(nodes))
    assert decode_onion_data_payload_untrusted(payload.encode()) == payload


@given(st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=1016))
def test_friend_request_round_trip(nospam: bytes, message: bytes) -> None:
    payload = FriendRequestPayload(nospam, message)
    assert decode_onion_data_payload_untrusted(payload.encode()) == payload


# --- rejection tests ----------------------------------------------------------------------


def test_reject_request_lengths() -> None:
    with pytest.raises(BadPacket):
        OnionRequest0.decode(b"\x80" + bytes(225))  # must be > 226
    with pytest.raises(BadPacket):
        OnionRequest0.decode(b"\x80" + bytes(1400))  # > 1400
    with pytest.raises(BadPacket):
        OnionRequest1.decode(b"\x81" + bytes(217))
    with pytest.raises(BadPacket):
        OnionRequest2.decode(b"\x82" + bytes(209))
    with pytest.raises(BadPacket):
        TcpOnionRequest.decode(b"\x08" + bytes(158))
    with pytest.raises(BadPacket):
        OnionRequest0.decode(b"\x81" + bytes(300))  # wrong kind
    with pytest.raises(BadPacket):
        OnionRequest0.decode(b"")


def test_reject_bad_forward_family() -> None:
    plain = b"\x0b" + bytes(18) + bytes(32) + bytes(20)  # family 11 (TCP client) forward
    with pytest.raises(BadPacket):
        decode_onion_hop_untrusted(plain)
    with pytest.raises(BadPacket):
        decode_onion_hop_untrusted(encode_onion_ip_port(B_ADDR) + bytes(48))  # no room


def test_reject_exit_kinds() -> None:
    for kind in (b"\x87", b"\x84", b"\x00"):
        with pytest.raises(BadPacket):
            decode_onion_exit_untrusted(encode_onion_ip_port(D_ADDR) + kind + bytes(176))
    with pytest.raises(BadPacket):
        decode_onion_exit_untrusted(encode_onion_ip_port(D_ADDR))


def test_reject_response_layers() -> None:
    with pytest.raises(BadPacket):
        OnionResponse3.decode(b"\x8c" + bytes(ONION_RETURN_3_SIZE))  # nothing after ret3
    with pytest.raises(BadPacket):
        OnionResponse3.decode(b"\x8c" + bytes(ONION_RETURN_3_SIZE) + b"\x88" + bytes(90))
    with pytest.raises(BadPacket):
        OnionResponse2.decode(b"\x8d" + bytes(ONION_RETURN_2_SIZE) + b"\x84" + bytes(1400))
    with pytest.raises(BadPacket):
        OnionResponse1.decode(b"\x8e" + bytes(ONION_RETURN_1_SIZE - 1))


def test_reject_announce_shapes() -> None:
    good = bytes.fromhex(VECTORS["announce_request"])
    with pytest.raises(BadPacket):
        AnnounceRequest.decode(good[:-1])
    with pytest.raises(BadPacket):
        AnnounceRequest.decode(good + b"\x00")
    with pytest.raises(BadPacket):
        AnnounceRequest.decode(b"\x87" + good[1:])
    with pytest.raises(BadPacket):
        AnnounceResponse.decode(b"\x84" + bytes(80))
    with pytest.raises(BadPacket):
        AnnounceResponse.decode(b"\x84" + bytes(626))
    with pytest.raises(BadPacket):
        AnnounceRequestPayload.decode(bytes(103))
    with pytest.raises(BadPacket):
        AnnounceResponsePayload.decode(bytes(32))
    tcp = PackedNode(B_ADDR, bytes(32), tcp=True).encode()
    with pytest.raises(BadPacket):
        AnnounceResponsePayload.decode(b"\x00" + PING_ID + tcp)
    five = PackedNode(B_ADDR, bytes(32)).encode() * 5
    with pytest.raises(BadPacket):
        AnnounceResponsePayload.decode(b"\x00" + PING_ID + five)
    with pytest.raises(BadPacket):
        AnnounceResponsePayload.decode(b"\x00" + PING_ID + b"\x02\x01")  # truncated node


def test_reject_data_shapes() -> None:
    with pytest.raises(BadPacket):
        DataRequest.decode(b"\x85" + bytes(104))
    with pytest.raises(BadPacket):
        DataRequest.decode(b"\x85" + bytes(1174))
    with pytest.raises(BadPacket):
        DataResponse.decode(b"\x86" + bytes(120))
    with pytest.raises(BadPacket):
        DataResponse.decode(b"\x86" + bytes(1069))


def test_reject_payload_shapes() -> None:
    with pytest.raises(BadPacket):
        decode_onion_data_payload_untrusted(b"")
    with pytest.raises(BadPacket):
        decode_onion_data_payload_untrusted(b"\x12" + bytes(10))
    with pytest.raises(BadPacket):
        FriendRequestPayload.decode(b"\x20\x01\x02\x03\x04")  # empty message
    with pytest.raises(BadPacket):
        FriendRequestPayload.decode(b"\x20" + bytes(1021))  # 1022 bytes
    with pytest.raises(BadPacket):
        DhtPkPayload.decode(b"\x9c" + bytes(39))
    with pytest.raises(BadPacket):
        DhtPkPayload.decode(b"\x9c" + bytes(40) + b"\x07" + bytes(38))  # bad ip_type
    with pytest.raises(BadPacket):
        DhtPkViaDht.decode(bytes(112))


# --- random bytes raise nothing but BadPacket ----------------------------------------------

PARSERS: list[Callable[[bytes], object]] = [
    OnionRequest0.decode,
    OnionRequest1.decode,
    OnionRequest2.decode,
    TcpOnionRequest.decode,
    OnionResponse1.decode,
    OnionResponse2.decode,
    OnionResponse3.decode,
    decode_onion_hop_untrusted,
    decode_onion_exit_untrusted,
    AnnounceRequest.decode,
    AnnounceRequestPayload.decode,
    AnnounceResponse.decode,
    AnnounceResponsePayload.decode,
    DataRequest.decode,
    DataResponse.decode,
    DhtPkPayload.decode,
    FriendRequestPayload.decode,
    decode_onion_data_payload_untrusted,
    DhtPkViaDht.decode,
]
KIND_PREFIXES = [
    b"",
    b"\x80",
    b"\x81",
    b"\x82",
    b"\x08",
    b"\x84",
    b"\x85",
    b"\x86",
    b"\x9c",
    b"\x20",
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: getattr(p, "__qualname__", "?"))
@given(prefix=st.sampled_from(KIND_PREFIXES), data=st.binary(max_size=1500))
def test_random_bytes_raise_only_bad_packet(
    parser: Callable[[bytes], object], prefix: bytes, data: bytes
) -> None:
    try:
        parser(prefix + data)
    except BadPacket:
        pass


@given(st.binary(min_size=90, max_size=300))
def test_random_response_opens_only_with_bad_packet(data: bytes) -> None:
    try:
        response = DataResponse.decode(b"\x86" + data)
    except BadPacket:
        return
    with pytest.raises(BadPacket):
        open_data_response(response, DATA.secret_key, REAL.secret_key)
