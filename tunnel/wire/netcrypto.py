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

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tunnel.crypto.box import MAC_SIZE
from tunnel.crypto.keys import PUBLIC_KEY_SIZE
from tunnel.crypto.nonce import NONCE_SIZE
from tunnel.errors import BadPacket

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
# [buffer_start: u32 BE][packet_number: u32 BE], the data plaintext header
_DATA_HEADER = struct.Struct(">II")
_PADDING = [bytes((MAX_CRYPTO_DATA_SIZE_BYTES - n) % CRYPTO_MAX_PADDING_BYTES) for n in range(1374)]


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
        return encode_data_packet(self.nonce_low, self.box)

    @classmethod
    def decode(cls, data: bytes) -> DataPacket:
        """Split a data packet.

        Raises:
            BadPacket: wrong kind byte or a length outside 28..1400.
        """
        return cls(*split_data_packet_untrusted(data))


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
        return encode_data_plain(self.buffer_start, self.packet_number, self.payload)

    @classmethod
    def decode(cls, data: bytes) -> DataPlain:
        """Parse an opened data box; all zero bytes after the header are skipped as padding.

        Raises:
            BadPacket: shorter than the header, nothing but padding, or payload too long.
        """
        return cls(*decode_data_plain_untrusted(data))


def split_data_packet_untrusted(data: bytes) -> tuple[int, bytes]:
    """``(nonce_low, box)`` of a data packet (the hot path of :meth:`DataPacket.decode`).

    Raises:
        BadPacket: wrong kind byte or a length outside 28..1400.
    """
    if not MIN_DATA_PACKET_SIZE <= len(data) <= MAX_CRYPTO_PACKET_SIZE_BYTES:
        raise BadPacket(f"data packet of {len(data)} bytes")
    if data[0] != DATA_KIND:
        raise BadPacket("not a data packet")
    return (data[1] << 8) | data[2], data[3:]


def encode_data_packet(nonce_low: int, box: bytes) -> bytes:
    """``[0x1b][nonce_low:2][box]`` (the hot path of :meth:`DataPacket.encode`)."""
    return bytes((DATA_KIND, (nonce_low >> 8) & 0xFF, nonce_low & 0xFF)) + box


def encode_data_plain(buffer_start: int, packet_number: int, payload: bytes) -> bytes:
    """``[buffer_start][packet_number][padding][payload]`` for a valid 1..1373-byte payload."""
    return (
        _DATA_HEADER.pack(buffer_start & _U32, packet_number & _U32)
        + _PADDING[len(payload)]
        + payload
    )


def decode_data_plain_untrusted(data: bytes) -> tuple[int, int, bytes]:
    """``(buffer_start, packet_number, payload)``; zero bytes after the header are padding.

    Raises:
        BadPacket: shorter than the header, nothing but padding, or payload too long.
    """
    if len(data) < DATA_HEADER_SIZE:
        raise BadPacket("data plaintext shorter than its header")
    buffer_start, packet_number = _DATA_HEADER.unpack_from(data)
    body = data[DATA_HEADER_SIZE:].lstrip(b"\x00")
    if not body:
        raise BadPacket("data packet without a packet id")
    if len(body) > MAX_CRYPTO_DATA_SIZE_BYTES:
        raise BadPacket("data payload too long")
    return buffer_start, packet_number, body


# ----------------------------------------------------------------------------- request packet


def encode_request(missing: Sequence[int], span: int) -> bytes:
    """The request packet ``[0x01][hole list]`` for a receive window of ``span`` positions.

    ``missing`` are the sorted offsets (from the receive ``buffer_start``) of the empty slots in
    ``[0, span)``. Every other position counts as received. A non-zero byte is the distance
    from the previous requested position (the first from offset -1); a zero byte means 255
    received positions passed. Output is truncated to 1373 bytes, as toxcore does.
    """
    runs: list[tuple[int, int]] = []
    for offset in missing:
        if runs and offset == runs[-1][1]:
            runs[-1] = (runs[-1][0], offset + 1)
        else:
            if (runs and offset < runs[-1][1]) or offset < 0:
                raise ValueError("missing offsets must be sorted, unique and inside the span")
            runs.append((offset, offset + 1))
    return encode_request_runs(runs, span)


def missing_runs(
    start: int, end: int, received: Iterable[int], max_holes: int
) -> list[tuple[int, int]]:
    """The empty slots of a receive window ``[start, end)`` as ``[a, b)`` runs of offsets from
    ``start`` (for :func:`encode_request_runs`): every position not in ``received`` (the
    packets held above ``start``), stopping once ``max_holes`` holes are listed."""
    span = end - start
    runs: list[tuple[int, int]] = []
    if span <= 0:
        return runs
    pos = start
    holes = 0
    for have in sorted(received):
        if have > pos:
            runs.append((pos - start, have - start))
            holes += have - pos
            if holes >= max_holes:
                return runs
        pos = have + 1
    if end > pos:
        runs.append((pos - start, span))
    return runs


def encode_request_runs(runs: Sequence[tuple[int, int]], span: int) -> bytes:
    """:func:`encode_request` with the holes given as sorted ``[start, end)`` runs."""
    out = bytearray([PACKET_ID_REQUEST])
    limit = MAX_CRYPTO_DATA_SIZE_BYTES
    n = 1
    pos = 0
    for start, end in runs:
        if start < pos or end <= start or end > span:
            raise ValueError("missing offsets must be sorted, unique and inside the span")
        # Received positions pos..start-1: a zero byte each time the count would pass 255.
        count = start - pos
        if count > 255 - n:
            count -= 256 - n
            zeros = 1 + count // 255
            out += bytes(zeros)
            n = 1 + count % 255
        else:
            n += count
        if len(out) >= limit:
            return bytes(out[:limit])
        # The run itself: its first hole at distance n, then one byte of 1 per further hole.
        out.append(n)
        out += b"\x01" * (end - start - 1)
        n = 1
        pos = end
        if len(out) >= limit:
            return bytes(out[:limit])
    count = span - pos
    if count > 255 - n:
        count -= 256 - n
        out += bytes(1 + count // 255)
    return bytes(out[:limit])


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
