"""net_crypto packets: cookie request/response, cookie, handshake, data (tox-protocol.md 6.2-6.7).

Outer packets (first byte = UDP packet kind; the same bytes travel inside TCP relay frames)::

    cookie request  0x18  [kind:1][sender DHT pk:32][nonce:24][box(72 -> 88)]      145 bytes
    cookie response 0x19  [kind:1][nonce:24][box(120 -> 136)]                      161 bytes
    handshake       0x1a  [kind:1][cookie:112][nonce:24][box(232 -> 248)]          385 bytes
    data            0x1b  [kind:1][nonce low 16 bits:2][box(plain)]              28..1400 bytes

Plaintexts::

    cookie request   [sender real pk:32][padding:32 (zeros, ignored)][echo id:8]
    cookie response  [cookie:112][echo id:8]
    cookie           [cookie nonce:24][box(cookie key, [time:8][real pk:32][DHT pk:32])]
    handshake        [base nonce:24][session pk:32][sha512(leading cookie):64][other cookie:112]
    data             [buffer start:4][packet number:4][zero padding][packet id:1][data]

The request packet (id 1) body is the compact hole list of 6.7; :func:`encode_request` and
:func:`decode_request_untrusted` convert between it and offsets from ``buffer_start``.
Boxes are opened by the caller (``tunnel.crypto.decrypt_untrusted``); the codecs here only split
and join bytes and raise nothing but :class:`BadPacket`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunnel.crypto.box import MAC_SIZE
from tunnel.crypto.keys import PUBLIC_KEY_SIZE
from tunnel.crypto.nonce import NONCE_SIZE
from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader

COOKIE_REQUEST_KIND = 0x18
COOKIE_RESPONSE_KIND = 0x19
HANDSHAKE_KIND = 0x1A
DATA_KIND = 0x1B

ECHO_ID_SIZE = 8
COOKIE_PLAIN_SIZE = 8 + 2 * PUBLIC_KEY_SIZE  # 72
COOKIE_SIZE = NONCE_SIZE + COOKIE_PLAIN_SIZE + MAC_SIZE  # 112
COOKIE_REQUEST_PLAIN_SIZE = 2 * PUBLIC_KEY_SIZE + ECHO_ID_SIZE  # 72
COOKIE_REQUEST_SIZE = 1 + PUBLIC_KEY_SIZE + NONCE_SIZE + COOKIE_REQUEST_PLAIN_SIZE + MAC_SIZE
COOKIE_RESPONSE_PLAIN_SIZE = COOKIE_SIZE + ECHO_ID_SIZE  # 120
COOKIE_RESPONSE_SIZE = 1 + NONCE_SIZE + COOKIE_RESPONSE_PLAIN_SIZE + MAC_SIZE  # 161
HASH_SIZE = 64
HANDSHAKE_PLAIN_SIZE = NONCE_SIZE + PUBLIC_KEY_SIZE + HASH_SIZE + COOKIE_SIZE  # 232
HANDSHAKE_SIZE = 1 + COOKIE_SIZE + NONCE_SIZE + HANDSHAKE_PLAIN_SIZE + MAC_SIZE  # 385

MAX_CRYPTO_PACKET_SIZE_BYTES = 1400
MAX_CRYPTO_DATA_SIZE_BYTES = 1373  # packet id + data
CRYPTO_MAX_PADDING_BYTES = 8
DATA_HEADER_SIZE = 8  # buffer_start + packet_number
MIN_DATA_PACKET_SIZE = 1 + 2 + MAC_SIZE + DATA_HEADER_SIZE + 1  # 28: one id byte

PACKET_ID_PADDING = 0
PACKET_ID_REQUEST = 1
PACKET_ID_KILL = 2
PACKET_ID_LOSSLESS_START = 16
PACKET_ID_LOSSLESS_END = 191
PACKET_ID_LOSSY_START = 192
PACKET_ID_LOSSY_END = 254

_U32 = 0xFFFFFFFF


def _check(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


# ----------------------------------------------------------------------------- cookie request


@dataclass(frozen=True, slots=True)
class CookieRequest:
    """Cookie request 0x18: ``[0x18][sender DHT pk:32][nonce:24][box:88]`` (145 bytes)."""

    sender_dht_pk: bytes
    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check("sender_dht_pk", self.sender_dht_pk, PUBLIC_KEY_SIZE)
        _check("nonce", self.nonce, NONCE_SIZE)
        _check("box", self.box, COOKIE_REQUEST_PLAIN_SIZE + MAC_SIZE)

    def encode(self) -> bytes:
        """The 145-byte packet."""
        return bytes([COOKIE_REQUEST_KIND]) + self.sender_dht_pk + self.nonce + self.box

    @classmethod
    def decode(cls, data: bytes) -> CookieRequest:
        """Split a cookie request.

        Raises:
            BadPacket: wrong kind byte or length.
        """
        if len(data) != COOKIE_REQUEST_SIZE or data[0] != COOKIE_REQUEST_KIND:
            raise BadPacket("not a 145-byte cookie request")
        return cls(data[1:33], data[33:57], data[57:])


@dataclass(frozen=True, slots=True)
class CookieRequestPlain:
    """``[sender real pk:32][padding:32][echo id:8]``; the padding is sent as zeros, ignored."""

    real_pk: bytes
    echo_id: bytes

    def __post_init__(self) -> None:
        _check("real_pk", self.real_pk, PUBLIC_KEY_SIZE)
        _check("echo_id", self.echo_id, ECHO_ID_SIZE)

    def encode(self) -> bytes:
        """The 72-byte plaintext."""
        return self.real_pk + bytes(PUBLIC_KEY_SIZE) + self.echo_id

    @classmethod
    def decode(cls, data: bytes) -> CookieRequestPlain:
        """Parse the opened box.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != COOKIE_REQUEST_PLAIN_SIZE:
            raise BadPacket("cookie request plaintext must be 72 bytes")
        return cls(data[:32], data[64:72])


