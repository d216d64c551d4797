"""Onion address exchange between friends (issue 10 part 2): a lossless custom packet, pure.

Friends that publish an onion service tell each other its address over their existing
(authenticated, encrypted) friend connection, so a later Tor-only start can reach them by
.onion without the DHT. Layout, in a toxcore lossless custom packet (ids 160-191; tuntox uses
0xA2, the VPN 0xB0)::

    [0xB4][type u8][body]

    type 1 ONION_ADDRESS  version u8 (= 1) | ed25519 public key 32 | virtual port u16 BE |
                          flags u8 (bit 0: the sender runs Tor-only, no UDP/DHT)
    type 2 ONION_WITHDRAW (empty body): the sender no longer publishes an onion service
    type 3 ONION_QUERY    (empty body): please send your ONION_ADDRESS (or ONION_WITHDRAW)

The public key (not the 56-character text) is sent; the address follows from it
(rend-spec-v3 section 6). Unknown types and versions are :class:`~tunnel.errors.BadPacket`
(dropped and counted by the receiver), so the format can grow.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Self

from tunnel.errors import BadPacket
from tunnel.tor.protocol import ED25519_PUBLIC_KEY_SIZE, onion_service_id, split_onion_address
from tunnel.wire._reader import Reader

TOR_ONION_PACKET_ID = 0xB4
"""Lossless custom packet id of the onion address exchange (180; custom lossless 160-191)."""
ONION_ADDRESS = 1
ONION_WITHDRAW = 2
ONION_QUERY = 3
ONION_ANNOUNCE_VERSION = 1
FLAG_TOR_ONLY = 0x01
_KNOWN_FLAGS = FLAG_TOR_ONLY

# version u8 | public key 32 | virtual port u16 | flags u8
_ADDRESS_BODY = struct.Struct(">B32sHB")


@dataclass(frozen=True, slots=True)
class OnionAddressAnnouncement:
    """ "My onion service is ``<public_key>.onion:<virtual_port>``"."""

    public_key: bytes
    virtual_port: int
    tor_only: bool = False

    def __post_init__(self) -> None:
        if len(self.public_key) != ED25519_PUBLIC_KEY_SIZE:
            raise ValueError("onion public key must be 32 bytes")
        if not 1 <= self.virtual_port <= 65535:
            raise ValueError("virtual port must be 1-65535")

    @classmethod
    def from_address(cls, address: str, virtual_port: int, *, tor_only: bool = False) -> Self:
        """From ``"<56 chars>.onion"``.

        Raises:
            ValueError: not a valid v3 onion address.
        """
        service_id = split_onion_address(address)
        if service_id is None:
            raise ValueError(f"not a v3 onion address: {address!r}")
        public_key = base64.b32decode(service_id.upper())[:32]
        return cls(public_key, virtual_port, tor_only)

    @property
    def address(self) -> str:
        """``<service id>.onion``."""
        return onion_service_id(self.public_key) + ".onion"

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        flags = FLAG_TOR_ONLY if self.tor_only else 0
        body = _ADDRESS_BODY.pack(ONION_ANNOUNCE_VERSION, self.public_key, self.virtual_port, flags)
        return bytes([TOR_ONION_PACKET_ID, ONION_ADDRESS]) + body


@dataclass(frozen=True, slots=True)
class OnionWithdraw:
    """ "I no longer publish an onion service"."""

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        return bytes([TOR_ONION_PACKET_ID, ONION_WITHDRAW])


@dataclass(frozen=True, slots=True)
class OnionQuery:
    """ "Tell me your onion address"."""

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        return bytes([TOR_ONION_PACKET_ID, ONION_QUERY])


OnionMessage = OnionAddressAnnouncement | OnionWithdraw | OnionQuery


def decode_onion_message_untrusted(data: bytes) -> OnionMessage:
    """Parse a custom packet starting with :data:`TOR_ONION_PACKET_ID`.

    Raises:
        BadPacket: wrong id, unknown type/version/flags, bad port or wrong length.
    """
    r = Reader(data)
    if r.u8() != TOR_ONION_PACKET_ID:
        raise BadPacket("not an onion address packet")
    kind = r.u8()
    if kind == ONION_ADDRESS:
        version = r.u8()
        if version != ONION_ANNOUNCE_VERSION:
            raise BadPacket(f"unknown onion announcement version {version}")
        public_key = r.read(ED25519_PUBLIC_KEY_SIZE)
        port = r.u16()
        flags = r.u8()
        r.expect_end()
        if port == 0:
            raise BadPacket("onion virtual port 0")
        if flags & ~_KNOWN_FLAGS:
            raise BadPacket(f"unknown onion announcement flags 0x{flags:02x}")
        return OnionAddressAnnouncement(public_key, port, bool(flags & FLAG_TOR_ONLY))
    if kind == ONION_WITHDRAW:
        r.expect_end()
        return OnionWithdraw()
    if kind == ONION_QUERY:
        r.expect_end()
        return OnionQuery()
    raise BadPacket(f"unknown onion message type {kind}")
