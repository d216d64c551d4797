"""net_crypto codecs (tox-protocol.md 6.2-6.7): golden layouts, round-trips, rejections, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair, decrypt_untrusted, encrypt, sha512, shared_key
from tunnel.errors import BadPacket
from tunnel.wire.netcrypto import (
    COOKIE_REQUEST_SIZE,
    COOKIE_RESPONSE_SIZE,
    COOKIE_SIZE,
    HANDSHAKE_SIZE,
    Cookie,
    CookiePlain,
    CookieRequest,
    CookieRequestPlain,
    CookieResponse,
    CookieResponsePlain,
    DataPacket,
    DataPlain,
    Handshake,
    HandshakePlain,
    RequestReport,
    decode_request_untrusted,
    encode_request,
    missing_runs,
    padding_size,
)

A = KeyPair.from_secret_key(bytes(range(32)))
B = KeyPair.from_secret_key(bytes(range(32, 64)))
PK1 = bytes([1]) * 32
PK2 = bytes([2]) * 32
NONCE = bytes(range(24))


def toxcore_generate_request(filled: list[bool]) -> bytes:
    """Oracle: c-toxcore's generate_request_packet loop, position by position."""
    out = [1]
    n = 1
    for have in filled:
        if not have:
            out.append(n)
            n = 0
        elif n == 255:
            out.append(0)
            n = 0
        if len(out) == 1373:
            break
        n += 1
    return bytes(out)


def toxcore_handle_request(body: bytes, span: int) -> tuple[list[int], list[int]] | None:
    """Oracle: c-toxcore's handle_request_packet loop; returns (requested, freed) or None."""
    n = 1
    data = list(body)
    requested: list[int] = []
    freed: list[int] = []
    for i in range(span):
        if not data:
            break
        if n == data[0]:
            requested.append(i)
            data.pop(0)
            n = 0
        else:
            freed.append(i)
        if n == 255:
            n = 1
            if data[0] != 0:
                return None
            data.pop(0)
        else:
            n += 1
    return requested, freed


# ----------------------------------------------------------------------------- golden


def test_golden_cookie_request_layout() -> None:
    key = shared_key(B.public_key, A.secret_key)
    plain = CookieRequestPlain(PK1, b"\x11" * 8).encode()
    assert plain == PK1 + bytes(32) + b"\x11" * 8
    pkt = CookieRequest(A.public_key, NONCE, encrypt(key, NONCE, plain)).encode()
    assert len(pkt) == COOKIE_REQUEST_SIZE == 145
    assert pkt[0] == 0x18
    assert pkt[1:33] == A.public_key
    assert pkt[33:57] == NONCE
    opened = decrypt_untrusted(shared_key(A.public_key, B.secret_key), NONCE, pkt[57:])
    assert CookieRequestPlain.decode(opened) == CookieRequestPlain(PK1, b"\x11" * 8)


def test_golden_cookie_and_response_layout() -> None:
    cookie_plain = CookiePlain(0x0102030405060708, PK1, PK2)
    assert cookie_plain.encode() == bytes.fromhex("0102030405060708") + PK1 + PK2
    cookie = Cookie(NONCE, encrypt(bytes(32), NONCE, cookie_plain.encode())).encode()
    assert len(cookie) == COOKIE_SIZE == 112
    plain = CookieResponsePlain(cookie, b"\x22" * 8).encode()
    assert plain == cookie + b"\x22" * 8
    pkt = CookieResponse(NONCE, encrypt(bytes(32), NONCE, plain)).encode()
    assert len(pkt) == COOKIE_RESPONSE_SIZE == 161
    assert pkt[0] == 0x19
    assert pkt[1:25] == NONCE


def test_golden_handshake_layout() -> None:
    cookie = bytes([7]) * 112
    other = bytes([8]) * 112
    plain = HandshakePlain(NONCE, PK1, sha512(cookie), other)
    raw = plain.encode()
    assert raw == NONCE + PK1 + sha512(cookie) + other
    assert len(raw) == 232
    pkt = Handshake(cookie, NONCE, encrypt(bytes(32), NONCE, raw)).encode()
    assert len(pkt) == HANDSHAKE_SIZE == 385
    assert pkt[0] == 0x1A
    assert pkt[1:113] == cookie
    assert pkt[113:137] == NONCE


