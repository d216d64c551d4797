"""Addresses on the wire: the variable packed IP/port and the fixed 19-byte onion IP_Port.

tox-protocol.md 3.3. Two different encodings exist and must not be mixed up:

* packed IP/port (DHT nodes responses, onion announce responses, DHT-PK announcements, share
  relays, save data)::

      [ip_type: 1][ip: 4 | 16][port: 2 BE]
      ip_type: 2 UDP/IPv4, 10 UDP/IPv6, 130 TCP/IPv4, 138 TCP/IPv6

* onion IP_Port (inside onion layers only), always 19 bytes::

      [family: 1][address: 16][port: 2 BE]   family 2: 4 IPv4 bytes + 12 zero bytes; 10: IPv6

IPv6 addresses are the 16 raw network-order bytes (c-toxcore copies them; it does not swap
hextets). IPv4-mapped IPv6 addresses are normalised to IPv4 (tox-protocol.md 3.1).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader

IP_TYPE_UDP4 = 2
IP_TYPE_UDP6 = 10
IP_TYPE_TCP4 = 130
IP_TYPE_TCP6 = 138
PACKED_IP_PORT_IP4_SIZE = 7
PACKED_IP_PORT_IP6_SIZE = 19
ONION_IP_PORT_SIZE = 19
_ONION_IP4_PADDING = bytes(12)

IPAddress = IPv4Address | IPv6Address
Addr = tuple[str, int]
"""A transport address as sockets give it: ``(host, port)``."""


def _normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True, slots=True)
class IPPort:
    """An IP address and a port (a UDP or TCP endpoint)."""

    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port out of range: {self.port}")
        normal = _normalise(self.ip)
        if normal is not self.ip:
            object.__setattr__(self, "ip", normal)

    @classmethod
    def parse(cls, host: str, port: int) -> IPPort:
        """From a textual IP address (``ValueError`` if it is not one)."""
        return cls(ipaddress.ip_address(host), port)

    @classmethod
    def from_addr(cls, addr: Addr) -> IPPort:
        """From a socket-style ``(host, port)`` tuple (extra tuple items are ignored)."""
        return cls.parse(addr[0], addr[1])

    def to_addr(self) -> Addr:
        """A socket-style ``(host, port)`` tuple."""
        return (str(self.ip), self.port)

    @property
    def is_ipv6(self) -> bool:
        """True for an IPv6 address."""
        return isinstance(self.ip, IPv6Address)

    def __str__(self) -> str:
        if self.is_ipv6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


def encode_packed_ip_port(ip_port: IPPort, *, tcp: bool = False) -> bytes:
    """The packed IP/port encoding (7 bytes for IPv4, 19 for IPv6)."""
    if ip_port.is_ipv6:
        ip_type = IP_TYPE_TCP6 if tcp else IP_TYPE_UDP6
    else:
        ip_type = IP_TYPE_TCP4 if tcp else IP_TYPE_UDP4
    return bytes((ip_type,)) + ip_port.ip.packed + ip_port.port.to_bytes(2, "big")


def read_packed_ip_port(reader: Reader) -> tuple[IPPort, bool]:
    """Read one packed IP/port; returns ``(ip_port, is_tcp)``.

    Raises:
        BadPacket: truncated or an unknown ip_type.
    """
    ip_type = reader.u8()
    if ip_type in (IP_TYPE_UDP4, IP_TYPE_TCP4):
        ip: IPAddress = IPv4Address(reader.read(4))
    elif ip_type in (IP_TYPE_UDP6, IP_TYPE_TCP6):
        ip = IPv6Address(reader.read(16))
    else:
        raise BadPacket(f"unknown ip_type {ip_type}")
    port = reader.u16()
    return IPPort(ip, port), ip_type in (IP_TYPE_TCP4, IP_TYPE_TCP6)


def encode_onion_ip_port(ip_port: IPPort) -> bytes:
    """The fixed 19-byte onion IP_Port."""
    if ip_port.is_ipv6:
        return bytes((IP_TYPE_UDP6,)) + ip_port.ip.packed + ip_port.port.to_bytes(2, "big")
    return (
        bytes((IP_TYPE_UDP4,))
        + ip_port.ip.packed
        + _ONION_IP4_PADDING
        + ip_port.port.to_bytes(2, "big")
    )


def decode_onion_ip_port_untrusted(data: bytes) -> IPPort:
    """Parse a 19-byte onion IP_Port whose family must be 2 or 10.

    The 12 padding bytes after an IPv4 address are ignored, as toxcore ignores them.

    Raises:
        BadPacket: wrong length or family.
    """
    if len(data) != ONION_IP_PORT_SIZE:
        raise BadPacket(f"onion IP_Port must be {ONION_IP_PORT_SIZE} bytes, got {len(data)}")
    family = data[0]
    port = int.from_bytes(data[17:19], "big")
    if family == IP_TYPE_UDP4:
        return IPPort(IPv4Address(data[1:5]), port)
    if family == IP_TYPE_UDP6:
        return IPPort(IPv6Address(data[1:17]), port)
    raise BadPacket(f"onion IP_Port family {family} is not 2 or 10")


def ip_is_local(ip: IPAddress) -> bool:
    """toxcore ``ip_is_local``: 127.0.0.0/8 or ::1."""
    ip = _normalise(ip)
    if isinstance(ip, IPv4Address):
        return ip.packed[0] == 127
    return ip == IPv6Address("::1")


def ip_is_lan(ip: IPAddress) -> bool:
    """toxcore ``ip_is_lan`` (tox-protocol.md 3.4)."""
    ip = _normalise(ip)
    if ip_is_local(ip):
        return True
    if isinstance(ip, IPv4Address):
        a, b, c, _ = ip.packed
        return (
            a == 10
            or (a == 172 and 16 <= b <= 31)
            or (a == 192 and b == 168)
            or (a == 169 and b == 254 and 0 < c < 255)
            or (a == 100 and (b & 0xC0) == 64)
        )
    raw = ip.packed
    if raw[0] == 0xFE and (raw[1] & 0xC0) == 0x80:
        return True
    return raw[0] == 0xFF and raw[1] < 3 and raw[15] == 1
