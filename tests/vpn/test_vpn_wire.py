"""VPN wire codecs (tunnel.wire.vpn): golden bytes, round-trips, rejections, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.toxid import ToxId
from tunnel.wire.vpn import (
    MAX_RECORDS_PER_PACKET,
    RECORD_SIZE_BYTES,
    VPN_CONTROL_PACKET_ID,
    VPN_DATA_PACKET_ID,
    Hello,
    JoinRequest,
    MemberRecord,
    Members,
    Prefix,
    Revoke,
    decode_control_untrusted,
)

PK = bytes(range(32))  # last byte 0x1f < 0x80: a valid public key
TOX_ID = ToxId(PK, b"\xde\xad\xbe\xef")


def test_packet_ids_in_custom_ranges() -> None:
    assert 160 <= VPN_CONTROL_PACKET_ID <= 191
    assert VPN_CONTROL_PACKET_ID != 162  # tuntox
    assert 200 <= VPN_DATA_PACKET_ID <= 254
    assert VPN_DATA_PACKET_ID not in (200, 226)  # toxvpn, our tuntox UDP


def test_golden_record_and_members() -> None:
    record = MemberRecord(TOX_ID, 7, bytes([10, 1, 2, 3]), None)
    checksum = TOX_ID.checksum
    expected = PK + b"\xde\xad\xbe\xef" + checksum + bytes.fromhex("00000007010a010203") + bytes(16)
    assert record.encode() == expected
    assert len(expected) == RECORD_SIZE_BYTES == 63
    packet = Members((record,)).encode()
    assert packet == b"\xb0\x02\x01" + expected
    assert decode_control_untrusted(packet) == Members((record,))


def test_golden_revoke() -> None:
    revoke = Revoke(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32)
    data = revoke.encode()
    assert data == b"\xb0\x03" + b"\x01" * 32 + b"\x02" * 32 + b"\x03" * 32
    assert decode_control_untrusted(data) == revoke


def test_golden_hello() -> None:
    record = MemberRecord(TOX_ID)
    hello = Hello(
        b"\x11" * 8,
        b"\x22" * 32,
        1372,
        record,
        Prefix(bytes([10, 77, 0, 0]), 16),
        None,
        "office",
    )
    data = hello.encode()
    expected = (
        b"\xb0\x01\x01"
        + b"\x11" * 8
        + b"\x22" * 32
        + b"\x05\x5c"
        + record.encode()
        + b"\x10\x0a\x4d\x00\x00"
        + b"\xff"
        + bytes(16)
        + b"\x06office"
    )
    assert data == expected
    assert decode_control_untrusted(data) == hello


def test_golden_join_request() -> None:
    request = JoinRequest(b"\xab" * 8, b"\xcd" * 32)
    text = request.encode()
    assert text == b"tunnel-vpn/1 abababababababab " + b"cd" * 32
    assert JoinRequest.decode(text) == request


keys = st.binary(min_size=32, max_size=32).map(lambda b: b[:31] + bytes([b[31] & 0x7F]))
tox_ids = st.builds(ToxId, keys, st.binary(min_size=4, max_size=4))
records = st.builds(
    MemberRecord,
    tox_ids,
    st.integers(min_value=0, max_value=0xFFFFFFFF),
    st.none() | st.binary(min_size=4, max_size=4),
    st.none() | st.binary(min_size=16, max_size=16),
)
prefix4 = st.none() | st.builds(
    Prefix, st.binary(min_size=4, max_size=4), st.integers(min_value=0, max_value=32)
)
prefix6 = st.none() | st.builds(
    Prefix, st.binary(min_size=16, max_size=16), st.integers(min_value=0, max_value=128)
)
hellos = st.builds(
    Hello,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=0xFFFF),
    records,
    prefix4,
    prefix6,
    st.text(max_size=15),
    st.integers(min_value=0, max_value=255),
)
messages = (
    hellos
    | st.builds(Members, st.lists(records, min_size=1, max_size=MAX_RECORDS_PER_PACKET).map(tuple))
    | st.builds(
        Revoke,
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=32, max_size=32),
    )
)


@given(messages)
def test_round_trip(message: Hello | Members | Revoke) -> None:
    data = message.encode()
    assert len(data) <= 1373
    assert decode_control_untrusted(data) == message


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=32, max_size=32))
def test_join_round_trip(network_id: bytes, proof: bytes) -> None:
    request = JoinRequest(network_id, proof)
    assert JoinRequest.decode(request.encode()) == request


@given(st.binary(max_size=300))
def test_random_bytes_only_bad_packet(data: bytes) -> None:
    for candidate in (data, b"\xb0" + data[:1] + data[1:], b"\xb0\x02\x01" + data):
        try:
            message = decode_control_untrusted(candidate)
        except BadPacket:
            continue
        assert message.encode() == candidate
    try:
        request = JoinRequest.decode(data)
    except BadPacket:
        return
    assert request.encode() == data


def _valid_members() -> bytes:
    return Members((MemberRecord(TOX_ID, 1, None, None),)).encode()


def _valid_hello() -> bytes:
    return Hello(b"\x00" * 8, b"\x00" * 32, 1372, MemberRecord(TOX_ID), None, None, "n").encode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xb1\x02", id="wrong-id"),
        pytest.param(b"\xb0", id="no-type"),
        pytest.param(b"\xb0\x09", id="unknown-type"),
        pytest.param(b"\xb0\x02\x00", id="zero-records"),
        pytest.param(b"\xb0\x02\x16" + bytes(63 * 22), id="too-many-records"),
        pytest.param(_valid_members()[:-1], id="truncated-record"),
        pytest.param(_valid_members() + b"\x00", id="trailing"),
        pytest.param(_valid_members()[:39] + b"\x00" + _valid_members()[40:], id="bad-checksum"),
        pytest.param(_valid_members()[:45] + b"\x04" + _valid_members()[46:], id="unknown-flag"),
        pytest.param(_valid_members()[:46] + b"\x01" + _valid_members()[47:], id="v4-no-flag"),
        pytest.param(_valid_members()[:-1] + b"\x01", id="v6-no-flag"),
        pytest.param(b"\xb0\x03" + bytes(95), id="short-revoke"),
        pytest.param(b"\xb0\x03" + bytes(97), id="long-revoke"),
        pytest.param(_valid_hello()[:-1], id="hello-truncated-name"),
        pytest.param(_valid_hello()[:-2] + b"\x40" + b"x" * 64, id="hello-long-name"),
        pytest.param(_valid_hello()[:-2] + b"\x02\xff\xfe", id="hello-bad-utf8"),
        pytest.param(
            _valid_hello()[:108] + b"\x21" + _valid_hello()[109:], id="hello-v4-prefix-len"
        ),
        pytest.param(
            _valid_hello()[:109] + b"\x01" + _valid_hello()[110:], id="hello-absent-nonzero"
        ),
    ],
)
def test_rejections(data: bytes) -> None:
    with pytest.raises(BadPacket):
        decode_control_untrusted(data)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"hello",
        b"tunnel-vpn/1 abababababababab " + b"CD" * 32,
        b"tunnel-vpn/1 abababababababab " + b"cd" * 32 + b"\n",
        b"tunnel-vpn/2 abababababababab " + b"cd" * 32,
        b"tunnel-vpn/1 ababababababab " + b"cd" * 32,
        "tunnel-vpn/1 ä".encode(),
    ],
)
def test_join_rejections(text: bytes) -> None:
    with pytest.raises(BadPacket):
        JoinRequest.decode(text)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="ipv4"):
        MemberRecord(TOX_ID, 0, b"\x00" * 3)
    with pytest.raises(ValueError, match="records"):
        Members(())
    with pytest.raises(ValueError, match="name"):
        Hello(b"\x00" * 8, b"\x00" * 32, 1, MemberRecord(TOX_ID), None, None, "x" * 64)
