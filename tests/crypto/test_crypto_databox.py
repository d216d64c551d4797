"""DataBox (allocation-free data packets) is byte-identical to the generic encrypt + codecs."""

from __future__ import annotations

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import decrypt_untrusted, encrypt
from tunnel.crypto.databox import (
    MAX_DATA_PAYLOAD_BYTES,
    TOXCORE_MAX_DATA_PAYLOAD_BYTES,
    DataBox,
    data_padding_bytes,
)
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.netcrypto import (
    decode_data_plain_untrusted,
    encode_data_packet,
    encode_data_plain,
    padding_size,
    split_data_packet_untrusted,
)

KEY = nb.crypto_box_beforenm(nb.crypto_scalarmult_base(bytes(range(1, 33))), bytes(range(33, 65)))
NONCE_MOD = 1 << 192


def reference_packet(nonce: int, start: int, number: int, payload: bytes) -> bytes:
    plain = encode_data_plain(start, number, payload)
    return encode_data_packet(nonce & 0xFFFF, encrypt(KEY, nonce.to_bytes(24, "big"), plain))


payloads = st.binary(min_size=1, max_size=TOXCORE_MAX_DATA_PAYLOAD_BYTES).filter(lambda p: p[0])
nonces = st.integers(0, NONCE_MOD - 1)
u32 = st.integers(0, 2**32 - 1)


def test_golden_vector_matches_reference() -> None:
    box = DataBox(KEY)
    nonce = int.from_bytes(bytes(range(24)), "big")
    packet = box.seal(nonce, 7, 9, b"\xe4hello")
    assert packet == reference_packet(nonce, 7, 9, b"\xe4hello")
    assert packet[:3] == bytes([0x1B, 22, 23])
    assert len(packet) == 3 + 16 + 8 + data_padding_bytes(6) + 6


@given(nonces, u32, u32, payloads)
def test_seal_is_byte_identical(nonce: int, start: int, number: int, payload: bytes) -> None:
    assert DataBox(KEY).seal(nonce, start, number, payload) == reference_packet(
        nonce, start, number, payload
    )


@given(nonces, u32, u32, payloads)
def test_open_matches_reference(nonce: int, start: int, number: int, payload: bytes) -> None:
    packet = reference_packet(nonce, start, number, payload)
    nonce_low, boxed = split_data_packet_untrusted(packet)
    assert nonce_low == nonce & 0xFFFF
    expected = decode_data_plain_untrusted(decrypt_untrusted(KEY, nonce.to_bytes(24, "big"), boxed))
    assert DataBox(KEY).open_untrusted(packet, nonce) == expected == (start, number, payload)


def test_buffers_are_reused_safely() -> None:
    box = DataBox(KEY)
    first = box.seal(1, 0, 0, b"\xe4" + bytes(1000))
    second = box.seal(2, 0, 1, b"\xe4x")
    assert box.open_untrusted(first, 1)[2] == b"\xe4" + bytes(1000)
    assert box.open_untrusted(second, 2)[2] == b"\xe4x"


def test_padding_rule_matches_codec() -> None:
    assert all(data_padding_bytes(n) == padding_size(n) for n in range(1, 1374))


def test_jumbo_payload_round_trip() -> None:
    box = DataBox(KEY, max_payload_bytes=9000)
    payload = b"\xe4" + bytes(range(256)) * 35
    packet = box.seal(5, 1, 2, payload)
    assert box.open_untrusted(packet, 5) == (1, 2, payload)
    with pytest.raises(BadPacket):
        DataBox(KEY).open_untrusted(packet, 5)  # a toxcore-sized box refuses it
    with pytest.raises(ValueError):
        DataBox(KEY).seal(5, 1, 2, payload)


def test_toxcore_limit_is_1400_bytes() -> None:
    box = DataBox(KEY)
    assert box.max_packet_bytes == 1400
    assert len(box.seal(0, 0, 0, b"\xe4" * TOXCORE_MAX_DATA_PAYLOAD_BYTES)) == 1400


def test_rejections() -> None:
    box = DataBox(KEY)
    good = box.seal(3, 0, 0, b"\xe4abc")
    with pytest.raises(BadPacket):
        box.open_untrusted(good[:27], 3)  # too short
    with pytest.raises(BadPacket):
        box.open_untrusted(b"\x1c" + good[1:], 3)  # wrong kind
    with pytest.raises(DecryptError):
        box.open_untrusted(good, 4)  # wrong nonce
    with pytest.raises(DecryptError):
        box.open_untrusted(good[:-1] + bytes([good[-1] ^ 1]), 3)  # tampered
    only_padding = encode_data_packet(
        3, encrypt(KEY, (3).to_bytes(24, "big"), encode_data_plain(0, 0, b"\xe4")[:8] + bytes(9))
    )
    with pytest.raises(BadPacket):
        box.open_untrusted(only_padding, 3)
    for bad in (b"", b"\xe4" * (TOXCORE_MAX_DATA_PAYLOAD_BYTES + 1)):
        with pytest.raises(ValueError):
            box.seal(0, 0, 0, bad)
    with pytest.raises(ValueError):
        DataBox(bytes(31))
    with pytest.raises(ValueError):
        DataBox(KEY, max_payload_bytes=MAX_DATA_PAYLOAD_BYTES + 1)


@given(st.binary(max_size=1500), nonces)
def test_random_bytes_raise_only_bad_packet(data: bytes, nonce: int) -> None:
    try:
        DataBox(KEY).open_untrusted(data, nonce)
    except BadPacket:
        pass
