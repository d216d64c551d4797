"""ICMP "too big" replies written back into the TUN device (path MTU discovery).

When a packet read from the TUN device is larger than the member it goes to can take, the
VPN answers the local kernel the way a router on the path would:

* IPv4 with DF set: ICMP type 3 code 4 "fragmentation needed and DF set" with the next-hop
  MTU (RFC 792, RFC 1191 section 4), quoting the original IP header plus as much of the
  payload as keeps the reply within 576 bytes (RFC 1812 section 4.3.2.3);
* IPv6: ICMPv6 type 2 "Packet Too Big" with the MTU (RFC 4443 section 3.2), quoting as much
  of the original packet as keeps the reply within the IPv6 minimum MTU of 1280 bytes.

The reply's source is the original destination (so it is never a local address, which the
kernel would drop as a martian) and its destination the original source. No reply is built
for ICMP error messages themselves (RFC 1122 3.2.2 / RFC 4443 2.4 (e)), nor for non-initial
IPv4 fragments; those return ``None``.
"""

from __future__ import annotations

import struct

from tunnel.vpn.ip import (
    IPV4_HEADER,
    IPV4_MIN_MTU_BYTES,
    IPV6_HEADER_BYTES,
    IPV6_MIN_MTU_BYTES,
    PROTO_ICMP,
    PROTO_ICMPV6,
    Buffer,
    internet_checksum,
    ipv4_header_bytes,
    ones_complement_sum,
)

ICMPV4_DEST_UNREACHABLE = 3
ICMPV4_FRAG_NEEDED_CODE = 4
ICMPV6_PACKET_TOO_BIG = 2
ICMP_HEADER_BYTES = 8
ICMPV4_REPLY_MAX_BYTES = 576
REPLY_TTL = 64
_ICMPV4_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
_ICMPV6_INFO_MIN_TYPE = 128


def frag_needed_v4(packet: Buffer, length: int, mtu: int) -> bytes | None:
    """ICMP fragmentation-needed for a checked IPv4 packet, or None when none is due."""
    header_bytes = ipv4_header_bytes(packet)
    if (packet[6] << 8 | packet[7]) & 0x1FFF:
        return None  # not the first fragment
    if packet[9] == PROTO_ICMP and (
        header_bytes >= length or packet[header_bytes] in _ICMPV4_ERROR_TYPES
    ):
        return None
    mtu = max(IPV4_MIN_MTU_BYTES, min(mtu, 0xFFFF))
    quoted = bytes(packet[: min(length, ICMPV4_REPLY_MAX_BYTES - 20 - ICMP_HEADER_BYTES)])
    icmp = bytearray(
        struct.pack("!BBHHH", ICMPV4_DEST_UNREACHABLE, ICMPV4_FRAG_NEEDED_CODE, 0, 0, mtu)
    )
    icmp += quoted
    struct.pack_into("!H", icmp, 2, internet_checksum(icmp))
    total = 20 + len(icmp)
    src = bytes(packet[16:20])
    dst = bytes(packet[12:16])
    header = bytearray(IPV4_HEADER.pack(0x45, 0, total, 0, 0, REPLY_TTL, PROTO_ICMP, 0, src, dst))
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header + icmp)


def packet_too_big_v6(packet: Buffer, length: int, mtu: int) -> bytes | None:
    """ICMPv6 Packet Too Big for a checked IPv6 packet, or None when none is due."""
    if packet[6] == PROTO_ICMPV6 and (
        length <= IPV6_HEADER_BYTES or packet[IPV6_HEADER_BYTES] < _ICMPV6_INFO_MIN_TYPE
    ):
        return None
    mtu = max(IPV6_MIN_MTU_BYTES, mtu)
    quoted = bytes(
        packet[: min(length, IPV6_MIN_MTU_BYTES - IPV6_HEADER_BYTES - ICMP_HEADER_BYTES)]
    )
    src = bytes(packet[24:40])
    dst = bytes(packet[8:24])
    icmp = bytearray(struct.pack("!BBHI", ICMPV6_PACKET_TOO_BIG, 0, 0, mtu)) + quoted
    # Pseudo-header (RFC 8200 section 8.1): src, dst, upper-layer length u32, 3 zero bytes, 58.
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), PROTO_ICMPV6)
    struct.pack_into("!H", icmp, 2, internet_checksum(icmp, ones_complement_sum(pseudo)))
    header = struct.pack("!IHBB16s16s", 0x60000000, len(icmp), PROTO_ICMPV6, REPLY_TTL, src, dst)
    return header + bytes(icmp)


def too_big_reply(packet: Buffer, length: int, version: int, mtu: int) -> bytes | None:
    """The right "too big" reply for a checked packet of ``version`` (4 or 6)."""
    if version == 4:
        return frag_needed_v4(packet, length, mtu)
    return packet_too_big_v6(packet, length, mtu)
