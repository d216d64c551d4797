"""tuntox frame codec and our extension frames (tunnel/wire/tuntox.py, tuntox-toxvpn.md 1.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire.tuntox import (
    CAPS_KIND_ANSWER,
    CAPS_KIND_OFFER,
    MAX_FRAME_PAYLOAD_BYTES,
    MAX_UDP_PAYLOAD_BYTES,
    TUNTOX_PACKET_ID,
    AckTunnel,
    Capabilities,
    CapFlag,
    DenyCode,
    DenyTunnel,
    Frame,
    FrameType,
    Ping,
    Pong,
    RequestTunnel,
    TcpData,
    TcpFin,
    TunnelEof,
    TunnelReset,
    UdpDatagram,
    WindowUpdate,
    caps_untrusted,
    decode_frame_untrusted,
)

# Golden vectors laid out byte by byte as tuntox writes them: send_frame() puts magic, type,
# connid and length big-endian (BYTE2 then BYTE1); client.c hard-codes its ping packet.
TUNTOX_PING = bytes.fromhex("a26b010800000005") + b"Hello"
TUNTOX_PONG = bytes.fromhex("a26b010000000005") + b"Hello"
# send_tunnel_request_packet("127.0.0.1", 22, forward_id=0x01020304)
TUNTOX_REQUEST = bytes.fromhex("a26b06020016000d01020304") + b"127.0.0.1"
# send_tunnel_ack_frame(tunnel 0x1234, forward_id 0x01020304)
TUNTOX_ACK = bytes.fromhex("a26b06101234000401020304")
TUNTOX_TCP = bytes.fromhex("a26b060012340003") + b"abc"
TUNTOX_FIN = bytes.fromhex("a26b060112340000")


def test_golden_tuntox_frames() -> None:
    assert Ping().encode() == TUNTOX_PING
    assert Pong(b"Hello").encode() == TUNTOX_PONG
    assert RequestTunnel(22, 0x01020304, b"127.0.0.1").encode() == TUNTOX_REQUEST
    assert AckTunnel(0x1234, 0x01020304).encode() == TUNTOX_ACK
    assert TcpData(0x1234, b"abc").encode() == TUNTOX_TCP
    assert TcpFin(0x1234).encode() == TUNTOX_FIN
    assert decode_frame_untrusted(TUNTOX_PING) == Ping(b"Hello")
    assert decode_frame_untrusted(TUNTOX_PONG) == Pong(b"Hello")
    assert decode_frame_untrusted(TUNTOX_REQUEST) == RequestTunnel(22, 0x01020304, b"127.0.0.1")
    assert decode_frame_untrusted(TUNTOX_ACK) == AckTunnel(0x1234, 0x01020304)
    assert decode_frame_untrusted(TUNTOX_TCP) == TcpData(0x1234, b"abc")
    assert decode_frame_untrusted(TUNTOX_FIN) == TcpFin(0x1234)
    # The first byte is the toxcore custom lossless packet id (160..191).
    assert TUNTOX_PING[0] == TUNTOX_PACKET_ID == 162
    assert 160 <= TUNTOX_PACKET_ID <= 191


def test_max_payload_fills_one_custom_packet() -> None:
    frame = TcpData(7, bytes(MAX_FRAME_PAYLOAD_BYTES)).encode()
    assert len(frame) == 1373
    assert MAX_FRAME_PAYLOAD_BYTES == 1365
    with pytest.raises(ValueError, match="1365"):
        TcpData(7, bytes(1366)).encode()
    assert len(UdpDatagram(1, bytes(MAX_UDP_PAYLOAD_BYTES)).encode()) == 1373


def test_golden_extension_frames() -> None:
    assert DenyTunnel(5, DenyCode.NOT_ALLOWED, "no").encode() == bytes.fromhex(
        "a26b06040000000700000005016e6f"
    )
    assert TunnelEof(9).encode() == bytes.fromhex("a26b7a0100090000")
    assert TunnelReset(9, 3, "x").encode() == bytes.fromhex("a26b7a020009000203") + b"x"
    assert WindowUpdate(9, 65536).encode() == bytes.fromhex("a26b7a030009000400010000")
    assert RequestTunnel(53, 1, b"dns", udp=True).encode() == bytes.fromhex(
        "a26b7a04003500070000000164" + "6e73"
    )
    assert UdpDatagram(0x0102, b"hi").encode() == bytes.fromhex("e26b01026869")
    offer = Capabilities(CapFlag.ALL, 0x40000).payload(CAPS_KIND_OFFER)
    assert offer == b"\xfftunnel" + bytes.fromhex("0101" + "0000000f" + "00040000")
    assert caps_untrusted(offer) == (CAPS_KIND_OFFER, Capabilities(CapFlag.ALL, 0x40000))
    assert caps_untrusted(b"Hello") is None


def test_unknown_type_is_returned_raw() -> None:
    raw = bytes.fromhex("a26b0777000100020102")
    assert decode_frame_untrusted(raw) == Frame(0x0777, 1, b"\x01\x02")


def test_old_pong_with_garbage_connid_round_trips() -> None:
    raw = bytes.fromhex("a26b0100beef0002") + b"hi"
    assert decode_frame_untrusted(raw) == Pong(b"hi", 0xBEEF)
    assert Pong(b"hi", 0xBEEF).encode() == raw


# --- rejection: one test per malformed shape ---------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (bytes.fromhex("a26b0108000000"), "truncated"),
        (bytes.fromhex("a26a010800000000"), "version 1"),
        (bytes.fromhex("a36b010800000000"), "magic"),
        (bytes.fromhex("a26b010800000005") + b"Hell", "truncated"),
        (bytes.fromhex("a26b010800000004") + b"Hello", "trailing"),
        (bytes.fromhex("a26b06000001") + (1366).to_bytes(2, "big") + bytes(1366), "1365"),
        (bytes.fromhex("a26b060200160003010203"), "forward id"),
        (bytes.fromhex("a26b061012340003010203"), "expected 4"),
        (bytes.fromhex("a26b0610123400050102030405"), "expected 4"),
        (bytes.fromhex("a26b06011234000100"), "empty"),
        (bytes.fromhex("a26b7a01123400017a"), "empty"),
        (bytes.fromhex("a26b06040001000500000001" + "01"), "non-zero"),
        (bytes.fromhex("a26b06040000000400000001"), "too short"),
        (bytes.fromhex("a26b0604000000060000000101ff"), "UTF-8"),
        (bytes.fromhex("a26b7a0200010000"), "reason code"),
        (bytes.fromhex("a26b7a030001000400000000"), "zero"),
        (bytes.fromhex("a26b7a0300010003000001"), "expected 4"),
    ],
)
def test_reject_malformed_frames(data: bytes, match: str) -> None:
    with pytest.raises(BadPacket, match=match):
        decode_frame_untrusted(data)


def test_reject_long_reason() -> None:
    raw = Frame(FrameType.TUN_RESET, 1, b"\x01" + b"a" * 256).encode()
    with pytest.raises(BadPacket, match="too long"):
        decode_frame_untrusted(raw)


def test_reject_bad_caps() -> None:
    with pytest.raises(BadPacket, match="caps kind"):
        caps_untrusted(b"\xfftunnel\x03\x01" + bytes(8))
    with pytest.raises(BadPacket, match="truncated"):
        caps_untrusted(b"\xfftunnel\x01\x01\x00")


def test_reject_bad_udp_datagrams() -> None:
    with pytest.raises(BadPacket, match="truncated"):
        UdpDatagram.decode(b"\xe2\x6b\x00")
    with pytest.raises(BadPacket, match="magic"):
        UdpDatagram.decode(b"\xe3\x6b\x00\x01")
    with pytest.raises(BadPacket, match="1373"):
        UdpDatagram.decode(b"\xe2\x6b\x00\x01" + bytes(1370))


def test_long_reason_is_truncated_on_encode() -> None:
    frame = DenyTunnel(1, 1, "é" * 200)
    decoded = decode_frame_untrusted(frame.encode())
    assert isinstance(decoded, DenyTunnel)
    assert len(decoded.reason.encode()) <= 255


# --- Hypothesis round trips -------------------------------------------------------------

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
reason = st.text(max_size=60)
typed_frames = st.one_of(
    st.builds(Ping, st.binary(max_size=MAX_FRAME_PAYLOAD_BYTES), u16),
    st.builds(Pong, st.binary(max_size=MAX_FRAME_PAYLOAD_BYTES), u16),
    st.builds(RequestTunnel, u16, u32, st.binary(max_size=300), st.booleans()),
    st.builds(AckTunnel, u16, u32),
    st.builds(TcpData, u16, st.binary(max_size=MAX_FRAME_PAYLOAD_BYTES)),
    st.builds(TcpFin, u16),
    st.builds(DenyTunnel, u32, st.integers(0, 255), reason),
    st.builds(TunnelEof, u16),
    st.builds(TunnelReset, u16, st.integers(0, 255), reason),
    st.builds(WindowUpdate, u16, st.integers(1, 0xFFFFFFFF)),
)


@given(typed_frames)
def test_round_trip_typed(frame: object) -> None:
    encoded = frame.encode()  # type: ignore[attr-defined]
    assert decode_frame_untrusted(encoded) == frame
    assert len(encoded) <= 1373


@given(u16, u16, st.binary(max_size=MAX_FRAME_PAYLOAD_BYTES))
def test_round_trip_raw(frame_type: int, connid: int, payload: bytes) -> None:
    frame = Frame(frame_type, connid, payload)
    assert Frame.decode(frame.encode()) == frame


@given(u16, st.binary(max_size=MAX_UDP_PAYLOAD_BYTES))
def test_round_trip_udp(tunnel_id: int, data: bytes) -> None:
    datagram = UdpDatagram(tunnel_id, data)
    assert UdpDatagram.decode(datagram.encode()) == datagram


@given(u32, u32, st.integers(0, 255), st.sampled_from([CAPS_KIND_OFFER, CAPS_KIND_ANSWER]))
def test_round_trip_caps(flags: int, window: int, version: int, kind: int) -> None:
    caps = Capabilities(flags, window, version)
    assert caps_untrusted(caps.payload(kind)) == (kind, caps)


@given(st.binary(max_size=1400))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    try:
        decoded = decode_frame_untrusted(data)
    except BadPacket:
        return
    assert decoded.encode() == data


@given(st.binary(min_size=8, max_size=40).map(lambda b: b"\xa2\x6b" + b[2:]))
def test_random_frames_raise_only_bad_packet(data: bytes) -> None:
    try:
        decoded = decode_frame_untrusted(data)
    except BadPacket:
        return
    assert decoded.encode() == data


@given(st.binary(max_size=40).map(lambda b: b"\xfftunnel" + b))
def test_random_caps_raise_only_bad_packet(data: bytes) -> None:
    try:
        caps_untrusted(data)
    except BadPacket:
        pass


@given(st.binary(max_size=1400))
def test_random_lossy_raise_only_bad_packet(data: bytes) -> None:
    try:
        decoded = UdpDatagram.decode(data)
    except BadPacket:
        return
    assert decoded.encode() == data


@given(st.integers(0, 0xFFFF), st.binary(max_size=1365))
def test_fast_tcp_data_encoder_matches_the_codec(tunnel_id: int, data: bytes) -> None:
    from tunnel.forward.mux import encode_tcp_data

    assert encode_tcp_data(tunnel_id, data) == TcpData(tunnel_id, data).encode()


@given(st.binary(max_size=40), st.integers(0, 3))
def test_mux_fast_path_accepts_exactly_what_the_codec_accepts(tail: bytes, cut: int) -> None:
    """Stream-data packets the mux's fast path takes are exactly those the codec decodes."""
    from tunnel.forward.loopback import SERVER_PK, make_link

    link = make_link()
    link.online()
    link.run()
    packet = bytes.fromhex("a26b0600") + tail[:cut] + tail[cut:]
    try:
        decode_frame_untrusted(packet)
        valid = True
    except BadPacket:
        valid = False
    before = link.client.statistics().get("bad_packet", 0)
    link.client.receive_packet(SERVER_PK, packet, link.now)
    assert (link.client.statistics().get("bad_packet", 0) == before) == valid
