"""TCP relay codecs (tox-protocol.md 7.1, 7.3): golden bytes, round-trips, rejections, fuzz."""

from __future__ import annotations

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair, shared_key
from tunnel.errors import BadPacket, DecryptError
from tunnel.testing.rng import SeededRng
from tunnel.wire.tcp_relay import (
    CLIENT_HANDSHAKE_SIZE_BYTES,
    SERVER_HANDSHAKE_SIZE_BYTES,
    ClientHandshake,
    ConnectNotification,
    Data,
    DisconnectNotification,
    Forwarding,
    ForwardRequest,
    HandshakePlain,
    OnionRequest,
    OnionResponse,
    OobRecv,
    OobSend,
    Packet,
    Ping,
    Pong,
    RoutingRequest,
    RoutingResponse,
    ServerHandshake,
    decode_packet_untrusted,
)

PK = bytes(range(32))
PK2 = bytes(range(100, 132))

# Golden plaintexts laid out as c-toxcore's TCP_client.c / TCP_server.c build them.
GOLDEN: list[tuple[Packet, bytes]] = [
    (RoutingRequest(PK), b"\x00" + PK),
    (RoutingResponse(16, PK), b"\x01\x10" + PK),
    (RoutingResponse(0, PK), b"\x01\x00" + PK),
    (ConnectNotification(17), b"\x02\x11"),
    (DisconnectNotification(255), b"\x03\xff"),
    (Ping(0x0102030405060708), b"\x04\x01\x02\x03\x04\x05\x06\x07\x08"),
    (Pong(1), b"\x05" + bytes(7) + b"\x01"),
    (OobSend(PK, b"hi"), b"\x06" + PK + b"hi"),
    (OobRecv(PK2, b"x"), b"\x07" + PK2 + b"x"),
    (OnionRequest(bytes(159)), b"\x08" + bytes(159)),
    (OnionResponse(b"\x84abc"), b"\x09\x84abc"),
    (ForwardRequest(b"zz"), b"\x0azz"),
    (Forwarding(b"zz"), b"\x0bzz"),
    (Data(16, b"\x1bpayload"), b"\x10\x1bpayload"),
    (Data(255, b""), b"\xff"),
]


@pytest.mark.parametrize(("packet", "wire"), GOLDEN)
def test_golden_packets(packet: Packet, wire: bytes) -> None:
    assert packet.encode() == wire
    assert decode_packet_untrusted(wire) == packet


def test_sizes_from_toxcore_headers() -> None:
    assert CLIENT_HANDSHAKE_SIZE_BYTES == 128
    assert SERVER_HANDSHAKE_SIZE_BYTES == 96
    assert len(RoutingRequest(PK).encode()) == 33
    assert len(RoutingResponse(16, PK).encode()) == 34
    assert RoutingResponse(0, PK).refused
    assert not RoutingResponse(16, PK).refused


def test_handshake_layout_and_keys() -> None:
    """The client box is K(client DHT sk, server pk); the server box K(server sk, client pk)."""
    rng = SeededRng("hs")
    client, server = KeyPair.generate(rng), KeyPair.generate(rng)
    temp = KeyPair.generate(rng)
    nonce, base = rng(24), rng(24)
    hello = ClientHandshake.seal(
        client.public_key,
        shared_key(server.public_key, client.secret_key),
        nonce,
        HandshakePlain(temp.public_key, base),
    )
    wire = hello.encode()
    assert len(wire) == 128
    assert wire[:32] == client.public_key
    assert wire[32:56] == nonce
    # independent check with libsodium's crypto_box (non-precomputed) on the server side
    plain = nb.crypto_box_open(wire[56:], nonce, client.public_key, server.secret_key)
    assert plain == temp.public_key + base
    opened = ClientHandshake.decode(wire).open_untrusted(
        shared_key(client.public_key, server.secret_key)
    )
    assert opened == HandshakePlain(temp.public_key, base)

    reply = ServerHandshake.seal(shared_key(client.public_key, server.secret_key), nonce, opened)
    rwire = reply.encode()
    assert len(rwire) == 96
    assert nb.crypto_box_open(rwire[24:], rwire[:24], server.public_key, client.secret_key) == (
        temp.public_key + base
    )
    wrong = KeyPair.generate(rng)
    with pytest.raises(DecryptError):
        ServerHandshake.decode(rwire).open_untrusted(
            shared_key(wrong.public_key, client.secret_key)
        )


