"""Onion packets: request/response layers, announce, data, and the onion data payloads.

tox-protocol.md section 5 (c-toxcore 0.2.18 ``onion.c``, ``onion_announce.c``,
``onion_client.c``, ``friend_requests.c``). Every decoder here raises only
:class:`tunnel.errors.BadPacket` (or :class:`~tunnel.errors.DecryptError`).

Request layers (client -> A -> B -> C -> D), one nonce ``n`` for all three boxes::

    0x80 (to A)  [0x80][n: 24][sender DHT pk: 32][box(k1, n, IPP(B) | t2_pk | box2)]
    0x81 (to B)  [0x81][n: 24][t2_pk: 32][box2 = box(k2, n, IPP(C) | t3_pk | box3)][ret1: 59]
    0x82 (to C)  [0x82][n: 24][t3_pk: 32][box3 = box(k3, n, IPP(D) | payload)][ret2: 118]
    to D         payload | ret3: 177          payload[0] is 0x83 or 0x85 (C drops anything else)
    TCP 0x08     [0x08][n: 24][IPP(B): 19][t2_pk: 32][box2]   (the relay plays node A)

Response layers (D -> C -> B -> A -> client)::

    0x8c [ret3: 177][response]   0x8d [ret2: 118][response]   0x8e [ret1: 59][response]
    response[0] is 0x84 or 0x86; A sends the bare response to the client (UDP, or TCP 0x09).

Announce and data packets::

    0x83 [0x83][nonce: 24][sender pk: 32][box(104 B: ping_id 32 | search pk 32 | data pk 32
         | sendback 8)]                                       exactly 177 bytes
    0x84 [0x84][sendback: 8][nonce: 24][box(is_stored 1 | ping_id or data pk 32 | 0..4 nodes)]
    0x85 [0x85][dest real pk: 32][nonce: 24][temp pk: 32][box(temp sk, dest data pk, inner)]
    0x86 [0x86][nonce: 24][temp pk: 32][box(...)]             the 0x85 minus the dest pk
    inner = [sender real pk: 32][box(sender real sk, dest real pk, same nonce, payload)]

The announce codecs live in :mod:`tunnel.wire.onion_announce`, the data codecs in
:mod:`tunnel.wire.onion_data`; both are re-exported here. Onion data payloads: DHT-PK
``[0x9c][no_replay u64 BE][DHT pk 32][0..4 packed nodes]`` and
friend request ``[0x20][nospam 4][message 1..1016]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunnel.crypto import (
    MAC_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
    encrypt,
)
from tunnel.errors import BadPacket
from tunnel.wire._onion_common import (
    ANNOUNCE_IS_STORED_NO,
    ANNOUNCE_IS_STORED_OTHER,
    ANNOUNCE_IS_STORED_SELF,
    ANNOUNCE_REQUEST_PLAIN_SIZE,
    ANNOUNCE_REQUEST_SIZE,
    ANNOUNCE_RESPONSE_MAX_SIZE,
    ANNOUNCE_RESPONSE_MIN_SIZE,
    DATA_IN_RESPONSE_MIN_SIZE,
    DATA_REQUEST_MIN_SIZE,
    DATA_RESPONSE_MIN_SIZE,
    DHTPK_MIN_SIZE,
    EXIT_KINDS,
    FRIEND_REQUEST_MAX_MESSAGE_BYTES,
    MAX_DATA_REQUEST_SIZE_BYTES,
    MAX_SENT_NODES,
    NOSPAM_SIZE,
    ONION_CLIENT_MAX_DATA_SIZE_BYTES,
    ONION_DATA_DHTPK,
    ONION_DATA_FRIEND_REQUEST,
    ONION_MAX_DATA_SIZE_BYTES,
    ONION_MAX_PACKET_SIZE_BYTES,
    ONION_PING_ID_SIZE,
    ONION_RESPONSE_MAX_DATA_SIZE_BYTES,
    ONION_RETURN_1_SIZE,
    ONION_RETURN_2_SIZE,
    ONION_RETURN_3_SIZE,
    ONION_SEND_1_SIZE,
    ONION_SEND_2_SIZE,
    ONION_SEND_3_SIZE,
    ONION_SEND_BASE_SIZE,
    ONION_SENDBACK_SIZE,
    PACKET_ANNOUNCE_REQUEST,
    PACKET_ANNOUNCE_RESPONSE,
    PACKET_ONION_DATA_REQUEST,
    PACKET_ONION_DATA_RESPONSE,
    PACKET_ONION_REQUEST_0,
    PACKET_ONION_REQUEST_1,
    PACKET_ONION_REQUEST_2,
    PACKET_ONION_RESPONSE_1,
    PACKET_ONION_RESPONSE_2,
    PACKET_ONION_RESPONSE_3,
    RESPONSE_KINDS,
    TCP_ONION_REQUEST_MIN_SIZE_EXCLUSIVE,
    TCP_PACKET_ONION_REQUEST,
    TCP_PACKET_ONION_RESPONSE,
    cached_shared_key_untrusted,
    check_length,
    check_size,
    expect_kind,
    shared_key_untrusted,
)
from tunnel.wire.ip_port import (
    ONION_IP_PORT_SIZE,
    IPPort,
    decode_onion_ip_port_untrusted,
    encode_onion_ip_port,
)
from tunnel.wire.onion_announce import (
    AnnounceRequest,
    AnnounceRequestPayload,
    AnnounceResponse,
    AnnounceResponsePayload,
)
from tunnel.wire.onion_data import (
    DataRequest,
    DataResponse,
    DhtPkPayload,
    DhtPkViaDht,
    FriendRequestPayload,
    OnionDataPayload,
    decode_onion_data_payload_untrusted,
    open_data_response,
    seal_data_request,
    seal_onion_data_inner,
)

__all__ = [  # defined here, plus the shared constants and onion-data codecs re-exported
    "ANNOUNCE_IS_STORED_NO",
    "ANNOUNCE_IS_STORED_OTHER",
    "ANNOUNCE_IS_STORED_SELF",
    "ANNOUNCE_REQUEST_PLAIN_SIZE",
    "ANNOUNCE_REQUEST_SIZE",
    "ANNOUNCE_RESPONSE_MAX_SIZE",
    "ANNOUNCE_RESPONSE_MIN_SIZE",
    "DATA_IN_RESPONSE_MIN_SIZE",
    "DATA_REQUEST_MIN_SIZE",
    "DATA_RESPONSE_MIN_SIZE",
    "DHTPK_MIN_SIZE",
    "EXIT_KINDS",
    "FRIEND_REQUEST_MAX_MESSAGE_BYTES",
    "MAX_DATA_REQUEST_SIZE_BYTES",
    "MAX_SENT_NODES",
    "NOSPAM_SIZE",
    "ONION_CLIENT_MAX_DATA_SIZE_BYTES",
    "ONION_DATA_DHTPK",
    "ONION_DATA_FRIEND_REQUEST",
    "ONION_MAX_DATA_SIZE_BYTES",
    "ONION_MAX_PACKET_SIZE_BYTES",
    "ONION_PING_ID_SIZE",
    "ONION_RESPONSE_MAX_DATA_SIZE_BYTES",
    "ONION_RETURN_1_SIZE",
    "ONION_RETURN_2_SIZE",
    "ONION_RETURN_3_SIZE",
    "ONION_SENDBACK_SIZE",
    "ONION_SEND_1_SIZE",
    "ONION_SEND_2_SIZE",
    "ONION_SEND_3_SIZE",
    "ONION_SEND_BASE_SIZE",
    "PACKET_ANNOUNCE_REQUEST",
    "PACKET_ANNOUNCE_RESPONSE",
    "PACKET_ONION_DATA_REQUEST",
    "PACKET_ONION_DATA_RESPONSE",
    "PACKET_ONION_REQUEST_0",
    "PACKET_ONION_REQUEST_1",
    "PACKET_ONION_REQUEST_2",
    "PACKET_ONION_RESPONSE_1",
    "PACKET_ONION_RESPONSE_2",
    "PACKET_ONION_RESPONSE_3",
    "RESPONSE_KINDS",
    "TCP_ONION_REQUEST_MIN_SIZE_EXCLUSIVE",
    "TCP_PACKET_ONION_REQUEST",
    "TCP_PACKET_ONION_RESPONSE",
    "AnnounceRequest",
    "AnnounceRequestPayload",
    "AnnounceResponse",
    "AnnounceResponsePayload",
    "DataRequest",
    "DataResponse",
    "DhtPkPayload",
    "DhtPkViaDht",
    "FriendRequestPayload",
    "OnionDataPayload",
    "OnionExit",
    "OnionHop",
    "OnionRequest0",
    "OnionRequest1",
    "OnionRequest2",
    "OnionResponse1",
    "OnionResponse2",
    "OnionResponse3",
    "TcpOnionRequest",
    "cached_shared_key_untrusted",
    "decode_onion_data_payload_untrusted",
    "decode_onion_exit_untrusted",
    "decode_onion_hop_untrusted",
    "open_data_response",
    "seal_data_request",
    "seal_onion_data_inner",
    "seal_onion_request",
    "seal_tcp_onion_request",
    "shared_key_untrusted",
]


# ==========================================================================================
# Request layers
# ==========================================================================================


@dataclass(frozen=True, slots=True)
class OnionRequest0:
    """0x80: what the client sends to node A. ``public_key`` is the client's DHT pk.

    Layout: ``[0x80][nonce 24][public_key 32][encrypted]``; 226 < length <= 1400.
    """

    nonce: bytes
    public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ONION_REQUEST_0,)) + self.nonce + self.public_key + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> OnionRequest0:
        """Parse a 0x80 packet.

        Raises:
            BadPacket: wrong kind or length.
        """
        expect_kind(data, PACKET_ONION_REQUEST_0)
        check_length(data, 1 + ONION_SEND_1_SIZE, ONION_MAX_PACKET_SIZE_BYTES)
        return cls(data[1:25], data[25:57], data[57:])


@dataclass(frozen=True, slots=True)
class OnionRequest1:
    """0x81: node A to node B. ``return_path`` is A's 59-byte return blob.

    Layout: ``[0x81][nonce 24][temp pk 32][encrypted][ret1 59]``; 218 < length <= 1400.
    """

    nonce: bytes
    public_key: bytes
    encrypted: bytes
    return_path: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)
        check_size("return_path", self.return_path, ONION_RETURN_1_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return (
            bytes((PACKET_ONION_REQUEST_1,))
            + self.nonce
            + self.public_key
            + self.encrypted
            + self.return_path
        )

    @classmethod
    def decode(cls, data: bytes) -> OnionRequest1:
        """Parse a 0x81 packet.

        Raises:
            BadPacket: wrong kind or length.
        """
        expect_kind(data, PACKET_ONION_REQUEST_1)
        check_length(data, 1 + ONION_SEND_2_SIZE, ONION_MAX_PACKET_SIZE_BYTES)
        split = len(data) - ONION_RETURN_1_SIZE
        return cls(data[1:25], data[25:57], data[57:split], data[split:])


@dataclass(frozen=True, slots=True)
class OnionRequest2:
    """0x82: node B to node C. ``return_path`` is B's 118-byte return blob.

    Layout: ``[0x82][nonce 24][temp pk 32][encrypted][ret2 118]``; 210 < length <= 1400.
    """

    nonce: bytes
    public_key: bytes
    encrypted: bytes
    return_path: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)
        check_size("return_path", self.return_path, ONION_RETURN_2_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return (
            bytes((PACKET_ONION_REQUEST_2,))
            + self.nonce
            + self.public_key
            + self.encrypted
            + self.return_path
        )

    @classmethod
    def decode(cls, data: bytes) -> OnionRequest2:
        """Parse a 0x82 packet.

        Raises:
            BadPacket: wrong kind or length.
        """
        expect_kind(data, PACKET_ONION_REQUEST_2)
        check_length(data, 1 + ONION_SEND_3_SIZE, ONION_MAX_PACKET_SIZE_BYTES)
        split = len(data) - ONION_RETURN_2_SIZE
        return cls(data[1:25], data[25:57], data[57:split], data[split:])


@dataclass(frozen=True, slots=True)
class TcpOnionRequest:
    """TCP relay packet 0x08: the relay plays node A, so the A layer is absent.

    Layout: ``[0x08][nonce 24][IPP(B) 19][temp pk 32][encrypted]``; length > 159
    (tox-protocol.md 5.9, c-toxcore ``TCP_server.c``).
    """

    nonce: bytes
    ip_port: IPPort
    public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("nonce", self.nonce, NONCE_SIZE)
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The TCP packet plaintext, starting with 0x08."""
        return (
            bytes((TCP_PACKET_ONION_REQUEST,))
            + self.nonce
            + encode_onion_ip_port(self.ip_port)
            + self.public_key
            + self.encrypted
        )

    @classmethod
    def decode(cls, data: bytes) -> TcpOnionRequest:
        """Parse a TCP 0x08 onion request.

        Raises:
            BadPacket: wrong kind, length or IP family.
        """
        expect_kind(data, TCP_PACKET_ONION_REQUEST)
        limit = ONION_MAX_PACKET_SIZE_BYTES + ONION_IP_PORT_SIZE - ONION_RETURN_1_SIZE
        check_length(data, TCP_ONION_REQUEST_MIN_SIZE_EXCLUSIVE, limit)
        hop = decode_onion_hop_untrusted(data[1 + NONCE_SIZE :])
        return cls(data[1:25], hop.ip_port, hop.public_key, hop.encrypted)


