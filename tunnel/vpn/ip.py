"""IPv4/IPv6 header checks for the VPN data path (RFC 791 section 3.1, RFC 8200 section 3).

Hot-path code: every packet read from the TUN device or received from a member passes through
:func:`check_packet` once, so nothing here builds objects per packet. Functions take any
buffer (``bytes``, ``bytearray``, ``memoryview`` of a preallocated receive buffer) plus the
number of valid bytes in it, and return plain ints. Addresses come back as ``bytes`` (4 or 16)
because those are the routing-table keys; :func:`dst_address` and :func:`src_address` only
slice, they never validate, so call them after :func:`check_packet` said the packet is fine.

:func:`check_packet` returns the IP version (4 or 6) or a negative :class:`IpError` code:

* IPv4: at least 20 bytes, version 4, IHL >= 5, header inside the packet, ``total length``
  equal to the bytes we hold (no trailing garbage, no truncation); fragments are allowed.
* IPv6: at least 40 bytes, version 6, ``payload length + 40`` equal to the bytes we hold
  (payload length 0, the jumbogram marker, is refused).

The IPv4 header checksum is not verified here: the kernel verifies it when we write a packet
into the TUN device and drops bad ones, and checking it in Python would double the per-packet
cost. :func:`fragment_ipv4` splits an IPv4 packet without DF for a member with a smaller limit
(RFC 791 section 3.2, "Fragmentation and reassembly").
"""

from __future__ import annotations

import enum
import struct

IPV4_HEADER_MIN_BYTES = 20
IPV4_HEADER_MAX_BYTES = 60
IPV6_HEADER_BYTES = 40
IPV4_MIN_MTU_BYTES = 68
"""RFC 791: every IPv4 link carries at least 68-byte packets."""
IPV6_MIN_MTU_BYTES = 1280
"""RFC 8200 section 5: every IPv6 link carries at least 1280-byte packets."""
MAX_IP_PACKET_BYTES = 65535

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
IPV4_FLAG_DF = 0x4000
IPV4_FLAG_MF = 0x2000
IPV4_OFFSET_MASK = 0x1FFF

Buffer = bytes | bytearray | memoryview


class IpError(enum.IntEnum):
    """Why a packet was refused (negative, so a version and an error share one int)."""

    TOO_SHORT = -1
    BAD_VERSION = -2
    BAD_HEADER_LENGTH = -3
    LENGTH_MISMATCH = -4
    TOO_LONG = -5


def check_packet(packet: Buffer, length: int) -> int:
    """The IP version (4 or 6) of ``packet[:length]``, or a negative :class:`IpError`."""
    if length < 1:
        return IpError.TOO_SHORT
    if length > MAX_IP_PACKET_BYTES:
        return IpError.TOO_LONG
    version = packet[0] >> 4
    if version == 4:
        if length < IPV4_HEADER_MIN_BYTES:
            return IpError.TOO_SHORT
        header_bytes = (packet[0] & 0x0F) * 4
        if header_bytes < IPV4_HEADER_MIN_BYTES or header_bytes > length:
            return IpError.BAD_HEADER_LENGTH
        if (packet[2] << 8 | packet[3]) != length:
            return IpError.LENGTH_MISMATCH
        return 4
    if version == 6:
        if length < IPV6_HEADER_BYTES:
            return IpError.TOO_SHORT
        if (packet[4] << 8 | packet[5]) + IPV6_HEADER_BYTES != length:
            return IpError.LENGTH_MISMATCH
        return 6
    return IpError.BAD_VERSION


def src_address(packet: Buffer, version: int) -> bytes:
    """Source address bytes (4 or 16) of a packet that passed :func:`check_packet`."""
    if version == 4:
        return bytes(packet[12:16])
    return bytes(packet[8:24])


def dst_address(packet: Buffer, version: int) -> bytes:
    """Destination address bytes (4 or 16) of a packet that passed :func:`check_packet`."""
    if version == 4:
        return bytes(packet[16:20])
    return bytes(packet[24:40])


def ipv4_dont_fragment(packet: Buffer) -> bool:
    """The DF flag of a checked IPv4 packet."""
    return bool(packet[6] & 0x40)


def ipv4_header_bytes(packet: Buffer) -> int:
    """IHL in bytes of a checked IPv4 packet."""
    return (packet[0] & 0x0F) * 4


def ipv4_protocol(packet: Buffer) -> int:
    """The protocol field of a checked IPv4 packet."""
    return packet[9]


def is_multicast(address: bytes) -> bool:
    """224.0.0.0/4, the IPv4 limited broadcast, or ff00::/8."""
    if len(address) == 4:
        return address[0] >= 224
    return address[0] == 0xFF


def ones_complement_sum(data: Buffer, start: int = 0) -> int:
    """The 16-bit one's-complement sum (RFC 1071) of ``data`` added to ``start``."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    words: tuple[int, ...] = struct.unpack(f"!{len(data) // 2}H", data)
    total = start + sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: Buffer, start: int = 0) -> int:
    """RFC 1071 checksum of ``data``: the complement of the one's-complement sum."""
    return ~ones_complement_sum(data, start) & 0xFFFF


def ipv4_header_checksum_ok(packet: Buffer) -> bool:
    """True when the IPv4 header checksum of a checked packet verifies."""
    return ones_complement_sum(packet[: ipv4_header_bytes(packet)]) == 0xFFFF


# [version/IHL u8][TOS u8][total length u16][id u16][flags/fragment offset u16][TTL u8]
# [protocol u8][checksum u16][source 4][destination 4]
IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")


def fragment_ipv4(packet: Buffer, mtu: int) -> list[bytes]:
    """Split a checked IPv4 packet into fragments of at most ``mtu`` bytes (RFC 791 3.2).

    Options are copied into every fragment (only options with the "copied" bit should be,
    but tunnel traffic almost never carries options, so this keeps the header arithmetic
    trivial and stays within the RFC's "may" latitude for routers). The caller checks DF.

    Raises:
        ValueError: ``mtu`` leaves no room for 8 bytes of payload after the header.
    """
    header_bytes = ipv4_header_bytes(packet)
    total = packet[2] << 8 | packet[3]
    chunk = (mtu - header_bytes) & ~7
    if chunk < 8:
        raise ValueError(f"mtu {mtu} too small for a {header_bytes}-byte header")
    header = bytearray(packet[:header_bytes])
    flags_offset = header[6] << 8 | header[7]
    base_offset = flags_offset & IPV4_OFFSET_MASK
    original_mf = flags_offset & IPV4_FLAG_MF
    fragments: list[bytes] = []
    pos = header_bytes
    while pos < total:
        size = min(chunk, total - pos)
        last = pos + size >= total
        mf = original_mf if last else IPV4_FLAG_MF
        offset = base_offset + (pos - header_bytes) // 8
        struct.pack_into("!H", header, 2, header_bytes + size)
        struct.pack_into("!H", header, 6, (flags_offset & IPV4_FLAG_DF) | mf | offset)
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, internet_checksum(header))
        fragments.append(bytes(header) + bytes(packet[pos : pos + size]))
        pos += size
    return fragments
