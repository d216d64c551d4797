"""VPN wire formats (issue 9): IP data packets, the mesh membership messages, path MTU probes.

Data: every IP packet travels alone in one toxcore **lossy** custom packet (ids 200-254;
tuntox uses 226 for UDP, toxvpn 200 with a 4-byte ``tun_pi`` in front, so we take 228)::

    [0xE4][IPv4 or IPv6 packet, <= 1372 bytes (1373 = MAX_CRYPTO_DATA_SIZE incl. the id)]

Control: membership messages travel in toxcore **lossless** custom packets (ids 160-191;
tuntox uses 162) with id 0xB0 (176) and a type byte::

    [0xB0][type u8][body]

    type 1 HELLO    version u8 (1) | network_id 8 | proof 32 | max_ip_packet u16 |
                    record 63 | ipv4 pool: prefix_len u8 (255 = none) + address 4 |
                    ipv6 prefix: prefix_len u8 (255 = none) + address 16 |
                    name_len u8 (<= 63) + name UTF-8
    type 2 MEMBERS  count u8 (1..21) | record 63 * count
    type 3 REVOKE   target public key 32 | issuer public key 32 | proof 32

    record (63)     Tox ID 38 (public key, nospam, checksum) | serial u32 |
                    flags u8 (bit 0: IPv4 pinned, bit 1: IPv6 pinned, others 0) |
                    pinned IPv4 4 | pinned IPv6 16 (all zero when not pinned)

Path MTU probes (between two of our own members that agreed on IP packets larger than 1372
bytes, :mod:`tunnel.vpn.pmtu`) travel in **lossy** custom packets with id 0xE6 (230), so they
take the same path, and are exactly as large, as the data packets they stand for::

    [0xE6][type 1 PROBE][nonce u32][size u16][zero padding]   total size + 1 bytes: as large
                                                              as [0xE4][size-byte IP packet]
    [0xE6][type 2 ACK][nonce u32][size u16]                   8 bytes: the probe's nonce, size

A PROBE's ``size`` is 7..65535 and must equal its length minus one; its padding must be zero.

An IP packet larger than a member's current path cap (relayed, or not probed yet) but within
the agreed limit travels as toxcore-sized fragments with lossy id 0xE8 (232),
:mod:`tunnel.wire.vpn_fragment`.

A HELLO with neither pool comes from a joining member that has not learned the network's
parameters yet. Absent pools and unpinned addresses must be all-zero bytes and unknown flag
bits zero, so ``encode(decode(b)) == b`` for every accepted ``b``. Integers are big-endian.

Friend-request message (the text a joining member puts in its Tox friend request; readable
in an ordinary Tox client, at most 1016 bytes)::

    "tunnel-vpn/1 <network_id: 16 hex> <proof: 64 hex>"

The proofs and the network id are computed in :mod:`tunnel.vpn.membership`.
"""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass

from tunnel.errors import BadPacket
from tunnel.toxid import TOX_ID_SIZE, ToxId, ToxIdError
from tunnel.wire._reader import Reader

VPN_DATA_PACKET_ID = 0xE4
"""Lossy custom packet id of IP data packets (228; custom lossy range 200-254)."""
VPN_CONTROL_PACKET_ID = 0xB0
"""Lossless custom packet id of membership messages (176; custom lossless range 160-191)."""
VPN_PROBE_PACKET_ID = 0xE6
"""Lossy custom packet id of path MTU probes and their acks (230)."""
MAX_CUSTOM_PACKET_SIZE_BYTES = 1373
MAX_IP_PACKET_BYTES = MAX_CUSTOM_PACKET_SIZE_BYTES - 1  # 1372

HELLO = 1
MEMBERS = 2
REVOKE = 3
PROTOCOL_VERSION = 1
NETWORK_ID_SIZE_BYTES = 8
PROOF_SIZE_BYTES = 32
KEY_SIZE_BYTES = 32
RECORD_SIZE_BYTES = TOX_ID_SIZE + 4 + 1 + 4 + 16  # 63
MAX_RECORDS_PER_PACKET = (MAX_CUSTOM_PACKET_SIZE_BYTES - 3) // RECORD_SIZE_BYTES  # 21
MAX_NAME_BYTES = 63
NO_PREFIX = 255
FLAG_IPV4_PINNED = 0x01
FLAG_IPV6_PINNED = 0x02
_KNOWN_FLAGS = FLAG_IPV4_PINNED | FLAG_IPV6_PINNED
_ZERO4 = bytes(4)
_ZERO16 = bytes(16)

