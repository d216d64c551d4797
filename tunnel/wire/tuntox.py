"""tuntox protocol v2 frames, plus our negotiated extensions (tuntox-toxvpn.md 1.4).

Every tuntox frame is ONE toxcore custom lossless packet (``tox_friend_send_lossless_packet``).
The first byte of a custom packet is its toxcore packet id and must lie in 160..191; tuntox
makes the high byte of its magic (0xA2 = 162) double as that id, so the whole custom packet,
id byte included, is the frame. Header (8 bytes, all big-endian, tuntox ``send_frame`` /
``parse_lossless_packet``)::

    offset 0  u16 magic        0xA26B (protocol v2; 0xA26A = v1, refused by tuntox)
    offset 2  u16 packet_type  see below
    offset 4  u16 connid       tunnel id, or the destination PORT in REQUESTTUNNEL
    offset 6  u16 data_length  payload length, <= 1365 (1373-byte custom packet limit - 8;
                               TCP data between two of our peers: see MAX_LARGE_CUSTOM_PACKET_BYTES)
    offset 8  payload

tuntox types and payloads (what tuntox writes):

    0x0108 PING           connid 0; any payload (tuntox's ping mode sends b"Hello")
    0x0100 PONG           connid 0; the PING payload echoed
    0x0602 REQUESTTUNNEL  connid = destination port; u32 forward_id BE + host bytes (no NUL)
    0x0610 ACKTUNNEL      connid = new tunnel id (server-chosen); u32 forward_id BE echoed
    0x0600 TCP            connid = tunnel id; stream bytes (tuntox never sends an empty one)
    0x0601 TCP_FIN        connid = tunnel id; empty; closes BOTH directions
    0x0604 DENYTUNNEL     defined by tuntox but never sent; tuntox ignores unknown types

tuntox accepts trailing bytes after ``8 + data_length`` (it only checks ``len >= 8 + len``),
but never writes any; this decoder is strict (trailing bytes are :class:`BadPacket`) so that
``encode(decode(b)) == b``. Old tuntox servers sent PONG with an uninitialised connid, so
PING/PONG keep whatever connid arrived.

Extensions, used only with peers that answered our capability offer (never with plain tuntox):

* capability exchange inside PING/PONG payloads: the client PINGs with a *caps offer*; a plain
  tuntox server echoes it verbatim (an offer comes back = plain tuntox), our server answers a
  PONG carrying a *caps answer*. Payload::

      b"\\xfftunnel" (7) | kind u8 (1 offer, 2 answer) | version u8 | flags u32 | window u32
      (further bytes are ignored: room for later versions)

* 0x0604 DENYTUNNEL  connid 0; u32 forward_id + u8 reason code + UTF-8 reason text
* 0x7A01 TUN_EOF     connid = tunnel id; empty; half-close (sender will write no more)
* 0x7A02 TUN_RESET   connid = tunnel id; u8 reason code + UTF-8 text; abort with an error
* 0x7A03 WINDOW      connid = tunnel id; u32 credit increment in bytes (> 0)
* 0x7A04 REQUESTUDP  as REQUESTTUNNEL, for a UDP association (answered by ACKTUNNEL/DENY)

* UDP datagrams travel in custom LOSSY packets (id 0xE2 = 226, in the 200..254 custom lossy
  range, never sent to plain tuntox, which registers no lossy handler)::

      [0xE2][0x6B][u16 tunnel id BE][datagram, <= 1369 bytes]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.large_lossless import MAX_LARGE_LOSSLESS_BYTES

TUNTOX_PACKET_ID = 0xA2
"""The toxcore custom lossless packet id tuntox frames travel under (= magic high byte)."""
MAGIC_V2 = 0xA26B
MAGIC_V1 = 0xA26A
HEADER_SIZE_BYTES = 8
MAX_CUSTOM_PACKET_SIZE_BYTES = 1373
"""``TOX_MAX_CUSTOM_PACKET_SIZE``: packet id byte included."""
MAX_FRAME_PAYLOAD_BYTES = MAX_CUSTOM_PACKET_SIZE_BYTES - HEADER_SIZE_BYTES  # 1365
MAX_LARGE_CUSTOM_PACKET_BYTES = MAX_LARGE_LOSSLESS_BYTES
"""TCP data frames between two of our peers that agreed large lossless packets (issue 8) may
be this long; the mux reads them, every other frame keeps the 1365-byte payload limit."""
FORWARD_ID_SIZE_BYTES = 4
MAX_HOSTNAME_BYTES = MAX_FRAME_PAYLOAD_BYTES - FORWARD_ID_SIZE_BYTES  # 1361
MAX_REASON_BYTES = 255

UDP_LOSSY_PACKET_ID = 0xE2
UDP_LOSSY_MAGIC = 0xE26B
UDP_HEADER_SIZE_BYTES = 4
MAX_UDP_PAYLOAD_BYTES = MAX_CUSTOM_PACKET_SIZE_BYTES - UDP_HEADER_SIZE_BYTES  # 1369

CAPS_MARKER = b"\xfftunnel"
CAPS_KIND_OFFER = 1
CAPS_KIND_ANSWER = 2
CAPS_VERSION = 1
CAPS_SIZE_BYTES = len(CAPS_MARKER) + 1 + 1 + 4 + 4  # 17

# [magic: u16][packet_type: u16][connid: u16][data_length: u16], big-endian
_HEADER = struct.Struct(">HHHH")
# [magic: u16][tunnel id: u16], big-endian
_UDP_HEADER = struct.Struct(">HH")


class FrameType(IntEnum):
    """``packet_type`` values: tuntox's (main.h) and our extensions (0x7Axx)."""

    PONG = 0x0100
    PING = 0x0108
    TCP = 0x0600
    TCP_FIN = 0x0601
    REQUEST_TUNNEL = 0x0602
    DENY_TUNNEL = 0x0604
    ACK_TUNNEL = 0x0610
    TUN_EOF = 0x7A01
    TUN_RESET = 0x7A02
    WINDOW = 0x7A03
    REQUEST_UDP = 0x7A04