# ----------------------------------------------------------------------------- cookie response


@dataclass(frozen=True, slots=True)
class CookieResponse:
    """Cookie response 0x19: ``[0x19][nonce:24][box:136]`` (161 bytes)."""

    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check("nonce", self.nonce, NONCE_SIZE)
        _check("box", self.box, COOKIE_RESPONSE_PLAIN_SIZE + MAC_SIZE)

    def encode(self) -> bytes:
        """The 161-byte packet."""
        return bytes([COOKIE_RESPONSE_KIND]) + self.nonce + self.box

    @classmethod
    def decode(cls, data: bytes) -> CookieResponse:
        """Split a cookie response.

        Raises:
            BadPacket: wrong kind byte or length.
        """
        if len(data) != COOKIE_RESPONSE_SIZE or data[0] != COOKIE_RESPONSE_KIND:
            raise BadPacket("not a 161-byte cookie response")
        return cls(data[1:25], data[25:])


@dataclass(frozen=True, slots=True)
class CookieResponsePlain:
    """``[cookie:112][echo id:8]``."""

    cookie: bytes
    echo_id: bytes

    def __post_init__(self) -> None:
        _check("cookie", self.cookie, COOKIE_SIZE)
        _check("echo_id", self.echo_id, ECHO_ID_SIZE)

    def encode(self) -> bytes:
        """The 120-byte plaintext."""
        return self.cookie + self.echo_id

    @classmethod
    def decode(cls, data: bytes) -> CookieResponsePlain:
        """Parse the opened box.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != COOKIE_RESPONSE_PLAIN_SIZE:
            raise BadPacket("cookie response plaintext must be 120 bytes")
        return cls(data[:COOKIE_SIZE], data[COOKIE_SIZE:])


# ----------------------------------------------------------------------------- cookie


@dataclass(frozen=True, slots=True)
class Cookie:
    """A cookie: ``[nonce:24][box(cookie key, 72 -> 88)]`` (112 bytes, opaque to the peer)."""

    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check("nonce", self.nonce, NONCE_SIZE)
        _check("box", self.box, COOKIE_PLAIN_SIZE + MAC_SIZE)

    def encode(self) -> bytes:
        """The 112 bytes."""
        return self.nonce + self.box

    @classmethod
    def decode(cls, data: bytes) -> Cookie:
        """Split a cookie.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != COOKIE_SIZE:
            raise BadPacket("cookie must be 112 bytes")
        return cls(data[:NONCE_SIZE], data[NONCE_SIZE:])


