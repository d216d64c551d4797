"""net_crypto data packets sealed and opened without per-packet allocations (the hot path).

tox-protocol.md 6.6 (data packets) and data-path.md ("zero-allocation crypto"). A data packet
is ``[0x1b][nonce low:2][MAC:16][E(plain)]`` with ``plain = [buffer_start:4][packet
number:4][padding][payload]`` boxed by ``crypto_box_afternm`` under the session's precomputed
shared key and the full 24-byte nonce. :class:`DataBox` builds the plaintext inside one
preallocated buffer and encrypts it in place with libsodium's ``crypto_box_easy_afternm``
(through ``nacl._sodium``, the cffi module PyNaCl ships), opens with
``crypto_box_open_easy_afternm`` into another preallocated buffer, and packs the nonce in
place. The bytes on the wire are identical to the composition of
:func:`tunnel.crypto.encrypt` with the codecs in :mod:`tunnel.wire.netcrypto` (tested).

Padding: toxcore pads ``[payload]`` with ``(1373 - len) % 8`` zero bytes; the same rule holds
for the larger payloads two of our own peers may agree on (Python's ``%`` keeps it in 0..7).
A :class:`DataBox` is not thread-safe (one per session, used by one thread).
"""

from __future__ import annotations

import struct

from nacl._sodium import ffi, lib  # type: ignore[import-not-found]  # PyNaCl's cffi module

from tunnel.crypto.keys import SHARED_KEY_SIZE
from tunnel.errors import BadPacket, DecryptError

DATA_PACKET_KIND = 0x1B
MAC_BYTES = 16
DATA_HEADER_BYTES = 8
DATA_PREFIX_BYTES = 3
"""Kind byte and the nonce's low two bytes, in front of the box."""
TOXCORE_MAX_DATA_PAYLOAD_BYTES = 1373
"""Packet id plus data, the most a toxcore peer sends or accepts (tox-protocol.md 6.6)."""
MAX_DATA_PAYLOAD_BYTES = 65400
"""The largest payload any :class:`DataBox` handles (the packet fits one UDP datagram)."""
_PADDING_MODULUS = 8
MIN_DATA_PACKET_BYTES = DATA_PREFIX_BYTES + MAC_BYTES + DATA_HEADER_BYTES + 1

_HEADER = struct.Struct(">II")
_NONCE = struct.Struct(">QQQ")
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_ZEROS = bytes(_PADDING_MODULUS)
_seal = lib.crypto_box_easy_afternm
_open = lib.crypto_box_open_easy_afternm


def data_padding_bytes(payload_bytes: int) -> int:
    """Zero bytes toxcore puts between the header and a payload of this size."""
    return (TOXCORE_MAX_DATA_PAYLOAD_BYTES - payload_bytes) % _PADDING_MODULUS


def data_packet_bytes(payload_bytes: int) -> int:
    """The size of the sealed data packet for a payload of this size (1400 for 1373)."""
    return (
        DATA_PREFIX_BYTES
        + MAC_BYTES
        + DATA_HEADER_BYTES
        + payload_bytes
        + data_padding_bytes(payload_bytes)
    )


