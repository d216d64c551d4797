"""DHT packets: the encrypted DHT wrapper, ping, nodes, DHT request / NAT ping, LAN discovery
and bootstrap info (tox-protocol.md 4.2-4.4, 4.8-4.11; c-toxcore 0.2.18 ``DHT.c``, ``ping.c``,
``LAN_discovery.c``, ``network.c``).

DHT wrapper (kinds 0x00 ping request, 0x01 ping response, 0x02 nodes request, 0x04 nodes
response)::

    [kind: 1][sender DHT pk: 32][nonce: 24][box(K(sender, receiver), nonce, plaintext)]

Plaintexts::

    ping (0x00/0x01)   [kind again: 1][ping_id: 8]                    -> packet 82 bytes exactly
    nodes request      [requested pk: 32][ping_id: 8]                 -> packet 113 bytes exactly
    nodes response     [count: 1][count x packed node, UDP][ping_id: 8] -> 82 + nodes (1..4 nodes)

DHT request (0x20), routed through the DHT::

    [0x20][receiver pk: 32][sender pk: 32][nonce: 24][box([request_id: 1][data ...])]
    NAT ping data (request_id 0xfe): [type: 1 (0 request, 1 response)][ping_id: 8]

LAN discovery: ``[0x21][sender DHT pk: 32]`` (33 bytes). Bootstrap info: request is any
78-byte datagram starting with 0xf0; response ``[0xf0][version: 4 BE][motd: 0..256]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.crypto import MAC_SIZE, NONCE_SIZE, PUBLIC_KEY_SIZE, decrypt_untrusted, encrypt
from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.packed_node import PackedNode, encode_nodes, read_nodes

KIND_PING_REQUEST = 0x00
KIND_PING_RESPONSE = 0x01
KIND_NODES_REQUEST = 0x02
KIND_NODES_RESPONSE = 0x04
KIND_DHT_REQUEST = 0x20
KIND_LAN_DISCOVERY = 0x21
KIND_BOOTSTRAP_INFO = 0xF0

DHT_WRAPPED_KINDS = frozenset(
    {KIND_PING_REQUEST, KIND_PING_RESPONSE, KIND_NODES_REQUEST, KIND_NODES_RESPONSE}
)

PING_ID_SIZE = 8
MAX_SENT_NODES = 4
DHT_HEADER_SIZE = 1 + PUBLIC_KEY_SIZE + NONCE_SIZE
PING_PACKET_SIZE = DHT_HEADER_SIZE + 1 + PING_ID_SIZE + MAC_SIZE  # 82
NODES_REQUEST_PACKET_SIZE = DHT_HEADER_SIZE + PUBLIC_KEY_SIZE + PING_ID_SIZE + MAC_SIZE  # 113
NODES_RESPONSE_MIN_SIZE = PING_PACKET_SIZE  # 82 + node bytes (node bytes must be non-empty)
MAX_NODES_BYTES = 51 * MAX_SENT_NODES  # 204

DHT_REQUEST_HEADER_SIZE = 1 + 2 * PUBLIC_KEY_SIZE + NONCE_SIZE  # 89
DHT_REQUEST_MIN_SIZE = DHT_REQUEST_HEADER_SIZE + MAC_SIZE + 1  # 106
MAX_CRYPTO_REQUEST_SIZE = 1024  # largest DHT request we decrypt
MAX_ROUTED_REQUEST_SIZE = MAX_CRYPTO_REQUEST_SIZE + MAC_SIZE  # 1040: larger ones are dropped
REQUEST_ID_NAT_PING = 0xFE
REQUEST_ID_DHTPK = 0x9C
NAT_PING_REQUEST = 0x00
NAT_PING_RESPONSE = 0x01
NAT_PING_DATA_SIZE = 1 + PING_ID_SIZE

LAN_DISCOVERY_SIZE = 1 + PUBLIC_KEY_SIZE  # 33
BOOTSTRAP_INFO_REQUEST_SIZE = 78
MAX_MOTD_SIZE = 256


@dataclass(frozen=True, slots=True)
class DhtPacket:
    """The encrypted DHT wrapper: kind, sender DHT public key, nonce and box."""

    kind: int
    sender_pk: bytes
    nonce: bytes
    box: bytes

    def encode(self) -> bytes:
        """The wire bytes."""
        return bytes((self.kind,)) + self.sender_pk + self.nonce + self.box

    @classmethod
    def decode(cls, data: bytes) -> DhtPacket:
        """Split a wrapper (length checks per kind happen in :meth:`decode_kind`).

        Raises:
            BadPacket: shorter than header plus one plaintext byte, or an unknown kind.
        """
        if len(data) <= DHT_HEADER_SIZE + MAC_SIZE:
            raise BadPacket(f"DHT packet of {len(data)} bytes is too short")
        kind = data[0]
        if kind not in DHT_WRAPPED_KINDS:
            raise BadPacket(f"not a DHT wrapped kind: {kind:#04x}")
        return cls(
            kind,
            data[1 : 1 + PUBLIC_KEY_SIZE],
            data[1 + PUBLIC_KEY_SIZE : DHT_HEADER_SIZE],
            data[DHT_HEADER_SIZE:],
        )

    @classmethod
    def decode_kind(cls, data: bytes, kind: int) -> DhtPacket:
        """Split a wrapper of the given ``kind`` with toxcore's exact length rules.

        Raises:
            BadPacket: wrong kind or a length toxcore would drop.
        """
        packet = cls.decode(data)
        if packet.kind != kind:
            raise BadPacket(f"expected kind {kind:#04x}, got {packet.kind:#04x}")
        size = len(data)
        if kind in (KIND_PING_REQUEST, KIND_PING_RESPONSE):
            ok = size == PING_PACKET_SIZE
        elif kind == KIND_NODES_REQUEST:
            ok = size == NODES_REQUEST_PACKET_SIZE
        else:
            ok = NODES_RESPONSE_MIN_SIZE < size <= NODES_RESPONSE_MIN_SIZE + MAX_NODES_BYTES
        if not ok:
            raise BadPacket(f"kind {kind:#04x} packet of wrong length {size}")
        return packet

    def open_untrusted(self, key: bytes) -> bytes:
        """Decrypt the box with the shared key of sender and receiver.

        Raises:
            DecryptError: the box does not open.
        """
        return decrypt_untrusted(key, self.nonce, self.box)


def seal_dht_packet(kind: int, sender_pk: bytes, key: bytes, nonce: bytes, plain: bytes) -> bytes:
    """Encrypt ``plain`` and wrap it as a DHT packet of ``kind``."""
    return DhtPacket(kind, sender_pk, nonce, encrypt(key, nonce, plain)).encode()


@dataclass(frozen=True, slots=True)
class PingPayload:
    """Ping plaintext: the packet kind repeated, then the 8-byte ping id."""

    kind: int
    ping_id: bytes

    def encode(self) -> bytes:
        """The 9 plaintext bytes."""
        return bytes((self.kind,)) + self.ping_id

    @classmethod
    def decode(cls, data: bytes, expected_kind: int) -> PingPayload:
        """Parse a ping plaintext whose inner kind must be ``expected_kind``.

        Raises:
            BadPacket: wrong length or inner kind.
        """
        if len(data) != 1 + PING_ID_SIZE:
            raise BadPacket(f"ping plaintext must be 9 bytes, got {len(data)}")
        if data[0] != expected_kind:
            raise BadPacket(f"ping inner kind {data[0]} != {expected_kind}")
        return cls(data[0], data[1:])


@dataclass(frozen=True, slots=True)
class NodesRequestPayload:
    """Nodes request plaintext: the key searched for and the 8-byte request id."""

    requested_pk: bytes
    ping_id: bytes

    def encode(self) -> bytes:
        """The 40 plaintext bytes."""
        return self.requested_pk + self.ping_id

    @classmethod
    def decode(cls, data: bytes) -> NodesRequestPayload:
        """Parse a nodes request plaintext.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != PUBLIC_KEY_SIZE + PING_ID_SIZE:
            raise BadPacket(f"nodes request plaintext must be 40 bytes, got {len(data)}")
        return cls(data[:PUBLIC_KEY_SIZE], data[PUBLIC_KEY_SIZE:])