@dataclass(frozen=True, slots=True)
class CookiePlain:
    """``[time:8][real pk:32][DHT pk:32]``; ``time`` is our own seconds clock (opaque to peers)."""

    time_s: int
    real_pk: bytes
    dht_pk: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.time_s < 1 << 64:
            raise ValueError("time must fit in 64 bits")
        _check("real_pk", self.real_pk, PUBLIC_KEY_SIZE)
        _check("dht_pk", self.dht_pk, PUBLIC_KEY_SIZE)

    def encode(self) -> bytes:
        """The 72-byte plaintext."""
        return self.time_s.to_bytes(8, "big") + self.real_pk + self.dht_pk

    @classmethod
    def decode(cls, data: bytes) -> CookiePlain:
        """Parse an opened cookie.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != COOKIE_PLAIN_SIZE:
            raise BadPacket("cookie plaintext must be 72 bytes")
        return cls(int.from_bytes(data[:8], "big"), data[8:40], data[40:72])


# ----------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class Handshake:
    """Handshake 0x1a: ``[0x1a][cookie:112][nonce:24][box:248]`` (385 bytes)."""

    cookie: bytes
    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check("cookie", self.cookie, COOKIE_SIZE)
        _check("nonce", self.nonce, NONCE_SIZE)
        _check("box", self.box, HANDSHAKE_PLAIN_SIZE + MAC_SIZE)

    def encode(self) -> bytes:
        """The 385-byte packet."""
        return bytes([HANDSHAKE_KIND]) + self.cookie + self.nonce + self.box

    @classmethod
    def decode(cls, data: bytes) -> Handshake:
        """Split a handshake.

        Raises:
            BadPacket: wrong kind byte or length.
        """
        if len(data) != HANDSHAKE_SIZE or data[0] != HANDSHAKE_KIND:
            raise BadPacket("not a 385-byte handshake")
        end_cookie = 1 + COOKIE_SIZE
        return cls(data[1:end_cookie], data[end_cookie : end_cookie + NONCE_SIZE], data[137:])


@dataclass(frozen=True, slots=True)
class HandshakePlain:
    """``[base nonce:24][session pk:32][sha512(leading cookie):64][other cookie:112]``."""

    base_nonce: bytes
    session_pk: bytes
    cookie_hash: bytes
    other_cookie: bytes

    def __post_init__(self) -> None:
        _check("base_nonce", self.base_nonce, NONCE_SIZE)
        _check("session_pk", self.session_pk, PUBLIC_KEY_SIZE)
        _check("cookie_hash", self.cookie_hash, HASH_SIZE)
        _check("other_cookie", self.other_cookie, COOKIE_SIZE)

    def encode(self) -> bytes:
        """The 232-byte plaintext."""
        return self.base_nonce + self.session_pk + self.cookie_hash + self.other_cookie

    @classmethod
    def decode(cls, data: bytes) -> HandshakePlain:
        """Parse the opened box.

        Raises:
            BadPacket: wrong length.
        """
        if len(data) != HANDSHAKE_PLAIN_SIZE:
            raise BadPacket("handshake plaintext must be 232 bytes")
        return cls(data[:24], data[24:56], data[56:120], data[120:232])


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True)
class DataPacket:
    """Data 0x1b: ``[0x1b][nonce low:2][box]``, 28..1400 bytes."""

    nonce_low: int
    box: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.nonce_low <= 0xFFFF:
            raise ValueError("nonce_low must fit in 16 bits")
        if not MIN_DATA_PACKET_SIZE - 3 <= len(self.box) <= MAX_CRYPTO_PACKET_SIZE_BYTES - 3:
            raise ValueError("box length out of range")

    def encode(self) -> bytes:
        """The packet."""
        return bytes([DATA_KIND]) + self.nonce_low.to_bytes(2, "big") + self.box

    @classmethod
    def decode(cls, data: bytes) -> DataPacket:
        """Split a data packet.

        Raises:
            BadPacket: wrong kind byte or a length outside 28..1400.
        """
        if not MIN_DATA_PACKET_SIZE <= len(data) <= MAX_CRYPTO_PACKET_SIZE_BYTES:
            raise BadPacket(f"data packet of {len(data)} bytes")
        if data[0] != DATA_KIND:
            raise BadPacket("not a data packet")
        return cls(int.from_bytes(data[1:3], "big"), data[3:])


def padding_size(payload_size: int) -> int:
    """Zero bytes toxcore puts between the header and ``[packet id][data]`` of this size."""
    return (MAX_CRYPTO_DATA_SIZE_BYTES - payload_size) % CRYPTO_MAX_PADDING_BYTES


@dataclass(frozen=True, slots=True)
class DataPlain:
    """The opened data box: ``[buffer start:4][packet number:4][padding][id:1][data]``.

    ``payload`` is ``[packet id][data]`` (1..1373 bytes, id non-zero).
    """

    buffer_start: int
    packet_number: int
    payload: bytes

    def __post_init__(self) -> None:
        if not (0 <= self.buffer_start <= _U32 and 0 <= self.packet_number <= _U32):
            raise ValueError("buffer_start and packet_number are 32-bit")
        if not 1 <= len(self.payload) <= MAX_CRYPTO_DATA_SIZE_BYTES or self.payload[0] == 0:
            raise ValueError("payload must be 1..1373 bytes starting with a non-zero id")

    @property
    def packet_id(self) -> int:
        """The first payload byte."""
        return self.payload[0]

    def encode(self) -> bytes:
        """The plaintext, with toxcore's padding."""
        return (
            self.buffer_start.to_bytes(4, "big")
            + self.packet_number.to_bytes(4, "big")
            + bytes(padding_size(len(self.payload)))
            + self.payload
        )

    @classmethod
    def decode(cls, data: bytes) -> DataPlain:
        """Parse an opened data box; all zero bytes after the header are skipped as padding.

        Raises:
            BadPacket: shorter than the header, nothing but padding, or payload too long.
        """
        reader = Reader(data)
        buffer_start = reader.u32()
        packet_number = reader.u32()
        body = reader.rest().lstrip(b"\x00")
        if not body:
            raise BadPacket("data packet without a packet id")
        if len(body) > MAX_CRYPTO_DATA_SIZE_BYTES:
            raise BadPacket("data payload too long")
        return cls(buffer_start, packet_number, body)