TUNTOX_FRAME_TYPES = frozenset(
    {
        FrameType.PONG,
        FrameType.PING,
        FrameType.TCP,
        FrameType.TCP_FIN,
        FrameType.REQUEST_TUNNEL,
        FrameType.ACK_TUNNEL,
    }
)
"""The types a plain tuntox peer sends and understands."""


class CapFlag:
    """Capability bits in the caps payload ``flags`` field."""

    DENY = 1 << 0
    HALF_CLOSE = 1 << 1
    FLOW_CONTROL = 1 << 2
    UDP = 1 << 3
    ALL = DENY | HALF_CLOSE | FLOW_CONTROL | UDP


class DenyCode(IntEnum):
    """Reason codes in DENYTUNNEL and TUN_RESET."""

    UNSPECIFIED = 0
    NOT_ALLOWED = 1
    RESOLVE_FAILED = 2
    CONNECT_FAILED = 3
    TIMEOUT = 4
    LIMIT = 5
    BAD_REQUEST = 6
    UNSUPPORTED = 7
    FLOW_CONTROL = 8
    LOCAL_ERROR = 9
    OFFLINE = 10


def _u16(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} out of u16 range: {value}")


def _u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} out of u32 range: {value}")


@dataclass(frozen=True, slots=True)
class Frame:
    """A raw tuntox frame (any ``packet_type``, unknown ones included)."""

    frame_type: int
    connid: int
    payload: bytes

    def __post_init__(self) -> None:
        _u16("frame_type", self.frame_type)
        _u16("connid", self.connid)
        if len(self.payload) > MAX_FRAME_PAYLOAD_BYTES:
            raise ValueError(f"payload of {len(self.payload)} bytes exceeds 1365")

    def encode(self) -> bytes:
        """The whole custom packet (starting with the 0xA2 id byte)."""
        header = _HEADER.pack(MAGIC_V2, self.frame_type, self.connid, len(self.payload))
        return header + self.payload

    @classmethod
    def decode(cls, data: bytes) -> Frame:
        """Parse the header of one custom lossless packet.

        Raises:
            BadPacket: shorter than 8 bytes, wrong magic (v1 included), declared length over
                1365 or different from the bytes present.
        """
        reader = Reader(data)
        magic = reader.u16()
        if magic != MAGIC_V2:
            if magic == MAGIC_V1:
                raise BadPacket("tuntox protocol version 1 is not supported")
            raise BadPacket(f"bad tuntox magic 0x{magic:04x}")
        frame_type = reader.u16()
        connid = reader.u16()
        length = reader.u16()
        if length > MAX_FRAME_PAYLOAD_BYTES:
            raise BadPacket(f"declared payload length {length} exceeds 1365")
        payload = reader.read(length)
        reader.expect_end()
        return cls(frame_type, connid, payload)