@dataclass(frozen=True, slots=True)
class NodesResponsePayload:
    """Nodes response plaintext: 1..4 UDP packed nodes and the echoed request id."""

    nodes: tuple[PackedNode, ...]
    ping_id: bytes

    def encode(self) -> bytes:
        """The plaintext bytes."""
        if not 1 <= len(self.nodes) <= MAX_SENT_NODES:
            raise ValueError("a nodes response carries 1 to 4 nodes")
        return bytes((len(self.nodes),)) + encode_nodes(self.nodes) + self.ping_id

    @classmethod
    def decode(cls, data: bytes) -> NodesResponsePayload:
        """Parse a nodes response plaintext (toxcore ``handle_sendnodes_core`` rules).

        Raises:
            BadPacket: zero or more than four nodes, a count that does not match the node
                bytes, TCP nodes, or leftover bytes.
        """
        if len(data) <= 1 + PING_ID_SIZE:
            raise BadPacket("nodes response without nodes")
        reader = Reader(data[: len(data) - PING_ID_SIZE])
        count = reader.u8()
        if not 1 <= count <= MAX_SENT_NODES:
            raise BadPacket(f"nodes response count {count}")
        nodes = read_nodes(reader, count, allow_tcp=False)
        reader.expect_end()
        return cls(tuple(nodes), data[len(data) - PING_ID_SIZE :])