def test_golden_data_plain_padding() -> None:
    # 11-byte payload: (1373 - 11) % 8 = 2 zero bytes of padding.
    plain = DataPlain(0x01020304, 0x0A0B0C0D, b"\xa0" + b"x" * 10).encode()
    assert plain == bytes.fromhex("010203040a0b0c0d0000a0") + b"x" * 10
    assert padding_size(1373) == 0
    assert padding_size(1) == 4
    # Receivers skip any number of zero bytes.
    assert DataPlain.decode(bytes(8) + bytes(50) + b"\x10").payload == b"\x10"


def test_golden_data_packet() -> None:
    pkt = DataPacket(0xBEEF, bytes(25)).encode()
    assert pkt == b"\x1b\xbe\xef" + bytes(25)
    assert len(pkt) == 28


def test_golden_request_packets() -> None:
    assert encode_request([], 0) == b"\x01"
    assert encode_request([0], 1) == b"\x01\x01"
    assert encode_request([1, 3], 5) == b"\x01\x02\x02"
    # 300 received, then a hole: a zero byte after 255 positions, then the distance 46.
    assert encode_request([300], 301) == b"\x01\x00\x2e"
    assert encode_request([], 600) == b"\x01\x00\x00"
    assert decode_request_untrusted(b"\x02\x02", 5) == RequestReport((1, 3), 4)
    assert decode_request_untrusted(b"\x00\x2e", 400) == RequestReport((300,), 301)


# ----------------------------------------------------------------------------- round-trips

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=24, max_size=24)
cookies = st.binary(min_size=112, max_size=112)
echo = st.binary(min_size=8, max_size=8)
u32 = st.integers(0, 0xFFFFFFFF)


@given(keys, nonces, st.binary(min_size=88, max_size=88))
def test_cookie_request_roundtrip(pk: bytes, nonce: bytes, box: bytes) -> None:
    pkt = CookieRequest(pk, nonce, box)
    assert CookieRequest.decode(pkt.encode()) == pkt


@given(keys, echo)
def test_cookie_request_plain_roundtrip(pk: bytes, echo_id: bytes) -> None:
    plain = CookieRequestPlain(pk, echo_id)
    assert CookieRequestPlain.decode(plain.encode()) == plain


@given(nonces, st.binary(min_size=136, max_size=136), cookies, echo)
def test_cookie_response_roundtrip(nonce: bytes, box: bytes, cookie: bytes, e: bytes) -> None:
    assert CookieResponse.decode(CookieResponse(nonce, box).encode()) == CookieResponse(nonce, box)
    plain = CookieResponsePlain(cookie, e)
    assert CookieResponsePlain.decode(plain.encode()) == plain


@given(st.integers(0, 2**64 - 1), keys, keys, cookies)
def test_cookie_roundtrip(t: int, a: bytes, b: bytes, raw: bytes) -> None:
    plain = CookiePlain(t, a, b)
    assert CookiePlain.decode(plain.encode()) == plain
    assert Cookie.decode(raw).encode() == raw


@given(cookies, nonces, st.binary(min_size=248, max_size=248), keys, cookies)
def test_handshake_roundtrip(cookie: bytes, nonce: bytes, box: bytes, pk: bytes, o: bytes) -> None:
    pkt = Handshake(cookie, nonce, box)
    assert Handshake.decode(pkt.encode()) == pkt
    plain = HandshakePlain(nonce, pk, bytes(64), o)
    assert HandshakePlain.decode(plain.encode()) == plain


@given(st.integers(0, 0xFFFF), st.binary(min_size=25, max_size=1397))
def test_data_packet_roundtrip(low: int, box: bytes) -> None:
    pkt = DataPacket(low, box)
    assert DataPacket.decode(pkt.encode()) == pkt


@given(u32, u32, st.integers(1, 255), st.binary(max_size=1372))
def test_data_plain_roundtrip(start: int, num: int, pid: int, data: bytes) -> None:
    plain = DataPlain(start, num, bytes([pid]) + data)
    encoded = plain.encode()
    assert len(encoded) <= 1400 - 3 - 16
    assert DataPlain.decode(encoded) == plain


@given(st.lists(st.booleans(), max_size=3000))
def test_request_encoder_matches_toxcore(filled: list[bool]) -> None:
    missing = [i for i, have in enumerate(filled) if not have]
    assert encode_request(missing, len(filled)) == toxcore_generate_request(filled)