class DataBox:
    """Seals and opens data packets under one precomputed shared key (see module docstring).

    Args:
        key: the 32-byte session shared key (``crypto_box_beforenm``).
        max_payload_bytes: the largest ``[id][data]`` this box seals or accepts.
    """

    __slots__ = (
        "_in",
        "_in_ptr",
        "_in_view",
        "_key",
        "_key_ptr",
        "_nonce",
        "_nonce_ptr",
        "_out",
        "_out_ptr",
        "_out_view",
        "_seal_mac",
        "_seal_plain",
        "key",
        "max_packet_bytes",
        "max_payload_bytes",
    )

    def __init__(self, key: bytes, max_payload_bytes: int = TOXCORE_MAX_DATA_PAYLOAD_BYTES) -> None:
        if len(key) != SHARED_KEY_SIZE:
            raise ValueError("key must be 32 bytes")
        if not 1 <= max_payload_bytes <= MAX_DATA_PAYLOAD_BYTES:
            raise ValueError(f"max_payload_bytes must be 1..{MAX_DATA_PAYLOAD_BYTES}")
        self.max_payload_bytes = max_payload_bytes
        self.max_packet_bytes = data_packet_bytes(max_payload_bytes)
        """The largest sealed packet (1400 for toxcore's 1373-byte payloads)."""
        plain_max = DATA_HEADER_BYTES + _PADDING_MODULUS + max_payload_bytes
        self._key = bytearray(key)
        self.key = bytes(key)
        self._key_ptr = ffi.from_buffer(self._key)
        self._nonce = bytearray(24)
        self._nonce_ptr = ffi.from_buffer(self._nonce)
        self._out = bytearray(DATA_PREFIX_BYTES + MAC_BYTES + plain_max)
        self._out_view = memoryview(self._out)
        self._out_ptr = ffi.from_buffer(self._out)
        # In place: the MAC goes after the 3-byte prefix, the ciphertext over the plaintext.
        self._seal_mac = self._out_ptr + DATA_PREFIX_BYTES
        self._seal_plain = self._out_ptr + DATA_PREFIX_BYTES + MAC_BYTES
        self._in = bytearray(plain_max)
        self._in_view = memoryview(self._in)
        self._in_ptr = ffi.from_buffer(self._in)

    def seal(
        self,
        nonce: int,
        buffer_start: int,
        packet_number: int,
        payload: bytes | bytearray | memoryview,
    ) -> bytes:
        """The whole data packet for ``payload`` (``[id][data]``) under the 192-bit ``nonce``.

        Raises:
            ValueError: empty or over-long payload (a bug on our side).
        """
        size = len(payload)
        if not 0 < size <= self.max_payload_bytes:
            raise ValueError(f"data payload of {size} bytes")
        pad = (TOXCORE_MAX_DATA_PAYLOAD_BYTES - size) % _PADDING_MODULUS
        out = self._out
        out[1] = (nonce >> 8) & 0xFF
        out[2] = nonce & 0xFF
        out[0] = DATA_PACKET_KIND
        _HEADER.pack_into(out, 19, buffer_start & _U32, packet_number & _U32)
        start = 27 + pad
        if pad:
            out[27:start] = _ZEROS[:pad]
        end = start + size
        out[start:end] = payload
        _NONCE.pack_into(self._nonce, 0, (nonce >> 128) & _U64, (nonce >> 64) & _U64, nonce & _U64)
        _seal(self._seal_mac, self._seal_plain, end - 19, self._nonce_ptr, self._key_ptr)
        return bytes(self._out_view[:end])

    def open_untrusted(self, packet: bytes, nonce: int) -> tuple[int, int, bytes]:
        """``(buffer_start, packet_number, payload)`` of a data packet from the network.

        ``nonce`` is the full nonce the receiver rebuilt from the packet's low two bytes.

        Raises:
            BadPacket: wrong length or kind, nothing but padding.
            DecryptError: the box did not open.
        """
        size = len(packet)
        if not MIN_DATA_PACKET_BYTES <= size <= self.max_packet_bytes:
            raise BadPacket(f"data packet of {size} bytes")
        if packet[0] != DATA_PACKET_KIND:
            raise BadPacket("not a data packet")
        _NONCE.pack_into(self._nonce, 0, (nonce >> 128) & _U64, (nonce >> 64) & _U64, nonce & _U64)
        cipher = ffi.from_buffer(packet)
        if _open(self._in_ptr, cipher + 3, size - 3, self._nonce_ptr, self._key_ptr) != 0:
            raise DecryptError("data packet failed to open")
        plain_end = size - 3 - MAC_BYTES
        plain = self._in
        buffer_start, packet_number = _HEADER.unpack_from(plain)
        start = DATA_HEADER_BYTES
        while start < plain_end and plain[start] == 0:
            start += 1
        if start == plain_end:
            raise BadPacket("data packet without a packet id")
        if plain_end - start > self.max_payload_bytes:
            raise BadPacket("data payload too long")
        return buffer_start, packet_number, bytes(self._in_view[start:plain_end])