@dataclass(frozen=True, slots=True)
class OnionHop:
    """What nodes A and B find inside their layer: ``IPP(next) || next temp pk || box``."""

    ip_port: IPPort
    public_key: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        check_size("public_key", self.public_key, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The layer plaintext."""
        return encode_onion_ip_port(self.ip_port) + self.public_key + self.encrypted


def decode_onion_hop_untrusted(plain: bytes) -> OnionHop:
    """Parse a decrypted A/B layer; the forward IP family must be 2 or 10.

    Raises:
        BadPacket: too short to hold an IPP, a key and a box, or a bad family.
    """
    if len(plain) <= ONION_IP_PORT_SIZE + PUBLIC_KEY_SIZE + MAC_SIZE:
        raise BadPacket(f"onion layer of {len(plain)} bytes is too short")
    ip_port = decode_onion_ip_port_untrusted(plain[:ONION_IP_PORT_SIZE])
    end_pk = ONION_IP_PORT_SIZE + PUBLIC_KEY_SIZE
    return OnionHop(ip_port, plain[ONION_IP_PORT_SIZE:end_pk], plain[end_pk:])


@dataclass(frozen=True, slots=True)
class OnionExit:
    """What node C finds inside its layer: ``IPP(D) || payload`` (payload kind 0x83/0x85)."""

    ip_port: IPPort
    payload: bytes

    def encode(self) -> bytes:
        """The layer plaintext."""
        return encode_onion_ip_port(self.ip_port) + self.payload


def decode_onion_exit_untrusted(plain: bytes) -> OnionExit:
    """Parse node C's decrypted layer; the payload must be an 0x83 or 0x85 packet.

    Raises:
        BadPacket: too short, a payload of another kind (0x87 included), or a bad family.
    """
    if len(plain) <= ONION_IP_PORT_SIZE:
        raise BadPacket("exit layer carries no payload")
    if plain[ONION_IP_PORT_SIZE] not in EXIT_KINDS:
        raise BadPacket(f"exit payload kind {plain[ONION_IP_PORT_SIZE]:#04x} not forwarded")
    ip_port = decode_onion_ip_port_untrusted(plain[:ONION_IP_PORT_SIZE])
    return OnionExit(ip_port, plain[ONION_IP_PORT_SIZE:])


def seal_onion_request(
    nonce: bytes,
    hop_keys: Sequence[tuple[bytes, bytes]],
    hop_addresses: Sequence[IPPort],
    destination: IPPort,
    payload: bytes,
) -> OnionRequest0:
    """Build the 0x80 packet for a 3-hop path (tox-protocol.md 5.2).

    Args:
        nonce: the one random nonce used by all three layers.
        hop_keys: ``[(k1, pk1), (k2, t2_pk), (k3, t3_pk)]`` where ``k1 = K(our DHT sk, A)``,
            ``pk1`` our DHT pk, ``k2 = K(t2_sk, B)``, ``k3 = K(t3_sk, C)``.
        hop_addresses: ``[B, C]`` (node A is where the packet is sent).
        destination: node D.
        payload: an 0x83 or 0x85 packet, 1..1174 bytes.

    Raises:
        ValueError: payload empty or too long, or wrong hop counts (a bug on our side).
    """
    if not 0 < len(payload) <= ONION_MAX_DATA_SIZE_BYTES:
        raise ValueError(f"onion payload must be 1..{ONION_MAX_DATA_SIZE_BYTES} bytes")
    if len(hop_keys) != 3 or len(hop_addresses) != 2:
        raise ValueError("an onion path has three hops")
    (k1, pk1), (k2, pk2), (k3, pk3) = hop_keys
    step2 = OnionHop(
        hop_addresses[1], pk3, encrypt(k3, nonce, OnionExit(destination, payload).encode())
    )
    step3 = OnionHop(hop_addresses[0], pk2, encrypt(k2, nonce, step2.encode()))
    return OnionRequest0(nonce, pk1, encrypt(k1, nonce, step3.encode()))


def seal_tcp_onion_request(
    nonce: bytes,
    hop_keys: Sequence[tuple[bytes, bytes]],
    hop_addresses: Sequence[IPPort],
    destination: IPPort,
    payload: bytes,
) -> TcpOnionRequest:
    """Build the TCP 0x08 packet: like :func:`seal_onion_request` minus node A's layer.

    ``hop_keys`` is ``[(k2, t2_pk), (k3, t3_pk)]`` and ``hop_addresses`` is ``[B, C]``.

    Raises:
        ValueError: payload empty or too long, or wrong hop counts.
    """
    if not 0 < len(payload) <= ONION_MAX_DATA_SIZE_BYTES:
        raise ValueError(f"onion payload must be 1..{ONION_MAX_DATA_SIZE_BYTES} bytes")
    if len(hop_keys) != 2 or len(hop_addresses) != 2:
        raise ValueError("a TCP onion request has two encrypted hops")
    (k2, pk2), (k3, pk3) = hop_keys
    step2 = OnionHop(
        hop_addresses[1], pk3, encrypt(k3, nonce, OnionExit(destination, payload).encode())
    )
    return TcpOnionRequest(nonce, hop_addresses[0], pk2, encrypt(k2, nonce, step2.encode()))


# ==========================================================================================
# Response layers
# ==========================================================================================


def _decode_response(data: bytes, kind: int, ret_size: int) -> tuple[bytes, bytes]:
    expect_kind(data, kind)
    check_length(data, 1 + ret_size, ONION_MAX_PACKET_SIZE_BYTES)
    if data[1 + ret_size] not in RESPONSE_KINDS:
        raise BadPacket(f"onion response carries kind {data[1 + ret_size]:#04x}")
    return data[1 : 1 + ret_size], data[1 + ret_size :]


@dataclass(frozen=True, slots=True)
class OnionResponse3:
    """0x8c: node D to node C, ``[0x8c][ret3 177][0x84 or 0x86 packet]``."""

    return_path: bytes
    payload: bytes

    def __post_init__(self) -> None:
        check_size("return_path", self.return_path, ONION_RETURN_3_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ONION_RESPONSE_3,)) + self.return_path + self.payload

    @classmethod
    def decode(cls, data: bytes) -> OnionResponse3:
        """Parse an 0x8c packet.

        Raises:
            BadPacket: wrong kind, length or inner kind.
        """
        return cls(*_decode_response(data, PACKET_ONION_RESPONSE_3, ONION_RETURN_3_SIZE))


@dataclass(frozen=True, slots=True)
class OnionResponse2:
    """0x8d: node C to node B, ``[0x8d][ret2 118][0x84 or 0x86 packet]``."""

    return_path: bytes
    payload: bytes

    def __post_init__(self) -> None:
        check_size("return_path", self.return_path, ONION_RETURN_2_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ONION_RESPONSE_2,)) + self.return_path + self.payload

    @classmethod
    def decode(cls, data: bytes) -> OnionResponse2:
        """Parse an 0x8d packet.

        Raises:
            BadPacket: wrong kind, length or inner kind.
        """
        return cls(*_decode_response(data, PACKET_ONION_RESPONSE_2, ONION_RETURN_2_SIZE))


@dataclass(frozen=True, slots=True)
class OnionResponse1:
    """0x8e: node B to node A, ``[0x8e][ret1 59][0x84 or 0x86 packet]``."""

    return_path: bytes
    payload: bytes

    def __post_init__(self) -> None:
        check_size("return_path", self.return_path, ONION_RETURN_1_SIZE)

    def encode(self) -> bytes:
        """The packet bytes."""
        return bytes((PACKET_ONION_RESPONSE_1,)) + self.return_path + self.payload

    @classmethod
    def decode(cls, data: bytes) -> OnionResponse1:
        """Parse an 0x8e packet.

        Raises:
            BadPacket: wrong kind, length or inner kind.
        """
        return cls(*_decode_response(data, PACKET_ONION_RESPONSE_1, ONION_RETURN_1_SIZE))