@pytest.mark.parametrize("size", [0, 95, 97, 128])
def test_server_handshake_wrong_size(size: int) -> None:
    with pytest.raises(BadPacket):
        ServerHandshake.decode(bytes(size))


@pytest.mark.parametrize("size", [0, 96, 127, 129])
def test_client_handshake_wrong_size(size: int) -> None:
    with pytest.raises(BadPacket):
        ClientHandshake.decode(bytes(size))


def test_handshake_plain_wrong_size() -> None:
    with pytest.raises(BadPacket):
        HandshakePlain.decode(bytes(55))


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # empty
        b"\x00" + PK[:31],  # routing request truncated
        b"\x00" + PK + b"\x00",  # routing request too long
        b"\x01\x10" + PK[:31],  # routing response truncated
        b"\x02",  # connect notification truncated
        b"\x02\x10\x00",  # connect notification too long
        b"\x03",  # disconnect notification truncated
        b"\x03\x10\x10",
        b"\x04" + bytes(7),  # ping truncated
        b"\x04" + bytes(9),  # ping too long
        b"\x05" + bytes(8),  # pong id 0
        b"\x05" + bytes(7),
        b"\x06" + PK,  # OOB send without data
        b"\x06" + PK + bytes(1025),  # OOB send too long
        b"\x07" + PK,  # OOB recv without data
        b"\x08" + bytes(158),  # onion request too short
        b"\x09",  # empty onion response
        b"\x0c\x00",  # reserved ids
        b"\x0d",
        b"\x0e",
        b"\x0f\x01\x02",
    ],
)
def test_rejects_malformed(wire: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_packet_untrusted(wire)


def test_constructors_reject_local_misuse() -> None:
    with pytest.raises(ValueError, match="public key"):
        RoutingRequest(PK[:31])
    with pytest.raises(ValueError, match="non-zero"):
        Pong(0)
    with pytest.raises(ValueError, match=r"1\.\.1024"):
        OobSend(PK, bytes(1025))
    with pytest.raises(ValueError, match=r"16\.\.255"):
        Data(15, b"x")


pks = st.binary(min_size=32, max_size=32)
conn_ids = st.integers(16, 255)
packets: st.SearchStrategy[Packet] = st.one_of(
    st.builds(RoutingRequest, pks),
    st.builds(RoutingResponse, st.integers(0, 255), pks),
    st.builds(ConnectNotification, st.integers(0, 255)),
    st.builds(DisconnectNotification, st.integers(0, 255)),
    st.builds(Ping, st.integers(0, 2**64 - 1)),
    st.builds(Pong, st.integers(1, 2**64 - 1)),
    st.builds(OobSend, pks, st.binary(min_size=1, max_size=1024)),
    st.builds(OobRecv, pks, st.binary(min_size=1, max_size=1024)),
    st.builds(OnionRequest, st.binary(min_size=159, max_size=400)),
    st.builds(OnionResponse, st.binary(min_size=1, max_size=400)),
    st.builds(Data, conn_ids, st.binary(max_size=400)),
)


@given(packets)
def test_roundtrip(packet: Packet) -> None:
    assert decode_packet_untrusted(packet.encode()) == packet


@given(st.binary(max_size=300))
def test_random_bytes_only_badpacket(data: bytes) -> None:
    try:
        packet = decode_packet_untrusted(data)
    except BadPacket:
        return
    assert packet.encode() == data


@given(st.binary(max_size=200))
def test_handshake_decoders_only_badpacket(data: bytes) -> None:
    for decoder in (ClientHandshake.decode, ServerHandshake.decode):
        try:
            hs = decoder(data)
        except BadPacket:
            continue
        assert hs.encode() == data
        with pytest.raises(DecryptError):
            hs.open_untrusted(bytes(32))
