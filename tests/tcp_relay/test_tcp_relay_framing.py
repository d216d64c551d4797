"""Stream framing and frame encryption (tox-protocol.md 7.2)."""

from __future__ import annotations

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import increment_nonce
from tunnel.errors import BadPacket, DecryptError
from tunnel.tcp_relay.framing import NEED_DATA, FrameCipher, StreamBuffer
from tunnel.tcp_relay.outbox import Outbox

KEY = bytes(range(32))
NONCE_A = bytes(23) + b"\xff"
NONCE_B = bytes(range(24))


def test_golden_frame_layout() -> None:
    """frame = [len BE = len(plain)+16][crypto_box_afternm(plain, nonce, key)]; nonce +1 (BE)."""
    cipher = FrameCipher(KEY, NONCE_A, NONCE_B)
    first = cipher.seal(b"\x04" + bytes(8))
    assert first[:2] == (9 + 16).to_bytes(2, "big")
    assert first[2:] == nb.crypto_box_afternm(b"\x04" + bytes(8), NONCE_A, KEY)
    second = cipher.seal(b"abc")
    next_nonce = bytes(22) + b"\x01\x00"  # carry into byte 22: big-endian increment
    assert increment_nonce(NONCE_A) == next_nonce
    assert second == b"\x00\x13" + nb.crypto_box_afternm(b"abc", next_nonce, KEY)


def test_two_ciphers_talk() -> None:
    a = FrameCipher(KEY, NONCE_A, NONCE_B)
    b = FrameCipher(KEY, NONCE_B, NONCE_A)
    buf = StreamBuffer()
    for i in range(5):
        buf.feed(a.seal(bytes([i + 1]) * (i + 1)))
    got = []
    while (frame := buf.next_frame()) is not NEED_DATA:
        assert isinstance(frame, bytes)
        got.append(b.open_untrusted(frame))
    assert got == [bytes([i + 1]) * (i + 1) for i in range(5)]


def test_replayed_or_reordered_frame_fails() -> None:
    a = FrameCipher(KEY, NONCE_A, NONCE_B)
    b = FrameCipher(KEY, NONCE_B, NONCE_A)
    f1, f2 = a.seal(b"one"), a.seal(b"two")
    with pytest.raises(DecryptError):
        b.open_untrusted(f2[2:])
    assert b.open_untrusted(f1[2:]) == b"one"
    with pytest.raises(DecryptError):
        b.open_untrusted(f1[2:])


def test_bad_mac_fails() -> None:
    a = FrameCipher(KEY, NONCE_A, NONCE_B)
    b = FrameCipher(KEY, NONCE_B, NONCE_A)
    frame = bytearray(a.seal(b"hello"))
    frame[5] ^= 1
    with pytest.raises(DecryptError):
        b.open_untrusted(bytes(frame[2:]))


def test_seal_rejects_empty_and_oversized() -> None:
    a = FrameCipher(KEY, NONCE_A, NONCE_B)
    with pytest.raises(ValueError, match=r"1\.\.2032"):
        a.seal(b"")
    with pytest.raises(ValueError, match=r"1\.\.2032"):
        a.seal(bytes(2033))
    assert len(a.seal(bytes(2032))) == 2 + 2048


def test_need_data_then_frame_byte_by_byte() -> None:
    frame = FrameCipher(KEY, NONCE_A, NONCE_B).seal(b"x" * 100)
    buf = StreamBuffer()
    for byte in frame[:-1]:
        buf.feed(bytes([byte]))
        assert buf.next_frame() is NEED_DATA
    buf.feed(frame[-1:])
    assert buf.next_frame() == frame[2:]
    assert buf.buffered_bytes == 0


def test_take_exact() -> None:
    buf = StreamBuffer()
    buf.feed(bytes(127))
    assert buf.take_exact(128) is NEED_DATA
    buf.feed(b"\x01\x00\x05")
    assert buf.take_exact(128) == bytes(127) + b"\x01"
    assert buf.buffered_bytes == 2


def test_oversized_length_is_invalid_not_need_data() -> None:
    buf = StreamBuffer()
    buf.feed(b"\x08\x01")  # 2049
    with pytest.raises(BadPacket, match="2049"):
        buf.next_frame()
    ok = StreamBuffer()
    ok.feed(b"\x08\x00")  # exactly 2048: fine, just incomplete
    assert ok.next_frame() is NEED_DATA


def test_zero_length_frames_are_skipped_like_toxcore() -> None:
    buf = StreamBuffer()
    buf.feed(b"\x00\x00\x00\x00\x00\x11" + bytes(17))
    assert buf.next_frame() == bytes(17)
    assert buf.empty_frames == 2


def test_buffer_cap() -> None:
    buf = StreamBuffer(max_buffered_bytes=4096)
    buf.feed(bytes(4000))
    with pytest.raises(BadPacket, match="cap"):
        buf.feed(bytes(97))
    with pytest.raises(ValueError, match="maximal frame"):
        StreamBuffer(max_buffered_bytes=100)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.data())
def test_any_split_gives_same_frames(plains: list[bytes], data: st.DataObject) -> None:
    a = FrameCipher(KEY, NONCE_A, NONCE_B)
    b = FrameCipher(KEY, NONCE_B, NONCE_A)
    stream = b"".join(a.seal(p) for p in plains)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buf = StreamBuffer()
    got: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        buf.feed(stream[prev:cut])
        prev = cut
        while (frame := buf.next_frame()) is not NEED_DATA:
            assert isinstance(frame, bytes)
            got.append(b.open_untrusted(frame))
    assert got == plains


@given(st.binary(max_size=3000))
def test_random_stream_need_data_or_badpacket(data: bytes) -> None:
    buf = StreamBuffer()
    cipher = FrameCipher(KEY, NONCE_B, NONCE_A)
    try:
        buf.feed(data)
        while (frame := buf.next_frame()) is not NEED_DATA:
            assert isinstance(frame, bytes)
            cipher.open_untrusted(frame)
    except BadPacket:
        pass


def test_outbox_priority_keeps_nonce_order() -> None:
    """Control packets jump the queue but are sealed in write order, so nonces stay in step."""
    box = Outbox(max_data_bytes=10, max_control_bytes=5)
    assert box.push_data(b"data1")
    assert box.push_data(b"data2")
    assert not box.push_data(b"x")  # data cap reached: backpressure
    assert box.push_control(b"ctl")
    assert not box.push_control(b"ctl")
    wire = box.drain(FrameCipher(KEY, NONCE_A, NONCE_B))
    rx = FrameCipher(KEY, NONCE_B, NONCE_A)
    buf = StreamBuffer()
    buf.feed(wire)
    order = []
    while (frame := buf.next_frame()) is not NEED_DATA:
        assert isinstance(frame, bytes)
        order.append(rx.open_untrusted(frame))
    assert order == [b"ctl", b"data1", b"data2"]
    assert not box
    assert box.queued_bytes == 0
