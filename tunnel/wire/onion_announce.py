"""Onion announce request 0x83 / response 0x84 (tox-protocol.md 5.4-5.5; c-toxcore 0.2.18
``onion_announce.c``, ``onion_client.c``).

::

    0x83 [0x83][nonce: 24][sender pk: 32][box(104 B: ping_id 32 | search pk 32 | data pk 32
         | sendback 8)]                                       exactly 177 bytes
    0x84 [0x84][sendback: 8][nonce: 24][box(is_stored 1 | ping_id or data pk 32 | 0..4 nodes)]

Every decoder raises only :class:`tunnel.errors.BadPacket` (or ``DecryptError``).
:mod:`tunnel.wire.onion` re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.crypto import (
    MAC_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
    KeyPair,
    Rng,
    decrypt_untrusted,
    encrypt,
    random_nonce,
)
from tunnel.errors import BadPacket
from tunnel.wire._onion_common import (
    ANNOUNCE_REQUEST_PLAIN_SIZE,
    ANNOUNCE_REQUEST_SIZE,
    ANNOUNCE_RESPONSE_MAX_SIZE,
    ANNOUNCE_RESPONSE_MIN_SIZE,
    MAX_SENT_NODES,
    ONION_PING_ID_SIZE,
    ONION_SENDBACK_SIZE,
    PACKET_ANNOUNCE_REQUEST,
    PACKET_ANNOUNCE_RESPONSE,
    check_size,
    expect_kind,
    shared_key_untrusted,
)
from tunnel.wire.packed_node import PackedNode, decode_nodes_untrusted, encode_nodes


@dataclass(frozen=True, slots=True)
class AnnounceRequestPayload:
    """The 104-byte plaintext of an 0x83: ``ping_id | search pk | data pk | sendback``."""

    ping_id: bytes
    search_public_key: bytes
    data_public_key: bytes
    sendback: bytes

    def __post_init__(self) -> None:
        check_size("ping_id", self.ping_id, ONION_PING_ID_SIZE)
        check_size("search_public_key", self.search_public_key, PUBLIC_KEY_SIZE)
        check_size("data_public_key", self.data_public_key, PUBLIC_KEY_SIZE)
        check_size("sendback", self.sendback, ONION_SENDBACK_SIZE)

    def encode(self) -> bytes:
        """The plaintext bytes."""
        return self.ping_id + self.search_public_key + self.data_public_key + self.sendback

    @classmethod
    def decode(cls, data: bytes) -> AnnounceRequestPayload:
        """Parse the plaintext.

        Raises:
            BadPacket: not exactly 104 bytes.
        """
        if len(data) != ANNOUNCE_REQUEST_PLAIN_SIZE:
            raise BadPacket(f"announce request plaintext must be 104 bytes, got {len(data)}")
        return cls(data[:32], data[32:64], data[64:96], data[96:104])


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """0x83, exactly 177 bytes: ``[0x83][nonce 24][sender pk 32][box 120]``."""

    nonce: bytes
    public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)
        check_size("encrypted", self.encrypted, ANNOUNCE_REQUEST_PLAIN_SIZE + MAC_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ANNOUNCE_REQUEST,)) + self.nonce + self.public_key + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> AnnounceRequest:
        """Parse an 0x83 packet (without the trailing return path).

        Raises:
            BadPacket: wrong kind or not exactly 177 bytes.
        """
        expect_kind(data, PACKET_ANNOUNCE_REQUEST)
        if len(data) != ANNOUNCE_REQUEST_SIZE:
            raise BadPacket(f"announce request must be {ANNOUNCE_REQUEST_SIZE} bytes")
        return cls(data[1:25], data[25:57], data[57:])

    @classmethod
    def seal(
        cls,
        rng: Rng,
        sender: KeyPair,
        destination_public_key: bytes,
        payload: AnnounceRequestPayload,
    ) -> AnnounceRequest:
        """Encrypt ``payload`` from ``sender`` to node D's DHT key with a random nonce."""
        nonce = random_nonce(rng)
        key = shared_key_untrusted(destination_public_key, sender.secret_key)
        return cls(nonce, sender.public_key, encrypt(key, nonce, payload.encode()))

    def open(self, key: bytes) -> AnnounceRequestPayload:
        """Decrypt with ``K(D's DHT sk, sender pk)``.

        Raises:
            DecryptError: the box does not open.
        """
        return AnnounceRequestPayload.decode(decrypt_untrusted(key, self.nonce, self.encrypted))


@dataclass(frozen=True, slots=True)
class AnnounceResponsePayload:
    """Plaintext of an 0x84: ``[is_stored 1][ping_id or data pk 32][0..4 UDP packed nodes]``."""

    is_stored: int
    ping_id_or_data_public_key: bytes
    nodes: tuple[PackedNode, ...] = ()

    def __post_init__(self) -> None:
        check_size("ping_id_or_data_public_key", self.ping_id_or_data_public_key, 32)
        if not 0 <= self.is_stored <= 255:
            raise ValueError("is_stored is one byte")
        if len(self.nodes) > MAX_SENT_NODES or any(n.tcp for n in self.nodes):
            raise ValueError("at most 4 UDP nodes")

    def encode(self) -> bytes:
        """The plaintext bytes."""
        return bytes((self.is_stored,)) + self.ping_id_or_data_public_key + encode_nodes(self.nodes)

    @classmethod
    def decode(cls, data: bytes) -> AnnounceResponsePayload:
        """Parse the plaintext (TCP node types are rejected, as toxcore does here).

        Raises:
            BadPacket: too short, malformed nodes or more than 4 of them.
        """
        if len(data) < 1 + ONION_PING_ID_SIZE:
            raise BadPacket("announce response plaintext too short")
        nodes = decode_nodes_untrusted(data[33:], allow_tcp=False, max_nodes=MAX_SENT_NODES)
        return cls(data[0], data[1:33], tuple(nodes))


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """0x84: ``[0x84][sendback 8][nonce 24][box]``, 82..626 bytes."""

    sendback: bytes
    nonce: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("sendback", self.sendback, ONION_SENDBACK_SIZE)
        check_size("nonce", self.nonce, NONCE_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ANNOUNCE_RESPONSE,)) + self.sendback + self.nonce + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> AnnounceResponse:
        """Parse an 0x84 packet.

        Raises:
            BadPacket: wrong kind or length outside 82..626.
        """
        expect_kind(data, PACKET_ANNOUNCE_RESPONSE)
        if not ANNOUNCE_RESPONSE_MIN_SIZE <= len(data) <= ANNOUNCE_RESPONSE_MAX_SIZE:
            raise BadPacket(f"announce response of {len(data)} bytes")
        return cls(data[1:9], data[9:33], data[33:])

    @classmethod
    def seal(
        cls, rng: Rng, key: bytes, sendback: bytes, payload: AnnounceResponsePayload
    ) -> AnnounceResponse:
        """Encrypt with the key the request was opened with and a fresh random nonce."""
        nonce = random_nonce(rng)
        return cls(sendback, nonce, encrypt(key, nonce, payload.encode()))

    def open(self, key: bytes) -> AnnounceResponsePayload:
        """Decrypt with ``K(request sk, D's DHT pk)``.

        Raises:
            DecryptError: the box does not open.
            BadPacket: the plaintext is malformed.
        """
        return AnnounceResponsePayload.decode(decrypt_untrusted(key, self.nonce, self.encrypted))
