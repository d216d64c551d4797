"""TCP relay handshake and packet codecs (tox-protocol.md section 7, c-toxcore ``TCP_common.h``).

Handshake (clear bytes on the stream, before any framing)::

    client -> server, 128 bytes:
        [client DHT pk: 32][nonce: 24][box(K(client sk, server pk), nonce, plain)]
    server -> client, 96 bytes:
        [nonce: 24][box(K(server sk, client pk), nonce, plain)]
    plain (56 bytes) = [temp pk: 32][base nonce: 24]

After the handshake every packet below is the plaintext of one frame (see
:mod:`tunnel.tcp_relay.framing`); its first byte is the packet id:

====  =======================  =====  =====================================================
id    packet                   dir    layout (exact lengths as toxcore 0.2.18 checks them)
====  =======================  =====  =====================================================
0x00  routing request          C->S   ``[0x00][peer pk: 32]`` (33)
0x01  routing response         S->C   ``[0x01][conn_id: 1][peer pk: 32]`` (34)
0x02  connect notification     S->C   ``[0x02][conn_id]`` (2)
0x03  disconnect notification  both   ``[0x03][conn_id]`` (2)
0x04  ping                     both   ``[0x04][ping_id: 8]`` (9)
0x05  pong                     both   ``[0x05][ping_id: 8]`` (9), ping_id 0 is invalid
0x06  OOB send                 C->S   ``[0x06][dest pk: 32][data: 1..1024]``
0x07  OOB recv                 S->C   ``[0x07][sender pk: 32][data: 1..]``
0x08  onion request            C->S   ``[0x08][nonce: 24][IPP: 19][pk: 32][box]`` (> 159)
0x09  onion response           S->C   ``[0x09][raw 0x84 / 0x86 packet]``
0x0a  forward request          C->S   new-groups forwarding (not supported here)
0x0b  forwarding               S->C   new-groups forwarding (not supported here)
0x10+ data                     both   ``[conn_id][payload]``
====  =======================  =====  =====================================================

Ping ids are opaque 8-byte echoes (toxcore copies a host-order ``uint64_t``); we carry them as
big-endian integers, which round-trips the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunnel.crypto import (
    MAC_SIZE,
    NONCE_SIZE,
    PUBLIC_KEY_SIZE,
    decrypt_untrusted,
    encrypt,
)
from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader

HANDSHAKE_PLAIN_SIZE_BYTES = PUBLIC_KEY_SIZE + NONCE_SIZE  # 56
SERVER_HANDSHAKE_SIZE_BYTES = NONCE_SIZE + HANDSHAKE_PLAIN_SIZE_BYTES + MAC_SIZE  # 96
CLIENT_HANDSHAKE_SIZE_BYTES = PUBLIC_KEY_SIZE + SERVER_HANDSHAKE_SIZE_BYTES  # 128

MAX_FRAME_CIPHER_SIZE_BYTES = 2048
"""toxcore ``MAX_PACKET_SIZE``: the largest announced frame length (ciphertext incl. MAC)."""
MAX_FRAME_PLAIN_SIZE_BYTES = MAX_FRAME_CIPHER_SIZE_BYTES - MAC_SIZE  # 2032
FRAME_LENGTH_PREFIX_BYTES = 2
MAX_OOB_DATA_SIZE_BYTES = 1024
"""toxcore ``TCP_MAX_OOB_DATA_LENGTH``."""
NUM_RESERVED_PORTS = 16
NUM_CLIENT_CONNECTIONS = 256 - NUM_RESERVED_PORTS  # 240
ONION_REQUEST_MIN_SIZE_BYTES = 1 + NONCE_SIZE + 67 * 2 + 1
"""toxcore accepts a TCP onion request only if ``len(plain) > 1 + 24 + 2*ONION_SEND_BASE``."""

PACKET_ROUTING_REQUEST = 0x00
PACKET_ROUTING_RESPONSE = 0x01
PACKET_CONNECTION_NOTIFICATION = 0x02
PACKET_DISCONNECT_NOTIFICATION = 0x03
PACKET_PING = 0x04
PACKET_PONG = 0x05
PACKET_OOB_SEND = 0x06
PACKET_OOB_RECV = 0x07
PACKET_ONION_REQUEST = 0x08
PACKET_ONION_RESPONSE = 0x09
PACKET_FORWARD_REQUEST = 0x0A
PACKET_FORWARDING = 0x0B


# --------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class HandshakePlain:
    """The 56-byte secret both handshake messages carry: a temporary key and a base nonce."""

    temp_public_key: bytes
    base_nonce: bytes

    def encode(self) -> bytes:
        """``[temp pk: 32][base nonce: 24]``."""
        return self.temp_public_key + self.base_nonce

    @classmethod
    def decode(cls, data: bytes) -> HandshakePlain:
        """Raises:
        BadPacket: not exactly 56 bytes.
        """
        if len(data) != HANDSHAKE_PLAIN_SIZE_BYTES:
            raise BadPacket(f"handshake plaintext must be 56 bytes, got {len(data)}")
        return cls(data[:PUBLIC_KEY_SIZE], data[PUBLIC_KEY_SIZE:])


@dataclass(frozen=True, slots=True)
class ClientHandshake:
    """The client's 128-byte opening: its DHT public key, a nonce and the boxed secret."""

    public_key: bytes
    nonce: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_SIZE or len(self.nonce) != NONCE_SIZE:
            raise ValueError("bad key or nonce size")
        if len(self.encrypted) != HANDSHAKE_PLAIN_SIZE_BYTES + MAC_SIZE:
            raise ValueError("encrypted part must be 72 bytes")

    @classmethod
    def seal(
        cls, public_key: bytes, shared_key: bytes, nonce: bytes, plain: HandshakePlain
    ) -> ClientHandshake:
        """Box ``plain`` with ``shared_key`` = K(client DHT sk, server pk)."""
        return cls(public_key, nonce, encrypt(shared_key, nonce, plain.encode()))

    def open_untrusted(self, shared_key: bytes) -> HandshakePlain:
        """Raises:
        DecryptError: the box does not open with ``shared_key``.
        """
        return HandshakePlain.decode(decrypt_untrusted(shared_key, self.nonce, self.encrypted))

    def encode(self) -> bytes:
        """The 128 wire bytes."""
        return self.public_key + self.nonce + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> ClientHandshake:
        """Raises:
        BadPacket: not exactly 128 bytes.
        """
        if len(data) != CLIENT_HANDSHAKE_SIZE_BYTES:
            raise BadPacket(f"client handshake must be 128 bytes, got {len(data)}")
        return cls(data[:32], data[32:56], data[56:])