@dataclass(frozen=True, slots=True)
class Ping:
    """PING: answered by a PONG carrying the same payload."""

    payload: bytes = b"Hello"
    connid: int = 0

    def to_frame(self) -> Frame:
        return Frame(FrameType.PING, self.connid, self.payload)

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class Pong:
    """PONG: the echo of a PING payload."""

    payload: bytes
    connid: int = 0

    def to_frame(self) -> Frame:
        return Frame(FrameType.PONG, self.connid, self.payload)

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class RequestTunnel:
    """REQUESTTUNNEL (or our REQUESTUDP when ``udp``): connid carries the destination port."""

    port: int
    forward_id: int
    host: bytes
    udp: bool = False

    def __post_init__(self) -> None:
        _u16("port", self.port)
        _u32("forward_id", self.forward_id)
        if len(self.host) > MAX_HOSTNAME_BYTES:
            raise ValueError("host name too long for one frame")

    def to_frame(self) -> Frame:
        kind = FrameType.REQUEST_UDP if self.udp else FrameType.REQUEST_TUNNEL
        return Frame(kind, self.port, self.forward_id.to_bytes(4, "big") + self.host)

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class AckTunnel:
    """ACKTUNNEL: the server's new tunnel id (connid) for the client's ``forward_id``."""

    tunnel_id: int
    forward_id: int

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)
        _u32("forward_id", self.forward_id)

    def to_frame(self) -> Frame:
        return Frame(FrameType.ACK_TUNNEL, self.tunnel_id, self.forward_id.to_bytes(4, "big"))

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class TcpData:
    """TCP: stream bytes for one tunnel."""

    tunnel_id: int
    data: bytes

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)

    def to_frame(self) -> Frame:
        return Frame(FrameType.TCP, self.tunnel_id, self.data)

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class TcpFin:
    """TCP_FIN: the tunnel is gone in both directions."""

    tunnel_id: int

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)

    def to_frame(self) -> Frame:
        return Frame(FrameType.TCP_FIN, self.tunnel_id, b"")

    def encode(self) -> bytes:
        return self.to_frame().encode()


