"""Issue 11's NAT-traversal extension between our own peers: its messages.

Two channels, neither understood by c-toxcore (which ignores both, so nothing changes for a
toxcore friend; with one we rely on toxcore's own DHT NAT pings, tox-protocol.md 4.9):

* Over the authenticated friend connection, as a lossless custom packet ``0xB8``
  (``EXTENSION_PACKET_ID``; 0xA2 is tuntox, 0xB0 the VPN control, 0xB4 the Tor onion
  announce): :class:`Endpoints` (our candidate addresses, our NAT behaviour, the probe token
  the friend must echo, and when probing starts) — sent over whatever path already works,
  usually a TCP relay.
* Over UDP, straight to each candidate: :class:`Probe` datagrams, kind ``0xB8`` as well (no
  Tox UDP packet kind uses it; toxcore drops unknown kinds). A probe carries the *receiver's*
  token, which only travelled inside the encrypted friend connection: an off-path attacker
  cannot make us switch a friend's path to an address of its choosing.

Negotiation: neither goes to a friend before its :class:`Hello` arrived, a lossless packet
with id ``0x9E`` (``HELLO_PACKET_ID``), which c-toxcore 0.2.18 drops without telling the
application (ids 16..159 it does not use; ``Messenger.c`` ``handle_custom_lossless_packet``).

Layouts (big endian)::

    Hello:     0x9E | version u8 (1) | flags u8 (0) | [large_lossless u16]
               | (more bytes from later versions ignored)

``large_lossless`` (absent or 0: none) is the largest lossless packet payload the sender
accepts from us, whole or in fragments (issue 8, :mod:`tunnel.wire.large_lossless`); nodes
that predate it stop after ``flags``, and their decoder ignores it.

    Endpoints: 0xB8 | 0x01 | generation u32 | token 8 | nat u8 | start_delay_ms u16
               | count u8 | count * (source u8 | packed IP_Port (tox-protocol.md 2.2))
    Probe:     0xB8 | flags u8 (bit0 ack) | token 8 | sequence u32
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.ip_port import IPPort, encode_packed_ip_port, read_packed_ip_port

EXTENSION_PACKET_ID = 0xB8
HELLO_PACKET_ID = 0x9E
HELLO_VERSION = 1
PROBE_KIND = 0xB8
ENDPOINTS_TYPE = 0x01
TOKEN_BYTES = 8
MAX_CANDIDATES = 16
PROBE_FLAG_ACK = 0x01
PROBE_SIZE_BYTES = 1 + 1 + TOKEN_BYTES + 4


class CandidateSource(enum.IntEnum):
    """Where a candidate address comes from."""

    LOCAL = 0
    """An address of one of our own interfaces (same LAN, or no NAT)."""
    OBSERVED = 1
    """Our public address as seen from outside (DHT / relay / friend)."""
    PREDICTED = 2
    """A guessed next mapping of a symmetric NAT with sequential ports."""


class NatBehaviour(enum.IntEnum):
    """What we know of our own NAT's mapping (RFC 4787)."""

    UNKNOWN = 0
    OPEN = 1
    """No NAT: the observed address is a local one."""
    ENDPOINT_INDEPENDENT = 2
    SYMMETRIC_SEQUENTIAL = 3
    """A new mapping per destination, ports allocated in a predictable sequence."""
    SYMMETRIC_RANDOM = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    source: CandidateSource
    address: IPPort


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Our candidates, NAT behaviour, probe token and probing start (relative, ms)."""

    generation: int
    token: bytes
    nat: NatBehaviour
    start_delay_ms: int
    candidates: tuple[Candidate, ...]

    def encode(self) -> bytes:
        if len(self.token) != TOKEN_BYTES:
            raise ValueError("token must be 8 bytes")
        if len(self.candidates) > MAX_CANDIDATES:
            raise ValueError("too many candidates")
        out = bytearray([EXTENSION_PACKET_ID, ENDPOINTS_TYPE])
        out += self.generation.to_bytes(4, "big") + self.token
        out += bytes([self.nat]) + self.start_delay_ms.to_bytes(2, "big")
        out.append(len(self.candidates))
        for candidate in self.candidates:
            out.append(candidate.source)
            out += encode_packed_ip_port(candidate.address)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Endpoints:
        """Raises only :class:`BadPacket`."""
        r = Reader(data)
        if r.u8() != EXTENSION_PACKET_ID or r.u8() != ENDPOINTS_TYPE:
            raise BadPacket("not an endpoints message")
        generation = r.u32()
        token = r.read(TOKEN_BYTES)
        try:
            nat = NatBehaviour(r.u8())
        except ValueError as exc:
            raise BadPacket("unknown NAT behaviour") from exc
        start_delay_ms = r.u16()
        count = r.u8()
        if count > MAX_CANDIDATES:
            raise BadPacket("too many candidates")
        candidates = []
        for _ in range(count):
            try:
                source = CandidateSource(r.u8())
            except ValueError as exc:
                raise BadPacket("unknown candidate source") from exc
            address, tcp = read_packed_ip_port(r)
            if tcp:
                raise BadPacket("TCP candidate")
            candidates.append(Candidate(source, address))
        r.expect_end()
        return cls(generation, token, nat, start_delay_ms, tuple(candidates))


@dataclass(frozen=True, slots=True)
class Probe:
    """A UDP probe (or its ack) carrying the receiver's token."""

    token: bytes
    sequence: int
    ack: bool = False

    def encode(self) -> bytes:
        if len(self.token) != TOKEN_BYTES:
            raise ValueError("token must be 8 bytes")
        flags = PROBE_FLAG_ACK if self.ack else 0
        return bytes([PROBE_KIND, flags]) + self.token + self.sequence.to_bytes(4, "big")

    @classmethod
    def decode(cls, data: bytes) -> Probe:
        """Raises only :class:`BadPacket`."""
        r = Reader(data)
        if r.u8() != PROBE_KIND:
            raise BadPacket("not a probe")
        flags = r.u8()
        if flags & ~PROBE_FLAG_ACK:
            raise BadPacket("unknown probe flags")
        token = r.read(TOKEN_BYTES)
        sequence = r.u32()
        r.expect_end()
        return cls(token, sequence, bool(flags & PROBE_FLAG_ACK))


@dataclass(frozen=True, slots=True)
class Hello:
    """The extension offer/answer over the friend connection (version 1: direct paths)."""

    version: int = HELLO_VERSION
    flags: int = 0
    large_lossless: int = 0
    """The largest lossless payload we accept (0: toxcore's 1373, nothing larger)."""

    def encode(self) -> bytes:
        head = bytes([HELLO_PACKET_ID, self.version, self.flags])
        if not self.large_lossless:
            return head
        return head + self.large_lossless.to_bytes(2, "big")

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        """Raises only :class:`BadPacket` (later versions' extra bytes are ignored)."""
        r = Reader(data)
        if r.u8() != HELLO_PACKET_ID:
            raise BadPacket("not a hello")
        version = r.u8()
        flags = r.u8()
        if version < 1:
            raise BadPacket("hello version 0")
        large = r.u16() if r.remaining() >= 2 else 0
        return cls(version, flags, large)