@dataclass(frozen=True, slots=True)
class ServerHandshake:
    """The server's 96-byte answer: a nonce and the boxed secret."""

    nonce: bytes
    encrypted: bytes

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_SIZE:
            raise ValueError("nonce must be 24 bytes")
        if len(self.encrypted) != HANDSHAKE_PLAIN_SIZE_BYTES + MAC_SIZE:
            raise ValueError("encrypted part must be 72 bytes")

    @classmethod
    def seal(cls, shared_key: bytes, nonce: bytes, plain: HandshakePlain) -> ServerHandshake:
        """Box ``plain`` with ``shared_key`` = K(server sk, client DHT pk)."""
        return cls(nonce, encrypt(shared_key, nonce, plain.encode()))

    def open_untrusted(self, shared_key: bytes) -> HandshakePlain:
        """Raises:
        DecryptError: the box does not open with ``shared_key``.
        """
        return HandshakePlain.decode(decrypt_untrusted(shared_key, self.nonce, self.encrypted))

    def encode(self) -> bytes:
        """The 96 wire bytes."""
        return self.nonce + self.encrypted

    @classmethod
    def decode(cls, data: bytes) -> ServerHandshake:
        """Raises:
        BadPacket: not exactly 96 bytes.
        """
        if len(data) != SERVER_HANDSHAKE_SIZE_BYTES:
            raise BadPacket(f"server handshake must be 96 bytes, got {len(data)}")
        return cls(data[:24], data[24:])


# --------------------------------------------------------------------------- packets


def _check_pk(public_key: bytes) -> None:
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("public key must be 32 bytes")


def _check_conn_id(connection_id: int) -> None:
    if not 0 <= connection_id <= 0xFF:
        raise ValueError("connection id must fit in one byte")