def _reason_bytes(reason: str) -> bytes:
    raw = reason.encode("utf-8")[:MAX_REASON_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")


@dataclass(frozen=True, slots=True)
class DenyTunnel:
    """Extension DENYTUNNEL: the request ``forward_id`` was refused or failed."""

    forward_id: int
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        _u32("forward_id", self.forward_id)
        if not 0 <= self.code <= 0xFF:
            raise ValueError("code out of u8 range")
        if len(self.reason.encode("utf-8")) > MAX_REASON_BYTES:
            object.__setattr__(self, "reason", _reason_bytes(self.reason).decode("utf-8"))

    def to_frame(self) -> Frame:
        payload = self.forward_id.to_bytes(4, "big") + bytes([self.code])
        return Frame(FrameType.DENY_TUNNEL, 0, payload + self.reason.encode("utf-8"))

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class TunnelEof:
    """Extension TUN_EOF: the sender will write no more on this tunnel (half-close)."""

    tunnel_id: int

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)

    def to_frame(self) -> Frame:
        return Frame(FrameType.TUN_EOF, self.tunnel_id, b"")

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class TunnelReset:
    """Extension TUN_RESET: the tunnel is aborted with an error."""

    tunnel_id: int
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)
        if not 0 <= self.code <= 0xFF:
            raise ValueError("code out of u8 range")
        if len(self.reason.encode("utf-8")) > MAX_REASON_BYTES:
            object.__setattr__(self, "reason", _reason_bytes(self.reason).decode("utf-8"))

    def to_frame(self) -> Frame:
        payload = bytes([self.code]) + self.reason.encode("utf-8")
        return Frame(FrameType.TUN_RESET, self.tunnel_id, payload)

    def encode(self) -> bytes:
        return self.to_frame().encode()


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """Extension WINDOW: the receiver grants ``increment`` more bytes of send credit."""

    tunnel_id: int
    increment: int

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)
        _u32("increment", self.increment)
        if self.increment == 0:
            raise ValueError("a window increment must be positive")

    def to_frame(self) -> Frame:
        return Frame(FrameType.WINDOW, self.tunnel_id, self.increment.to_bytes(4, "big"))

    def encode(self) -> bytes:
        return self.to_frame().encode()


TypedFrame = (
    Ping
    | Pong
    | RequestTunnel
    | AckTunnel
    | TcpData
    | TcpFin
    | DenyTunnel
    | TunnelEof
    | TunnelReset
    | WindowUpdate
)


