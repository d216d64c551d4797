"""Onion data: request 0x85 / response 0x86 and the payloads they carry (tox-protocol.md
5.6, 5.8; c-toxcore 0.2.18 ``onion_announce.c``, ``onion_client.c``, ``friend_requests.c``).

::

    0x85 [0x85][dest real pk: 32][nonce: 24][temp pk: 32][box(temp sk, dest data pk, inner)]
    0x86 [0x86][nonce: 24][temp pk: 32][box(...)]             the 0x85 minus the dest pk
    inner = [sender real pk: 32][box(sender real sk, dest real pk, same nonce, payload)]
    DHT-PK payload          [0x9c][no_replay u64 BE][DHT pk 32][0..4 packed nodes]
    friend request payload  [0x20][nospam 4][message 1..1016]
    DHT-routed DHT-PK       [sender real pk 32][nonce 24][box(real->real, DHT-PK payload)]

Every decoder raises only :class:`tunnel.errors.BadPacket` (or ``DecryptError``).
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
    shared_key,
)
from tunnel.errors import BadPacket
from tunnel.wire._onion_common import (
    DATA_IN_RESPONSE_MIN_SIZE,
    DATA_REQUEST_MIN_SIZE,
    DATA_RESPONSE_MIN_SIZE,
    DHTPK_MIN_SIZE,
    FRIEND_REQUEST_MAX_MESSAGE_BYTES,
    MAX_DATA_REQUEST_SIZE_BYTES,
    MAX_SENT_NODES,
    NOSPAM_SIZE,
    ONION_CLIENT_MAX_DATA_SIZE_BYTES,
    ONION_DATA_DHTPK,
    ONION_DATA_FRIEND_REQUEST,
    ONION_MAX_DATA_SIZE_BYTES,
    PACKET_ONION_DATA_REQUEST,
    PACKET_ONION_DATA_RESPONSE,
    check_length,
    check_size,
    expect_kind,
    shared_key_untrusted,
)
from tunnel.wire._reader import Reader
from tunnel.wire.packed_node import PackedNode, decode_nodes_untrusted, encode_nodes

# ==========================================================================================
# Onion data request / response (0x85 / 0x86)
# ==========================================================================================


@dataclass(frozen=True, slots=True)
class DataRequest:
    """0x85: ``[0x85][dest real pk 32][nonce 24][temp pk 32][box]``, 105 < length <= 1174."""

    destination_public_key: bytes
    nonce: bytes
    temp_public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("destination_public_key", self.destination_public_key, PUBLIC_KEY_SIZE)
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("temp_public_key", self.temp_public_key, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return (
            bytes((PACKET_ONION_DATA_REQUEST,))
            + self.destination_public_key
            + self.nonce
            + self.temp_public_key
            + self.encrypted
        )

    @classmethod
    def decode(cls, data: bytes, *, max_size: int = ONION_MAX_DATA_SIZE_BYTES) -> DataRequest:
        """Parse an 0x85 packet. Node D receives up to 1223 bytes (1400 minus ret3).

        Raises:
            BadPacket: wrong kind or length.
        """
        expect_kind(data, PACKET_ONION_DATA_REQUEST)
        check_length(data, DATA_REQUEST_MIN_SIZE, max_size)
        return cls(data[1:33], data[33:57], data[57:89], data[89:])

    def to_response(self) -> DataResponse:
        """The 0x86 node D forwards: this packet minus the destination key."""
        return DataResponse(self.nonce, self.temp_public_key, self.encrypted)


@dataclass(frozen=True, slots=True)
class DataResponse:
    """0x86: ``[0x86][nonce 24][temp pk 32][box]``; the receiver accepts 121 < length <= 1069."""

    nonce: bytes
    temp_public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("temp_public_key", self.temp_public_key, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return (
            bytes((PACKET_ONION_DATA_RESPONSE,))
            + self.nonce
            + self.temp_public_key
            + self.encrypted
        )

    @classmethod
    def decode(cls, data: bytes) -> DataResponse:
        """Parse an 0x86 packet.

        Raises:
            BadPacket: wrong kind or length.
        """
        expect_kind(data, PACKET_ONION_DATA_RESPONSE)
        check_length(
            data, DATA_RESPONSE_MIN_SIZE + DATA_IN_RESPONSE_MIN_SIZE, MAX_DATA_REQUEST_SIZE_BYTES
        )
        return cls(data[1:25], data[25:57], data[57:])


def seal_data_request(
    rng: Rng,
    nonce: bytes,
    destination_real_public_key: bytes,
    destination_data_public_key: bytes,
    inner: bytes,
) -> DataRequest:
    """Wrap ``inner`` (from :func:`seal_onion_data_inner`) for one announce node.

    A fresh temporary key pair is drawn from ``rng`` for every packet (toxcore
    ``create_data_request``).

    Raises:
        ValueError: the packet would exceed 1174 bytes.
    """
    if DATA_REQUEST_MIN_SIZE + len(inner) > ONION_MAX_DATA_SIZE_BYTES or not inner:
        raise ValueError("onion data too long")
    temp = KeyPair.generate(rng)
    key = shared_key_untrusted(destination_data_public_key, temp.secret_key)
    return DataRequest(
        destination_real_public_key, nonce, temp.public_key, encrypt(key, nonce, inner)
    )


def seal_onion_data_inner(
    sender: KeyPair, destination_real_public_key: bytes, nonce: bytes, payload: bytes
) -> bytes:
    """``[sender real pk][box(K(sender, dest), nonce, payload)]``; payload 1..1021 bytes.

    Raises:
        ValueError: payload empty or longer than 1021 bytes.
    """
    if not 0 < len(payload) <= ONION_CLIENT_MAX_DATA_SIZE_BYTES:
        raise ValueError(f"onion data payload must be 1..{ONION_CLIENT_MAX_DATA_SIZE_BYTES} bytes")
    key = shared_key(destination_real_public_key, sender.secret_key)
    return sender.public_key + encrypt(key, nonce, payload)


def open_data_response(
    response: DataResponse, data_secret_key: bytes, real_secret_key: bytes
) -> tuple[bytes, bytes]:
    """Open an 0x86 sent to us; returns ``(sender real pk, payload)``.

    Raises:
        DecryptError: either box does not open (forged, or not for us).
        BadPacket: the inner layer is too short.
    """
    outer_key = shared_key_untrusted(response.temp_public_key, data_secret_key)
    inner = decrypt_untrusted(outer_key, response.nonce, response.encrypted)
    if len(inner) <= DATA_IN_RESPONSE_MIN_SIZE:
        raise BadPacket("onion data inner layer too short")
    sender = inner[:PUBLIC_KEY_SIZE]
    inner_key = shared_key_untrusted(sender, real_secret_key)
    payload = decrypt_untrusted(inner_key, response.nonce, inner[PUBLIC_KEY_SIZE:])
    return sender, payload


# ==========================================================================================
# Onion data payloads
# ==========================================================================================


@dataclass(frozen=True, slots=True)
class DhtPkPayload:
    """0x9c DHT-PK announcement: ``[0x9c][no_replay u64][DHT pk 32][0..4 packed nodes]``.

    Nodes may be TCP relays (ip_type 130/138) or UDP DHT nodes.
    """

    no_replay: int
    dht_public_key: bytes
    nodes: tuple[PackedNode, ...] = ()

    def __post_init__(self) -> None:
        check_size("dht_public_key", self.dht_public_key, PUBLIC_KEY_SIZE)
        if not 0 <= self.no_replay < 1 << 64:
            raise ValueError("no_replay is an unsigned 64-bit number")
        if len(self.nodes) > MAX_SENT_NODES:
            raise ValueError("at most 4 nodes")

    def encode(self) -> bytes:
        """The payload bytes, starting with 0x9c."""
        return (
            bytes((ONION_DATA_DHTPK,))
            + self.no_replay.to_bytes(8, "big")
            + self.dht_public_key
            + encode_nodes(self.nodes)
        )

    @classmethod
    def decode(cls, data: bytes) -> DhtPkPayload:
        """Parse a DHT-PK payload.

        Raises:
            BadPacket: wrong type, too short, malformed nodes or more than 4.
        """
        expect_kind(data, ONION_DATA_DHTPK)
        reader = Reader(data, 1)
        no_replay = reader.u64()
        dht_pk = reader.read(PUBLIC_KEY_SIZE)
        nodes = decode_nodes_untrusted(reader.rest(), allow_tcp=True, max_nodes=MAX_SENT_NODES)
        return cls(no_replay, dht_pk, tuple(nodes))


@dataclass(frozen=True, slots=True)
class FriendRequestPayload:
    """0x20 friend request: ``[0x20][nospam 4][message 1..1016]`` (tox-protocol.md 2.2)."""

    nospam: bytes
    message: bytes

    def __post_init__(self) -> None:
        check_size("nospam", self.nospam, NOSPAM_SIZE)
        if not 0 < len(self.message) <= FRIEND_REQUEST_MAX_MESSAGE_BYTES:
            raise ValueError(f"message must be 1..{FRIEND_REQUEST_MAX_MESSAGE_BYTES} bytes")

    def encode(self) -> bytes:
        """The payload bytes, starting with 0x20."""
        return bytes((ONION_DATA_FRIEND_REQUEST,)) + self.nospam + self.message

    @classmethod
    def decode(cls, data: bytes) -> FriendRequestPayload:
        """Parse a friend request payload (6..1021 bytes, as ``friendreq_handlepacket``).

        Raises:
            BadPacket: wrong type or length.
        """
        expect_kind(data, ONION_DATA_FRIEND_REQUEST)
        if not 1 + NOSPAM_SIZE < len(data) <= ONION_CLIENT_MAX_DATA_SIZE_BYTES:
            raise BadPacket(f"friend request payload of {len(data)} bytes")
        return cls(data[1:5], data[5:])


OnionDataPayload = DhtPkPayload | FriendRequestPayload


def decode_onion_data_payload_untrusted(data: bytes) -> OnionDataPayload:
    """Dispatch on the first byte of a decrypted onion data payload.

    Raises:
        BadPacket: unknown type or malformed payload.
    """
    if not data:
        raise BadPacket("empty onion data payload")
    if data[0] == ONION_DATA_DHTPK:
        return DhtPkPayload.decode(data)
    if data[0] == ONION_DATA_FRIEND_REQUEST:
        return FriendRequestPayload.decode(data)
    raise BadPacket(f"unknown onion data type {data[0]:#04x}")


@dataclass(frozen=True, slots=True)
class DhtPkViaDht:
    """The DHT-routed DHT-PK announcement: the data after request id 0x9c in a 0x20 packet.

    Layout: ``[sender real pk 32][nonce 24][box(K(sender real, friend real), nonce, 0x9c...)]``;
    113..317 bytes (tox-protocol.md 5.8.1, c-toxcore ``handle_dht_dhtpk``).
    """

    sender_public_key: bytes
    nonce: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("sender_public_key", self.sender_public_key, PUBLIC_KEY_SIZE)
        check_size("nonce", self.nonce, NONCE_SIZE)

    def encode(self) -> bytes:
        """The bytes after the request id."""
        return self.sender_public_key + self.nonce + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> DhtPkViaDht:
        """Parse the data after the request id.

        Raises:
            BadPacket: length outside 113..317.
        """
        overhead = PUBLIC_KEY_SIZE + NONCE_SIZE + MAC_SIZE
        max_nodes_bytes = MAX_SENT_NODES * 51
        if (
            not overhead + DHTPK_MIN_SIZE
            <= len(data)
            <= overhead + DHTPK_MIN_SIZE + max_nodes_bytes
        ):
            raise BadPacket(f"DHT-routed DHT-PK of {len(data)} bytes")
        return cls(data[:32], data[32:56], data[56:])

    @classmethod
    def seal(
        cls, rng: Rng, sender: KeyPair, friend_real_public_key: bytes, payload: DhtPkPayload
    ) -> DhtPkViaDht:
        """Encrypt ``payload`` from our real key to the friend's real key."""
        nonce = random_nonce(rng)
        key = shared_key(friend_real_public_key, sender.secret_key)
        return cls(sender.public_key, nonce, encrypt(key, nonce, payload.encode()))

    def open(self, real_secret_key: bytes) -> DhtPkPayload:
        """Decrypt with our real secret key.

        Raises:
            DecryptError: the box does not open.
            BadPacket: the payload is not a DHT-PK announcement.
        """
        key = shared_key_untrusted(self.sender_public_key, real_secret_key)
        return DhtPkPayload.decode(decrypt_untrusted(key, self.nonce, self.encrypted))