@dataclass(frozen=True, slots=True)
class RoutingRequest:
    """Ask the relay for a connection id towards ``public_key`` (a peer's DHT pk)."""

    public_key: bytes
    ID: ClassVar[int] = PACKET_ROUTING_REQUEST

    def __post_init__(self) -> None:
        _check_pk(self.public_key)

    def encode(self) -> bytes:
        """``[0x00][pk: 32]``."""
        return bytes((self.ID,)) + self.public_key

    @classmethod
    def decode(cls, data: bytes) -> RoutingRequest:
        """Raises:
        BadPacket: wrong id or not exactly 33 bytes.
        """
        r = _start(data, cls.ID)
        pk = r.read(PUBLIC_KEY_SIZE)
        r.expect_end()
        return cls(pk)


@dataclass(frozen=True, slots=True)
class RoutingResponse:
    """The relay's answer: ``connection_id`` 16..255, or 0..15 (toxcore sends 0) = refused."""

    connection_id: int
    public_key: bytes
    ID: ClassVar[int] = PACKET_ROUTING_RESPONSE

    def __post_init__(self) -> None:
        _check_conn_id(self.connection_id)
        _check_pk(self.public_key)

    @property
    def refused(self) -> bool:
        """True when the relay gave no connection id."""
        return self.connection_id < NUM_RESERVED_PORTS

    def encode(self) -> bytes:
        """``[0x01][conn_id][pk: 32]``."""
        return bytes((self.ID, self.connection_id)) + self.public_key

    @classmethod
    def decode(cls, data: bytes) -> RoutingResponse:
        """Raises:
        BadPacket: wrong id or not exactly 34 bytes.
        """
        r = _start(data, cls.ID)
        conn_id = r.u8()
        pk = r.read(PUBLIC_KEY_SIZE)
        r.expect_end()
        return cls(conn_id, pk)


@dataclass(frozen=True, slots=True)
class ConnectNotification:
    """The peer on ``connection_id`` is linked: data may flow."""

    connection_id: int
    ID: ClassVar[int] = PACKET_CONNECTION_NOTIFICATION

    def __post_init__(self) -> None:
        _check_conn_id(self.connection_id)

    def encode(self) -> bytes:
        """``[0x02][conn_id]``."""
        return bytes((self.ID, self.connection_id))

    @classmethod
    def decode(cls, data: bytes) -> ConnectNotification:
        """Raises:
        BadPacket: wrong id or not exactly 2 bytes.
        """
        r = _start(data, cls.ID)
        conn_id = r.u8()
        r.expect_end()
        return cls(conn_id)


@dataclass(frozen=True, slots=True)
class DisconnectNotification:
    """C->S: forget ``connection_id``; S->C: the peer on ``connection_id`` left."""

    connection_id: int
    ID: ClassVar[int] = PACKET_DISCONNECT_NOTIFICATION

    def __post_init__(self) -> None:
        _check_conn_id(self.connection_id)

    def encode(self) -> bytes:
        """``[0x03][conn_id]``."""
        return bytes((self.ID, self.connection_id))

    @classmethod
    def decode(cls, data: bytes) -> DisconnectNotification:
        """Raises:
        BadPacket: wrong id or not exactly 2 bytes.
        """
        r = _start(data, cls.ID)
        conn_id = r.u8()
        r.expect_end()
        return cls(conn_id)


@dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive request; ``ping_id`` is an opaque 64-bit echo (senders never use 0)."""

    ping_id: int
    ID: ClassVar[int] = PACKET_PING

    def __post_init__(self) -> None:
        if not 0 <= self.ping_id < 1 << 64:
            raise ValueError("ping id must fit in 64 bits")

    def encode(self) -> bytes:
        """``[0x04][ping_id: 8]``."""
        return bytes((self.ID,)) + self.ping_id.to_bytes(8, "big")

    @classmethod
    def decode(cls, data: bytes) -> Ping:
        """Raises:
        BadPacket: wrong id or not exactly 9 bytes.
        """
        r = _start(data, cls.ID)
        ping_id = r.u64()
        r.expect_end()
        return cls(ping_id)


@dataclass(frozen=True, slots=True)
class Pong:
    """Keep-alive answer echoing a ping id; toxcore kills the connection on id 0."""

    ping_id: int
    ID: ClassVar[int] = PACKET_PONG

    def __post_init__(self) -> None:
        if not 0 < self.ping_id < 1 << 64:
            raise ValueError("pong id must be a non-zero 64-bit value")

    def encode(self) -> bytes:
        """``[0x05][ping_id: 8]``."""
        return bytes((self.ID,)) + self.ping_id.to_bytes(8, "big")

    @classmethod
    def decode(cls, data: bytes) -> Pong:
        """Raises:
        BadPacket: wrong id, not exactly 9 bytes, or ping id 0.
        """
        r = _start(data, cls.ID)
        ping_id = r.u64()
        r.expect_end()
        if ping_id == 0:
            raise BadPacket("pong with ping id 0")
        return cls(ping_id)


@dataclass(frozen=True, slots=True)
class OobSend:
    """Out-of-band data for the client whose DHT pk is ``public_key`` (1..1024 bytes)."""

    public_key: bytes
    data: bytes
    ID: ClassVar[int] = PACKET_OOB_SEND

    def __post_init__(self) -> None:
        _check_pk(self.public_key)
        if not 1 <= len(self.data) <= MAX_OOB_DATA_SIZE_BYTES:
            raise ValueError("OOB data must be 1..1024 bytes")

    def encode(self) -> bytes:
        """``[0x06][dest pk: 32][data]``."""
        return bytes((self.ID,)) + self.public_key + self.data

    @classmethod
    def decode(cls, data: bytes) -> OobSend:
        """Raises:
        BadPacket: wrong id, no data or more than 1024 bytes of data.
        """
        r = _start(data, cls.ID)
        pk = r.read(PUBLIC_KEY_SIZE)
        payload = r.rest()
        if not 1 <= len(payload) <= MAX_OOB_DATA_SIZE_BYTES:
            raise BadPacket(f"OOB data of {len(payload)} bytes (1..1024 allowed)")
        return cls(pk, payload)


@dataclass(frozen=True, slots=True)
class OobRecv:
    """Out-of-band data from the client whose DHT pk is ``public_key``."""

    public_key: bytes
    data: bytes
    ID: ClassVar[int] = PACKET_OOB_RECV

    def __post_init__(self) -> None:
        _check_pk(self.public_key)
        if not self.data:
            raise ValueError("OOB data must not be empty")

    def encode(self) -> bytes:
        """``[0x07][sender pk: 32][data]``."""
        return bytes((self.ID,)) + self.public_key + self.data

    @classmethod
    def decode(cls, data: bytes) -> OobRecv:
        """Raises:
        BadPacket: wrong id or no data.
        """
        r = _start(data, cls.ID)
        pk = r.read(PUBLIC_KEY_SIZE)
        payload = r.rest()
        if not payload:
            raise BadPacket("OOB recv without data")
        return cls(pk, payload)


@dataclass(frozen=True, slots=True)
class OnionRequest:
    """An onion request for the relay to send as node A: ``[nonce][IPP(B)][pk][box]``.

    ``payload`` is everything after the id byte (at least 159 bytes, as toxcore requires).
    """

    payload: bytes
    ID: ClassVar[int] = PACKET_ONION_REQUEST

    def __post_init__(self) -> None:
        if len(self.payload) + 1 < ONION_REQUEST_MIN_SIZE_BYTES:
            raise ValueError("onion request too short")

    @property
    def nonce(self) -> bytes:
        """The 24-byte nonce shared by the onion layers."""
        return self.payload[:NONCE_SIZE]

    @property
    def onion_data(self) -> bytes:
        """What follows the nonce: ``[IPP(B): 19][pk: 32][box(step2)]``."""
        return self.payload[NONCE_SIZE:]

    def encode(self) -> bytes:
        """``[0x08][payload]``."""
        return bytes((self.ID,)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> OnionRequest:
        """Raises:
        BadPacket: wrong id or 159 bytes or fewer in total.
        """
        r = _start(data, cls.ID)
        if len(data) < ONION_REQUEST_MIN_SIZE_BYTES:
            raise BadPacket(f"onion request of {len(data)} bytes is too short")
        return cls(r.rest())


@dataclass(frozen=True, slots=True)
class OnionResponse:
    """A raw onion response packet (0x84 or 0x86) delivered to the client."""

    payload: bytes
    ID: ClassVar[int] = PACKET_ONION_RESPONSE

    def __post_init__(self) -> None:
        if not self.payload:
            raise ValueError("onion response must not be empty")

    def encode(self) -> bytes:
        """``[0x09][packet]``."""
        return bytes((self.ID,)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> OnionResponse:
        """Raises:
        BadPacket: wrong id or empty payload.
        """
        r = _start(data, cls.ID)
        payload = r.rest()
        if not payload:
            raise BadPacket("empty onion response")
        return cls(payload)


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """0.2.18 forwarding request (new group chats); carried opaquely, never acted upon."""

    payload: bytes
    ID: ClassVar[int] = PACKET_FORWARD_REQUEST

    def encode(self) -> bytes:
        """``[0x0a][payload]``."""
        return bytes((self.ID,)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> ForwardRequest:
        """Raises:
        BadPacket: wrong id.
        """
        return cls(_start(data, cls.ID).rest())


@dataclass(frozen=True, slots=True)
class Forwarding:
    """0.2.18 forwarded response (new group chats); carried opaquely, never acted upon."""

    payload: bytes
    ID: ClassVar[int] = PACKET_FORWARDING

    def encode(self) -> bytes:
        """``[0x0b][payload]``."""
        return bytes((self.ID,)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Forwarding:
        """Raises:
        BadPacket: wrong id.
        """
        return cls(_start(data, cls.ID).rest())


@dataclass(frozen=True, slots=True)
class Data:
    """Data on routed connection ``connection_id`` (16..255): a raw net_crypto packet."""

    connection_id: int
    payload: bytes

    def __post_init__(self) -> None:
        if not NUM_RESERVED_PORTS <= self.connection_id <= 0xFF:
            raise ValueError("data connection id must be 16..255")

    def encode(self) -> bytes:
        """``[conn_id][payload]``."""
        return bytes((self.connection_id,)) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Data:
        """The payload may be empty here; cores decide what to do with that.

        Raises:
            BadPacket: empty, or a first byte below 16.
        """
        if not data:
            raise BadPacket("empty packet")
        if data[0] < NUM_RESERVED_PORTS:
            raise BadPacket(f"packet id {data[0]} is not a data connection id")
        return cls(data[0], data[1:])


Packet = (
    RoutingRequest
    | RoutingResponse
    | ConnectNotification
    | DisconnectNotification
    | Ping
    | Pong
    | OobSend
    | OobRecv
    | OnionRequest
    | OnionResponse
    | ForwardRequest
    | Forwarding
    | Data
)

_DECODERS: dict[int, type[Packet]] = {
    PACKET_ROUTING_REQUEST: RoutingRequest,
    PACKET_ROUTING_RESPONSE: RoutingResponse,
    PACKET_CONNECTION_NOTIFICATION: ConnectNotification,
    PACKET_DISCONNECT_NOTIFICATION: DisconnectNotification,
    PACKET_PING: Ping,
    PACKET_PONG: Pong,
    PACKET_OOB_SEND: OobSend,
    PACKET_OOB_RECV: OobRecv,
    PACKET_ONION_REQUEST: OnionRequest,
    PACKET_ONION_RESPONSE: OnionResponse,
    PACKET_FORWARD_REQUEST: ForwardRequest,
    PACKET_FORWARDING: Forwarding,
}


def decode_packet_untrusted(data: bytes) -> Packet:
    """Decode one frame plaintext into its packet.

    Raises:
        BadPacket: empty, reserved id 0x0c..0x0f, or a malformed packet of a known id.
    """
    if not data:
        raise BadPacket("empty packet")
    kind = data[0]
    if kind >= NUM_RESERVED_PORTS:
        return Data(kind, data[1:])
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise BadPacket(f"reserved packet id {kind:#04x}")
    return decoder.decode(data)


def _start(data: bytes, packet_id: int) -> Reader:
    r = Reader(data)
    kind = r.u8()
    if kind != packet_id:
        raise BadPacket(f"expected packet id {packet_id:#04x}, got {kind:#04x}")
    return r
