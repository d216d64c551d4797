"""Packed node ("node info"): a packed IP/port followed by a 32-byte public key.

tox-protocol.md 3.3.1. 39 bytes for IPv4, 51 for IPv6. Lists are plain concatenations; a single
bad entry invalidates the whole list (toxcore rejects the whole packet). Contexts that must not
carry TCP relays (DHT nodes responses, onion announce responses) pass ``allow_tcp=False``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tunnel.crypto.keys import PUBLIC_KEY_SIZE
from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.ip_port import IPPort, encode_packed_ip_port, read_packed_ip_port

PACKED_NODE_IP4_SIZE = 39
PACKED_NODE_IP6_SIZE = 51


@dataclass(frozen=True, slots=True)
class PackedNode:
    """A node's address and public key; ``tcp`` marks a TCP relay (ip_type 130/138)."""

    ip_port: IPPort
    public_key: bytes
    tcp: bool = False

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("public key must be 32 bytes")

    def encode(self) -> bytes:
        """The packed encoding."""
        return encode_packed_ip_port(self.ip_port, tcp=self.tcp) + self.public_key

    @classmethod
    def read(cls, reader: Reader, *, allow_tcp: bool = True) -> PackedNode:
        """Read one packed node from ``reader``.

        Raises:
            BadPacket: truncated, unknown ip_type, or a TCP node where none is allowed.
        """
        ip_port, tcp = read_packed_ip_port(reader)
        if tcp and not allow_tcp:
            raise BadPacket("TCP node where only UDP nodes are allowed")
        return cls(ip_port, reader.read(PUBLIC_KEY_SIZE), tcp)

    @classmethod
    def decode(cls, data: bytes, *, allow_tcp: bool = True) -> PackedNode:
        """Decode exactly one packed node.

        Raises:
            BadPacket: as :meth:`read`, or trailing bytes.
        """
        reader = Reader(data)
        node = cls.read(reader, allow_tcp=allow_tcp)
        reader.expect_end()
        return node


def encode_nodes(nodes: Iterable[PackedNode]) -> bytes:
    """Concatenate packed nodes."""
    return b"".join(node.encode() for node in nodes)


def read_nodes(reader: Reader, count: int, *, allow_tcp: bool = True) -> list[PackedNode]:
    """Read exactly ``count`` packed nodes.

    Raises:
        BadPacket: any entry malformed.
    """
    return [PackedNode.read(reader, allow_tcp=allow_tcp) for _ in range(count)]


def decode_nodes_untrusted(
    data: bytes, *, allow_tcp: bool = True, max_nodes: int | None = None
) -> list[PackedNode]:
    """Decode a concatenation of packed nodes that fills ``data`` exactly.

    Raises:
        BadPacket: any entry malformed, leftover bytes, or more than ``max_nodes`` entries.
    """
    reader = Reader(data)
    nodes: list[PackedNode] = []
    while not reader.at_end():
        if max_nodes is not None and len(nodes) >= max_nodes:
            raise BadPacket(f"more than {max_nodes} packed nodes")
        nodes.append(PackedNode.read(reader, allow_tcp=allow_tcp))
    return nodes