def _reason_untrusted(raw: bytes) -> str:
    if len(raw) > MAX_REASON_BYTES:
        raise BadPacket("reason text too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPacket("reason text is not UTF-8") from exc


def _expect_empty(frame: Frame) -> None:
    if frame.payload:
        raise BadPacket(f"frame type 0x{frame.frame_type:04x} must have an empty payload")


def typed_frame_untrusted(frame: Frame) -> TypedFrame | Frame:
    """Interpret a raw frame by type; unknown types come back as the raw :class:`Frame`.

    Raises:
        BadPacket: a known type whose payload has the wrong shape.
    """
    kind, connid, payload = frame.frame_type, frame.connid, frame.payload
    if kind == FrameType.PING:
        return Ping(payload, connid)
    if kind == FrameType.PONG:
        return Pong(payload, connid)
    if kind == FrameType.TCP:
        return TcpData(connid, payload)
    if kind == FrameType.TCP_FIN:
        _expect_empty(frame)
        return TcpFin(connid)
    if kind in (FrameType.REQUEST_TUNNEL, FrameType.REQUEST_UDP):
        if len(payload) < FORWARD_ID_SIZE_BYTES:
            raise BadPacket("tunnel request shorter than its forward id")
        forward_id = int.from_bytes(payload[:4], "big")
        return RequestTunnel(connid, forward_id, payload[4:], kind == FrameType.REQUEST_UDP)
    if kind == FrameType.ACK_TUNNEL:
        if len(payload) != FORWARD_ID_SIZE_BYTES:
            raise BadPacket(f"ACKTUNNEL payload of {len(payload)} bytes, expected 4")
        return AckTunnel(connid, int.from_bytes(payload, "big"))
    if kind == FrameType.DENY_TUNNEL:
        if connid != 0:
            raise BadPacket("DENYTUNNEL with a non-zero connid")
        if len(payload) < FORWARD_ID_SIZE_BYTES + 1:
            raise BadPacket("DENYTUNNEL too short")
        reason = _reason_untrusted(payload[5:])
        return DenyTunnel(int.from_bytes(payload[:4], "big"), payload[4], reason)
    if kind == FrameType.TUN_EOF:
        _expect_empty(frame)
        return TunnelEof(connid)
    if kind == FrameType.TUN_RESET:
        if not payload:
            raise BadPacket("TUN_RESET without a reason code")
        return TunnelReset(connid, payload[0], _reason_untrusted(payload[1:]))
    if kind == FrameType.WINDOW:
        if len(payload) != 4:
            raise BadPacket(f"WINDOW payload of {len(payload)} bytes, expected 4")
        increment = int.from_bytes(payload, "big")
        if increment == 0:
            raise BadPacket("WINDOW with a zero increment")
        return WindowUpdate(connid, increment)
    return frame


def decode_frame_untrusted(data: bytes) -> TypedFrame | Frame:
    """Decode one custom lossless packet into a typed frame (raw :class:`Frame` if unknown).

    Raises:
        BadPacket: anything malformed (see :meth:`Frame.decode` and :func:`typed_frame_untrusted`).
    """
    return typed_frame_untrusted(Frame.decode(data))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one of our peers supports, carried in a caps offer or answer."""

    flags: int = CapFlag.ALL
    window_bytes: int = 1024 * 1024
    version: int = CAPS_VERSION

    def __post_init__(self) -> None:
        _u32("flags", self.flags)
        _u32("window_bytes", self.window_bytes)
        if not 0 <= self.version <= 0xFF:
            raise ValueError("version out of u8 range")

    def payload(self, kind: int) -> bytes:
        """The PING (offer) or PONG (answer) payload carrying these capabilities."""
        return (
            CAPS_MARKER
            + bytes([kind, self.version])
            + self.flags.to_bytes(4, "big")
            + self.window_bytes.to_bytes(4, "big")
        )

    def has(self, flag: int) -> bool:
        return self.flags & flag == flag


def caps_untrusted(payload: bytes) -> tuple[int, Capabilities] | None:
    """``(kind, caps)`` if a PING/PONG payload is a caps offer/answer; ``None`` if it is not.

    A payload that starts with the marker but is malformed is :class:`BadPacket`.

    Raises:
        BadPacket: truncated caps payload or unknown kind.
    """
    if not payload.startswith(CAPS_MARKER):
        return None
    reader = Reader(payload, len(CAPS_MARKER))
    kind = reader.u8()
    if kind not in (CAPS_KIND_OFFER, CAPS_KIND_ANSWER):
        raise BadPacket(f"unknown caps kind {kind}")
    version = reader.u8()
    flags = reader.u32()
    window = reader.u32()
    return kind, Capabilities(flags, window, version)


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One forwarded UDP datagram in a custom lossy packet (extension)."""

    tunnel_id: int
    data: bytes

    def __post_init__(self) -> None:
        _u16("tunnel_id", self.tunnel_id)
        if len(self.data) > MAX_UDP_PAYLOAD_BYTES:
            raise ValueError(f"datagram of {len(self.data)} bytes exceeds 1369")

    def encode(self) -> bytes:
        return _UDP_HEADER.pack(UDP_LOSSY_MAGIC, self.tunnel_id) + self.data

    @classmethod
    def decode(cls, data: bytes) -> UdpDatagram:
        """Parse one custom lossy packet.

        Raises:
            BadPacket: shorter than 4 bytes, wrong id/magic, or longer than 1373 bytes.
        """
        if len(data) > MAX_CUSTOM_PACKET_SIZE_BYTES:
            raise BadPacket("lossy packet longer than 1373 bytes")
        reader = Reader(data)
        magic = reader.u16()
        if magic != UDP_LOSSY_MAGIC:
            raise BadPacket(f"bad UDP datagram magic 0x{magic:04x}")
        return cls(reader.u16(), reader.rest())
