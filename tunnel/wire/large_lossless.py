"""Lossless packets larger than toxcore's 1373 bytes between two of our own peers (issue 8).

Both ends announce the largest lossless payload they accept in the extension Hello
(:class:`tunnel.nat.wire.Hello`); toxcore peers never send one, so they never see any of this.
A large packet keeps its one lossless packet number (:mod:`tunnel.netcrypto.large`):

* over a direct UDP path that carried a large packet intact (the path is *proven*), it goes as
  one data packet, IP fragmentation left to the kernel;
* otherwise (no proof yet, TCP relay, every resend) it goes as **fragments**: lossy data
  packets with id ``0xEA``, each naming the packet number, so the receiver rebuilds the packet
  and takes it as lossless packet ``number``. A lost fragment loses the packet, which the
  receiver's request packets ask for again like any other;
* the **proof probe** is an ordinary lossless packet ``0x9D`` (an extension id toxcore 0.2.18
  drops silently, ``Messenger.c``; our receivers ignore it) padded to the agreed size: when
  the peer acknowledges it without a resend, the path carries large packets.

Layout of a fragment (big endian), the payload of a lossy data packet::

    0xEA | number u32 (the lossless packet number, wire form) | total u16 | offset u16 | bytes

``offset`` is a multiple of :data:`FRAGMENT_DATA_BYTES` and every fragment but the last is
exactly that long, so a packet is whole when every offset arrived once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tunnel.crypto.databox import MAX_DATA_PAYLOAD_BYTES
from tunnel.errors import BadPacket
from tunnel.wire.netcrypto import MAX_CRYPTO_DATA_SIZE_BYTES

LARGE_FRAGMENT_ID = 0xEA
"""Lossy data-packet id of a fragment (custom lossy range; only ever sent to our peers)."""
LARGE_PROBE_ID = 0x9D
"""Lossless extension id of the proof probe (ids 0x90..0x9F: toxcore drops them silently)."""
FRAGMENT_HEADER_BYTES = 9
FRAGMENT_DATA_BYTES = MAX_CRYPTO_DATA_SIZE_BYTES - FRAGMENT_HEADER_BYTES  # 1364
MAX_LARGE_LOSSLESS_BYTES = MAX_DATA_PAYLOAD_BYTES
"""The largest lossless payload two of our peers may agree (one data packet in one datagram)."""

DEFAULT_LARGE_LOSSLESS_BYTES = 16_384
"""What a node announces by default (``NodeOptions.large_lossless_bytes``)."""

_HEADER = struct.Struct(">BIHH")


@dataclass(frozen=True, slots=True)
class LargeFragment:
    """One piece of lossless packet ``number`` (wire form, mod 2**32) of ``total`` bytes."""

    number: int
    total: int
    offset: int
    data: bytes

    def encode(self) -> bytes:
        return encode_fragment(self.number, self.total, self.offset, self.data)

    @classmethod
    def decode_untrusted(cls, data: bytes) -> LargeFragment:
        """Raises only :class:`BadPacket`."""
        if len(data) <= FRAGMENT_HEADER_BYTES:
            raise BadPacket("large fragment too short")
        kind, number, total, offset = _HEADER.unpack_from(data)
        if kind != LARGE_FRAGMENT_ID:
            raise BadPacket("not a large fragment")
        if total <= MAX_CRYPTO_DATA_SIZE_BYTES:
            raise BadPacket(f"large fragment of a {total}-byte packet (not a large one)")
        if offset % FRAGMENT_DATA_BYTES or offset >= total:
            raise BadPacket(f"large fragment offset {offset} of {total} bytes")
        piece = data[FRAGMENT_HEADER_BYTES:]
        if len(piece) != min(FRAGMENT_DATA_BYTES, total - offset):
            raise BadPacket(f"large fragment of {len(piece)} bytes at {offset} of {total}")
        return cls(number, total, offset, piece)


def encode_fragment(number: int, total: int, offset: int, data: bytes | memoryview) -> bytes:
    """The fragment's bytes (``LargeFragment(...).encode()`` without the object)."""
    return _HEADER.pack(LARGE_FRAGMENT_ID, number, total, offset) + data


def split_fragments(number: int, payload: bytes) -> list[bytes]:
    """Every fragment of lossless packet ``number`` (wire form) carrying ``payload``."""
    total = len(payload)
    if not MAX_CRYPTO_DATA_SIZE_BYTES < total <= MAX_LARGE_LOSSLESS_BYTES:
        raise ValueError(f"a {total}-byte packet is not a large one")
    view = memoryview(payload)
    return [
        encode_fragment(number, total, offset, view[offset : offset + FRAGMENT_DATA_BYTES])
        for offset in range(0, total, FRAGMENT_DATA_BYTES)
    ]