# ----------------------------------------------------------------------------- request packet


def encode_request(missing: Sequence[int], span: int) -> bytes:
    """The request packet ``[0x01][hole list]`` for a receive window of ``span`` positions.

    ``missing`` are the sorted offsets (from the receive ``buffer_start``) of the empty slots in
    ``[0, span)``. Every other position counts as received. A non-zero byte is the distance
    from the previous requested position (the first from offset -1); a zero byte means 255
    received positions passed. Output is truncated to 1373 bytes, as toxcore does.
    """
    out = bytearray([PACKET_ID_REQUEST])
    limit = MAX_CRYPTO_DATA_SIZE_BYTES
    n = 1
    pos = 0

    def filled(count: int) -> bool:
        # Walk `count` received positions; a zero byte each time n would pass 255.
        nonlocal n
        while count > 0:
            to_255 = 255 - n
            if count > to_255:
                out.append(0)
                if len(out) >= limit:
                    return False
                count -= to_255 + 1
                n = 1
            else:
                n += count
                count = 0
        return True

    for offset in missing:
        if offset < pos or offset >= span:
            raise ValueError("missing offsets must be sorted, unique and inside the span")
        if not filled(offset - pos):
            return bytes(out)
        out.append(n)
        if len(out) >= limit:
            return bytes(out)
        n = 1
        pos = offset + 1
    filled(span - pos)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class RequestReport:
    """What a request packet says about our send window.

    Offsets are from our send ``buffer_start`` (which the packet's ``buffer_start`` has just
    set). ``missing`` lists requested offsets; every other offset below ``covered`` reached
    the peer; nothing is known about offsets at or beyond ``covered``.
    """

    missing: tuple[int, ...]
    covered: int


def decode_request_untrusted(body: bytes, span: int) -> RequestReport:
    """Decode a request packet body (after the id byte) against a send window of ``span``.

    Every byte sequence is valid (toxcore's zero-byte check can never fail: its running
    count restarts at 1 after every byte, so it always meets a non-zero byte before 255).
    Raises nothing; named ``_untrusted`` because its input comes from the network.
    """
    missing: list[int] = []
    pos = 0
    for byte in body:
        if pos >= span:
            break
        if byte == 0:
            pos += 255  # 255 received positions
            continue
        at = pos + byte - 1
        if at >= span:
            pos = span
            break
        missing.append(at)
        pos = at + 1
    return RequestReport(tuple(missing), min(pos, span))