@dataclass(frozen=True, slots=True)
class DhtRequest:
    """A routed DHT request (0x20): receiver and sender DHT keys, nonce, box."""

    receiver_pk: bytes
    sender_pk: bytes
    nonce: bytes
    box: bytes

    def encode(self) -> bytes:
        """The wire bytes."""
        return (
            bytes((KIND_DHT_REQUEST,)) + self.receiver_pk + self.sender_pk + self.nonce + self.box
        )

    @classmethod
    def decode(cls, data: bytes) -> DhtRequest:
        """Split a DHT request (routable size: 106..1040 bytes).

        Raises:
            BadPacket: wrong kind or a length toxcore drops.
        """
        if not data or data[0] != KIND_DHT_REQUEST:
            raise BadPacket("not a DHT request")
        if not DHT_REQUEST_MIN_SIZE <= len(data) <= MAX_ROUTED_REQUEST_SIZE:
            raise BadPacket(f"DHT request of {len(data)} bytes")
        a = 1 + PUBLIC_KEY_SIZE
        b = a + PUBLIC_KEY_SIZE
        return cls(data[1:a], data[a:b], data[b : b + NONCE_SIZE], data[b + NONCE_SIZE :])

    @classmethod
    def seal(
        cls,
        receiver_pk: bytes,
        sender_pk: bytes,
        key: bytes,
        nonce: bytes,
        request_id: int,
        data: bytes,
    ) -> DhtRequest:
        """Encrypt ``[request_id][data]`` for ``receiver_pk``."""
        plain = bytes((request_id,)) + data
        if len(plain) + MAC_SIZE + DHT_REQUEST_HEADER_SIZE > MAX_CRYPTO_REQUEST_SIZE:
            raise ValueError("DHT request too large")
        return cls(receiver_pk, sender_pk, nonce, encrypt(key, nonce, plain))

    def open_untrusted(self, key: bytes) -> tuple[int, bytes]:
        """Decrypt; returns ``(request_id, data)``.

        Raises:
            BadPacket: larger than toxcore decrypts.
            DecryptError: the box does not open.
        """
        if len(self.encode()) > MAX_CRYPTO_REQUEST_SIZE:
            raise BadPacket("DHT request too large to decrypt")
        plain = decrypt_untrusted(key, self.nonce, self.box)
        return plain[0], plain[1:]


@dataclass(frozen=True, slots=True)
class NatPing:
    """NAT ping data carried in a DHT request with request id 0xfe."""

    is_response: bool
    ping_id: bytes

    def encode(self) -> bytes:
        """``[type][ping_id]`` (without the request id byte)."""
        return bytes((NAT_PING_RESPONSE if self.is_response else NAT_PING_REQUEST,)) + self.ping_id

    @classmethod
    def decode(cls, data: bytes) -> NatPing:
        """Parse NAT ping data.

        Raises:
            BadPacket: wrong length or type.
        """
        if len(data) != NAT_PING_DATA_SIZE:
            raise BadPacket(f"NAT ping data must be 9 bytes, got {len(data)}")
        if data[0] not in (NAT_PING_REQUEST, NAT_PING_RESPONSE):
            raise BadPacket(f"NAT ping type {data[0]}")
        return cls(data[0] == NAT_PING_RESPONSE, data[1:])


@dataclass(frozen=True, slots=True)
class LanDiscovery:
    """LAN discovery announcement: the sender's DHT public key, unencrypted."""

    public_key: bytes

    def encode(self) -> bytes:
        """The 33 wire bytes."""
        return bytes((KIND_LAN_DISCOVERY,)) + self.public_key

    @classmethod
    def decode(cls, data: bytes) -> LanDiscovery:
        """Parse a LAN discovery packet.

        Raises:
            BadPacket: wrong kind or length.
        """
        if len(data) != LAN_DISCOVERY_SIZE or data[0] != KIND_LAN_DISCOVERY:
            raise BadPacket("not a 33-byte LAN discovery packet")
        return cls(data[1:])


def is_bootstrap_info_request(data: bytes) -> bool:
    """True for a bootstrap info request: 78 bytes starting with 0xf0."""
    return len(data) == BOOTSTRAP_INFO_REQUEST_SIZE and data[0] == KIND_BOOTSTRAP_INFO


def bootstrap_info_request() -> bytes:
    """A bootstrap info request (0xf0 and 77 zero bytes)."""
    return bytes((KIND_BOOTSTRAP_INFO,)) + bytes(BOOTSTRAP_INFO_REQUEST_SIZE - 1)


@dataclass(frozen=True, slots=True)
class BootstrapInfo:
    """Bootstrap info response: daemon version and message of the day."""

    version: int
    motd: bytes

    def encode(self) -> bytes:
        """``[0xf0][version u32 BE][motd]``."""
        if len(self.motd) > MAX_MOTD_SIZE:
            raise ValueError("MOTD longer than 256 bytes")
        return bytes((KIND_BOOTSTRAP_INFO,)) + self.version.to_bytes(4, "big") + self.motd

    @classmethod
    def decode(cls, data: bytes) -> BootstrapInfo:
        """Parse a bootstrap info response.

        Raises:
            BadPacket: wrong kind, truncated or MOTD too long.
        """
        reader = Reader(data)
        if reader.u8() != KIND_BOOTSTRAP_INFO:
            raise BadPacket("not a bootstrap info packet")
        version = reader.u32()
        motd = reader.rest()
        if len(motd) > MAX_MOTD_SIZE:
            raise BadPacket("MOTD longer than 256 bytes")
        return cls(version, motd)