# [serial: u32][flags: u8][ipv4: 4][ipv6: 16] after the 38-byte Tox ID
_RECORD_TAIL = struct.Struct(">IB4s16s")

JOIN_REQUEST_PREFIX = "tunnel-vpn/1"
_JOIN_RE = re.compile(r"tunnel-vpn/1 ([0-9a-f]{16}) ([0-9a-f]{64})")


def _check_len(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What members tell each other about one member (see module docstring)."""

    tox_id: ToxId
    serial: int = 0
    ipv4: bytes | None = None
    ipv6: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.serial <= 0xFFFFFFFF:
            raise ValueError("serial must fit in u32")
        if self.ipv4 is not None:
            _check_len(self.ipv4, 4, "ipv4")
        if self.ipv6 is not None:
            _check_len(self.ipv6, 16, "ipv6")

    @property
    def public_key(self) -> bytes:
        """The member's long-term public key."""
        return self.tox_id.public_key

    def encode(self) -> bytes:
        """The 63-byte record."""
        flags = (FLAG_IPV4_PINNED if self.ipv4 is not None else 0) | (
            FLAG_IPV6_PINNED if self.ipv6 is not None else 0
        )
        return self.tox_id.to_bytes() + _RECORD_TAIL.pack(
            self.serial, flags, self.ipv4 or _ZERO4, self.ipv6 or _ZERO16
        )

    @classmethod
    def read(cls, reader: Reader) -> MemberRecord:
        """One record from ``reader``.

        Raises:
            BadPacket: truncated, bad Tox ID checksum or key, unknown flags, non-zero padding.
        """
        raw_id = reader.read(TOX_ID_SIZE)
        try:
            tox_id = ToxId.from_bytes(raw_id)
        except ToxIdError as exc:
            raise BadPacket(f"member record: {exc}") from exc
        serial, flags, ipv4, ipv6 = _RECORD_TAIL.unpack(reader.read(_RECORD_TAIL.size))
        if flags & ~_KNOWN_FLAGS:
            raise BadPacket(f"member record: unknown flags {flags:#x}")
        if not flags & FLAG_IPV4_PINNED and ipv4 != _ZERO4:
            raise BadPacket("member record: IPv4 bytes without the pinned flag")
        if not flags & FLAG_IPV6_PINNED and ipv6 != _ZERO16:
            raise BadPacket("member record: IPv6 bytes without the pinned flag")
        return cls(
            tox_id,
            serial,
            ipv4 if flags & FLAG_IPV4_PINNED else None,
            ipv6 if flags & FLAG_IPV6_PINNED else None,
        )


@dataclass(frozen=True, slots=True)
class Prefix:
    """An address prefix on the wire: packed network address and prefix length."""

    address: bytes
    length: int

    def __post_init__(self) -> None:
        if len(self.address) not in (4, 16):
            raise ValueError("prefix address must be 4 or 16 bytes")
        if not 0 <= self.length <= 8 * len(self.address):
            raise ValueError("prefix length out of range")


def _write_prefix(prefix: Prefix | None, size: int) -> bytes:
    if prefix is None:
        return bytes([NO_PREFIX]) + bytes(size)
    _check_len(prefix.address, size, "prefix")
    return bytes([prefix.length]) + prefix.address


def _read_prefix(reader: Reader, size: int) -> Prefix | None:
    length = reader.u8()
    address = reader.read(size)
    if length == NO_PREFIX:
        if address != bytes(size):
            raise BadPacket("absent prefix with non-zero address bytes")
        return None
    if length > 8 * size:
        raise BadPacket(f"prefix length {length} too long for {8 * size}-bit addresses")
    return Prefix(address, length)


@dataclass(frozen=True, slots=True)
class Hello:
    """First message on every friend connection: proves membership, carries our record."""

    network_id: bytes
    proof: bytes
    max_ip_packet: int
    record: MemberRecord
    ipv4_pool: Prefix | None
    ipv6_prefix: Prefix | None
    name: str
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        _check_len(self.network_id, NETWORK_ID_SIZE_BYTES, "network_id")
        _check_len(self.proof, PROOF_SIZE_BYTES, "proof")
        if not 0 <= self.max_ip_packet <= 0xFFFF:
            raise ValueError("max_ip_packet must fit in u16")
        if len(self.name.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"name longer than {MAX_NAME_BYTES} bytes")
        if not 0 <= self.version <= 255:
            raise ValueError("version must fit in u8")

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        name = self.name.encode()
        return (
            bytes([VPN_CONTROL_PACKET_ID, HELLO, self.version])
            + self.network_id
            + self.proof
            + self.max_ip_packet.to_bytes(2, "big")
            + self.record.encode()
            + _write_prefix(self.ipv4_pool, 4)
            + _write_prefix(self.ipv6_prefix, 16)
            + bytes([len(name)])
            + name
        )

    @classmethod
    def _read_body(cls, reader: Reader) -> Hello:
        version = reader.u8()
        network_id = reader.read(NETWORK_ID_SIZE_BYTES)
        proof = reader.read(PROOF_SIZE_BYTES)
        max_ip_packet = reader.u16()
        record = MemberRecord.read(reader)
        ipv4_pool = _read_prefix(reader, 4)
        ipv6_prefix = _read_prefix(reader, 16)
        name_len = reader.u8()
        if name_len > MAX_NAME_BYTES:
            raise BadPacket(f"name length {name_len} > {MAX_NAME_BYTES}")
        try:
            name = reader.read(name_len).decode()
        except UnicodeDecodeError as exc:
            raise BadPacket("name is not UTF-8") from exc
        reader.expect_end()
        return cls(network_id, proof, max_ip_packet, record, ipv4_pool, ipv6_prefix, name, version)


@dataclass(frozen=True, slots=True)
class Members:
    """Introductions: records of members the sender knows (1..21 per packet)."""

    records: tuple[MemberRecord, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.records) <= MAX_RECORDS_PER_PACKET:
            raise ValueError(f"1..{MAX_RECORDS_PER_PACKET} records per packet")

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        return bytes([VPN_CONTROL_PACKET_ID, MEMBERS, len(self.records)]) + b"".join(
            record.encode() for record in self.records
        )

    @classmethod
    def _read_body(cls, reader: Reader) -> Members:
        count = reader.u8()
        if not 1 <= count <= MAX_RECORDS_PER_PACKET:
            raise BadPacket(f"member count {count} outside 1..{MAX_RECORDS_PER_PACKET}")
        records = tuple(MemberRecord.read(reader) for _ in range(count))
        reader.expect_end()
        return cls(records)


@dataclass(frozen=True, slots=True)
class Revoke:
    """Removal of ``target`` from the network, issued by ``issuer`` (flooded to everyone)."""

    target: bytes
    issuer: bytes
    proof: bytes

    def __post_init__(self) -> None:
        _check_len(self.target, KEY_SIZE_BYTES, "target")
        _check_len(self.issuer, KEY_SIZE_BYTES, "issuer")
        _check_len(self.proof, PROOF_SIZE_BYTES, "proof")

    def encode(self) -> bytes:
        """The whole custom packet, id byte included."""
        return bytes([VPN_CONTROL_PACKET_ID, REVOKE]) + self.target + self.issuer + self.proof

    @classmethod
    def _read_body(cls, reader: Reader) -> Revoke:
        target = reader.read(KEY_SIZE_BYTES)
        issuer = reader.read(KEY_SIZE_BYTES)
        proof = reader.read(PROOF_SIZE_BYTES)
        reader.expect_end()
        return cls(target, issuer, proof)


ControlMessage = Hello | Members | Revoke

PROBE = 1
PROBE_ACK = 2
_PROBE_HEADER = struct.Struct(">BBIH")  # id, type, nonce, size
PROBE_HEADER_BYTES = _PROBE_HEADER.size  # 8
MIN_PROBE_SIZE_BYTES = PROBE_HEADER_BYTES - 1  # 7: the size counts everything after the id
MAX_PROBE_SIZE_BYTES = 0xFFFF


def _check_probe_fields(nonce: int, size: int) -> None:
    if not 0 <= nonce <= 0xFFFFFFFF:
        raise ValueError("nonce must fit in u32")
    if not MIN_PROBE_SIZE_BYTES <= size <= MAX_PROBE_SIZE_BYTES:
        raise ValueError(f"probe size must be {MIN_PROBE_SIZE_BYTES}..{MAX_PROBE_SIZE_BYTES}")


@dataclass(frozen=True, slots=True)
class Probe:
    """A path MTU probe standing for a ``size``-byte IP packet: ``size + 1`` bytes in all."""

    nonce: int
    size: int

    def __post_init__(self) -> None:
        _check_probe_fields(self.nonce, self.size)

    def encode(self) -> bytes:
        """The whole lossy packet, id byte included (``size + 1`` bytes)."""
        header = _PROBE_HEADER.pack(VPN_PROBE_PACKET_ID, PROBE, self.nonce, self.size)
        return header + bytes(self.size + 1 - PROBE_HEADER_BYTES)


@dataclass(frozen=True, slots=True)
class ProbeAck:
    """The answer to a :class:`Probe`: its nonce and size (8 bytes, whatever the size)."""

    nonce: int
    size: int

    def __post_init__(self) -> None:
        _check_probe_fields(self.nonce, self.size)

    def encode(self) -> bytes:
        """The whole lossy packet, id byte included."""
        return _PROBE_HEADER.pack(VPN_PROBE_PACKET_ID, PROBE_ACK, self.nonce, self.size)


def decode_probe_untrusted(data: bytes | memoryview) -> Probe | ProbeAck:
    """A probe or probe ack from a member (whole lossy packet, id byte included).

    Raises:
        BadPacket: wrong id, unknown type, a length that does not match, non-zero padding.
    """
    if len(data) < PROBE_HEADER_BYTES:
        raise BadPacket("probe packet truncated")
    packet_id, kind, nonce, size = _PROBE_HEADER.unpack_from(data)
    if packet_id != VPN_PROBE_PACKET_ID:
        raise BadPacket("not a VPN probe packet")
    if size < MIN_PROBE_SIZE_BYTES:
        raise BadPacket(f"probe size {size} < {MIN_PROBE_SIZE_BYTES}")
    if kind == PROBE_ACK:
        if len(data) != PROBE_HEADER_BYTES:
            raise BadPacket("probe ack with trailing bytes")
        return ProbeAck(nonce, size)
    if kind != PROBE:
        raise BadPacket(f"unknown VPN probe type {kind}")
    if len(data) != size + 1:
        raise BadPacket(f"probe of size {size} is {len(data)} bytes long")
    padding = memoryview(data)[PROBE_HEADER_BYTES:]
    if padding.nbytes and (padding[0] != 0 or padding[1:] != padding[:-1]):
        raise BadPacket("probe padding is not zero")
    return Probe(nonce, size)


def decode_control_untrusted(data: bytes) -> ControlMessage:
    """A membership message from a friend (whole custom packet, id byte included).

    Raises:
        BadPacket: wrong packet id, unknown type, or a malformed body.
    """
    reader = Reader(data)
    if reader.u8() != VPN_CONTROL_PACKET_ID:
        raise BadPacket("not a VPN control packet")
    kind = reader.u8()
    if kind == HELLO:
        return Hello._read_body(reader)
    if kind == MEMBERS:
        return Members._read_body(reader)
    if kind == REVOKE:
        return Revoke._read_body(reader)
    raise BadPacket(f"unknown VPN control type {kind}")


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """The friend-request message proving the requester knows the network secret."""

    network_id: bytes
    proof: bytes

    def __post_init__(self) -> None:
        _check_len(self.network_id, NETWORK_ID_SIZE_BYTES, "network_id")
        _check_len(self.proof, PROOF_SIZE_BYTES, "proof")

    def encode(self) -> bytes:
        """ASCII text for ``tox_friend_add``'s message."""
        return f"{JOIN_REQUEST_PREFIX} {self.network_id.hex()} {self.proof.hex()}".encode()

    @classmethod
    def decode(cls, data: bytes) -> JoinRequest:
        """Parse a friend-request message.

        Raises:
            BadPacket: anything but exactly the format above (lower-case hex).
        """
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise BadPacket("join request is not ASCII") from exc
        match = _JOIN_RE.fullmatch(text)
        if match is None:
            raise BadPacket("not a tunnel-vpn join request")
        try:
            return cls(binascii.unhexlify(match.group(1)), binascii.unhexlify(match.group(2)))
        except (binascii.Error, ValueError) as exc:  # pragma: no cover - the regex checked
            raise BadPacket("join request hex") from exc
