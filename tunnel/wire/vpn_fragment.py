"""VPN packet fragments (issue 9, large IP packets; :mod:`tunnel.wire.vpn` has the rest).

Two of our own members that agreed on IP packets larger than toxcore's 1372 bytes send one
that is larger than the route's current cap (relayed over TCP, or a direct path not proven
by a probe yet, :mod:`tunnel.vpn.pmtu`) as **fragments** inside toxcore-sized lossy custom
packets with id 0xE8 (232), reassembled by the receiver (:mod:`tunnel.vpn.fragments`)::

    [0xE8][packet number u32][index u8][count u8][data]         at most 1373 bytes in all

``data`` is bytes ``index * 1366 ..`` of the IP packet: every fragment but the last carries
exactly ``FRAGMENT_DATA_BYTES`` (1366), the last one 1..1366, so the fragments of one packet
never overlap and the receiver knows each one's place. ``count`` is 2..48 (48 * 1366 bytes
cover the largest IP packet, 65535 bytes), ``index`` < ``count``. The packet number is the
sender's counter (u32, wraps), distinct for every split packet to one member within the
receiver's reassembly timeout. Integers are big-endian; ``encode(decode(b)) == b``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tunnel.errors import BadPacket
from tunnel.wire.vpn import MAX_CUSTOM_PACKET_SIZE_BYTES

VPN_FRAGMENT_PACKET_ID = 0xE8
"""Lossy custom packet id of VPN packet fragments (232; custom lossy range 200-254)."""
# [id u8][packet number u32][index u8][count u8]
FRAGMENT_HEADER = struct.Struct(">BIBB")
FRAGMENT_HEADER_BYTES = FRAGMENT_HEADER.size  # 7
FRAGMENT_DATA_BYTES = MAX_CUSTOM_PACKET_SIZE_BYTES - FRAGMENT_HEADER_BYTES  # 1366
MAX_IP_PACKET_BYTES_SPLIT = 0xFFFF
MAX_FRAGMENTS = -(-MAX_IP_PACKET_BYTES_SPLIT // FRAGMENT_DATA_BYTES)  # 48
MIN_FRAGMENTS = 2
PACKET_NUMBER_MOD = 1 << 32


def fragment_count(length: int) -> int:
    """How many fragments a ``length``-byte IP packet takes."""
    return -(-length // FRAGMENT_DATA_BYTES)


@dataclass(frozen=True, slots=True)
class Fragment:
    """One fragment of a split IP packet (see module docstring)."""

    number: int
    index: int
    count: int
    data: bytes | memoryview

    def __post_init__(self) -> None:
        if not 0 <= self.number < PACKET_NUMBER_MOD:
            raise ValueError("packet number must fit in u32")
        if not MIN_FRAGMENTS <= self.count <= MAX_FRAGMENTS:
            raise ValueError(f"fragment count must be {MIN_FRAGMENTS}..{MAX_FRAGMENTS}")
        if not 0 <= self.index < self.count:
            raise ValueError("fragment index must be below the count")
        size = len(self.data)
        if self.index < self.count - 1:
            if size != FRAGMENT_DATA_BYTES:
                raise ValueError(f"fragments but the last carry {FRAGMENT_DATA_BYTES} bytes")
        elif not 1 <= size <= FRAGMENT_DATA_BYTES:
            raise ValueError(f"the last fragment carries 1..{FRAGMENT_DATA_BYTES} bytes")

    def encode(self) -> bytes:
        """The whole lossy packet, id byte included."""
        header = FRAGMENT_HEADER.pack(VPN_FRAGMENT_PACKET_ID, self.number, self.index, self.count)
        return header + self.data

    @property
    def offset(self) -> int:
        """Where ``data`` starts in the IP packet."""
        return self.index * FRAGMENT_DATA_BYTES


def split_packet(number: int, packet: bytes | bytearray | memoryview) -> list[bytes]:
    """The encoded fragments of ``packet`` (2..48 of them; the hot path: no Fragment objects).

    Raises:
        ValueError: the packet fits one lossy packet, or is larger than 65535 bytes.
    """
    view = memoryview(packet)
    length = view.nbytes
    count = fragment_count(length)
    if not MIN_FRAGMENTS <= count <= MAX_FRAGMENTS or length > MAX_IP_PACKET_BYTES_SPLIT:
        raise ValueError(f"cannot split a {length}-byte packet")
    number %= PACKET_NUMBER_MOD
    pack = FRAGMENT_HEADER.pack
    return [
        pack(VPN_FRAGMENT_PACKET_ID, number, index, count)
        + view[index * FRAGMENT_DATA_BYTES : (index + 1) * FRAGMENT_DATA_BYTES]
        for index in range(count)
    ]


def parse_fragment_untrusted(data: bytes | memoryview) -> tuple[int, int, int, memoryview]:
    """``(number, index, count, data view)`` of a fragment from a member (whole lossy packet,
    id byte included): :func:`decode_fragment_untrusted` without the object, for the hot path.

    Raises:
        BadPacket: wrong id, truncated, count outside 2..48, index >= count, a fragment
            but the last not exactly 1366 bytes, an empty or longer last one.
    """
    view = memoryview(data)
    if view.nbytes < FRAGMENT_HEADER_BYTES + 1:
        raise BadPacket("fragment truncated")
    packet_id, number, index, count = FRAGMENT_HEADER.unpack_from(view)
    if packet_id != VPN_FRAGMENT_PACKET_ID:
        raise BadPacket("not a VPN fragment")
    if not MIN_FRAGMENTS <= count <= MAX_FRAGMENTS:
        raise BadPacket(f"fragment count {count} outside {MIN_FRAGMENTS}..{MAX_FRAGMENTS}")
    if index >= count:
        raise BadPacket(f"fragment index {index} >= count {count}")
    body = view[FRAGMENT_HEADER_BYTES:]
    if index < count - 1 and body.nbytes != FRAGMENT_DATA_BYTES:
        raise BadPacket(f"fragment {index} of {count} carries {body.nbytes} bytes")
    if body.nbytes > FRAGMENT_DATA_BYTES:
        raise BadPacket(f"last fragment carries {body.nbytes} bytes")
    return number, index, count, body


def decode_fragment_untrusted(data: bytes | memoryview) -> Fragment:
    """A fragment from a member (whole lossy packet, id byte included); ``data`` is a view.

    Raises:
        BadPacket: as :func:`parse_fragment_untrusted`.
    """
    return Fragment(*parse_fragment_untrusted(data))