@given(st.lists(st.booleans(), max_size=3000), st.integers(0, 3500))
def test_request_decoder_matches_toxcore(filled: list[bool], send_span: int) -> None:
    body = toxcore_generate_request(filled)[1:]
    oracle = toxcore_handle_request(body, send_span)
    assert oracle is not None
    report = decode_request_untrusted(body, send_span)
    assert list(report.missing) == oracle[0]
    assert list(range(report.covered)) == sorted(oracle[0] + oracle[1])


@given(st.binary(max_size=400), st.integers(0, 5000))
def test_request_decoder_random_matches_toxcore(body: bytes, span: int) -> None:
    oracle = toxcore_handle_request(body, span)
    report = decode_request_untrusted(body, span)
    assert oracle is not None
    assert list(report.missing) == oracle[0]
    assert report.covered == len(oracle[0]) + len(oracle[1])


# ----------------------------------------------------------------------------- rejections


def test_reject_truncated_and_long_outer_packets() -> None:
    good_req = b"\x18" + bytes(144)
    CookieRequest.decode(good_req)
    for bad in (good_req[:-1], good_req + b"\x00", b"\x19" + bytes(144), b""):
        with pytest.raises(BadPacket):
            CookieRequest.decode(bad)
    good_resp = b"\x19" + bytes(160)
    CookieResponse.decode(good_resp)
    for bad in (good_resp[:-1], good_resp + b"\x00", b"\x18" + bytes(160)):
        with pytest.raises(BadPacket):
            CookieResponse.decode(bad)
    good_hs = b"\x1a" + bytes(384)
    Handshake.decode(good_hs)
    for bad in (good_hs[:-1], good_hs + b"\x00", b"\x1b" + bytes(384)):
        with pytest.raises(BadPacket):
            Handshake.decode(bad)


def test_reject_data_packet_sizes_and_kind() -> None:
    with pytest.raises(BadPacket):
        DataPacket.decode(b"\x1b" + bytes(26))  # 27 bytes
    with pytest.raises(BadPacket):
        DataPacket.decode(b"\x1b" + bytes(1400))  # 1401 bytes
    with pytest.raises(BadPacket):
        DataPacket.decode(b"\x1a" + bytes(40))


def test_reject_data_plain() -> None:
    with pytest.raises(BadPacket):
        DataPlain.decode(bytes(7))  # no header
    with pytest.raises(BadPacket):
        DataPlain.decode(bytes(8 + 20))  # padding only
    with pytest.raises(BadPacket):
        DataPlain.decode(bytes(8) + b"\x10" * 1374)  # payload too long


def test_reject_plaintexts_of_wrong_length() -> None:
    for decoder, size in (
        (CookieRequestPlain.decode, 72),
        (CookieResponsePlain.decode, 120),
        (CookiePlain.decode, 72),
        (HandshakePlain.decode, 232),
        (Cookie.decode, 112),
    ):
        with pytest.raises(BadPacket):
            decoder(bytes(size - 1))
        with pytest.raises(BadPacket):
            decoder(bytes(size + 1))


def test_local_misuse_raises_value_error() -> None:
    with pytest.raises(ValueError, match="payload"):
        DataPlain(0, 0, b"")
    with pytest.raises(ValueError, match="payload"):
        DataPlain(0, 0, b"\x00abc")
    with pytest.raises(ValueError, match="sorted"):
        encode_request([3, 1], 5)


# ----------------------------------------------------------------------------- fuzz


@given(st.binary(max_size=1500))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    for decoder in (
        CookieRequest.decode,
        CookieResponse.decode,
        Handshake.decode,
        DataPacket.decode,
        DataPlain.decode,
        CookieRequestPlain.decode,
        CookieResponsePlain.decode,
        CookiePlain.decode,
        HandshakePlain.decode,
        Cookie.decode,
    ):
        try:
            decoder(data)
        except BadPacket:
            pass
    decode_request_untrusted(data, len(data) * 3)


def test_missing_runs_of_a_receive_window() -> None:
    """Holes of [start, end) as runs of offsets, cut off after max_holes holes."""
    assert missing_runs(10, 20, {12, 13, 17}, 100) == [(0, 2), (4, 7), (8, 10)]
    assert missing_runs(10, 20, {12, 13, 17}, 3) == [(0, 2), (4, 7)]
    assert missing_runs(10, 13, {10, 11, 12}, 100) == []
    assert missing_runs(10, 10, set(), 100) == []
    assert missing_runs(10, 12, set(), 100) == [(0, 2)]
