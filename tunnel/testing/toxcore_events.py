"""Events and errors of :class:`tunnel.testing.toxcore.ToxPeer` (real c-toxcore callbacks).

One frozen dataclass per ``tox_callback_*`` the harness registers; ``at`` is the
``time.monotonic()`` when the callback ran (not compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnel.testing.libtoxcore import Connection, LogLevel, MessageType


class ToxError(RuntimeError):
    """A toxcore API call failed; ``code_name`` is the ``TOX_ERR_*`` constant."""

    def __init__(self, function: str, code: int, code_name: str, detail: str = "") -> None:
        self.function = function
        self.code = code
        self.code_name = code_name
        self.detail = detail
        suffix = f": {detail}" if detail else ""
        super().__init__(f"{function} failed with {code_name} ({code}){suffix}")

    def __reduce__(self) -> tuple[type[ToxError], tuple[str, int, str, str]]:
        return (ToxError, (self.function, self.code, self.code_name, self.detail))


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SelfConnectionStatus:
    """``tox_callback_self_connection_status`` (TCP even on an all-loopback UDP DHT)."""

    status: Connection
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendRequest:
    """``tox_callback_friend_request``."""

    public_key: bytes
    message: bytes
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendConnectionStatus:
    """``tox_callback_friend_connection_status``."""

    friend: int
    status: Connection
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendMessage:
    """``tox_callback_friend_message`` (the text is raw UTF-8 bytes)."""

    friend: int
    type: MessageType
    message: bytes
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendLosslessPacket:
    """``tox_callback_friend_lossless_packet``: ``data[0]`` is the packet id (160-191)."""

    friend: int
    data: bytes
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendLossyPacket:
    """``tox_callback_friend_lossy_packet``: ``data[0]`` is the packet id (200-254)."""

    friend: int
    data: bytes
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendReadReceipt:
    """``tox_callback_friend_read_receipt``: the message with this id was acked."""

    friend: int
    message_id: int
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FriendName:
    """``tox_callback_friend_name``."""

    friend: int
    name: bytes
    at: float = field(default=0.0, compare=False)


ToxEvent = (
    SelfConnectionStatus
    | FriendRequest
    | FriendConnectionStatus
    | FriendMessage
    | FriendLosslessPacket
    | FriendLossyPacket
    | FriendReadReceipt
    | FriendName
)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One message from toxcore's log callback (INFO and above on the Debian build)."""

    level: LogLevel
    file: str
    line: int
    func: str
    message: str


@dataclass(frozen=True, slots=True)
class ToxPeerStats:
    """Counters kept even when packets are not recorded as events."""

    iterations: int
    lossless_packets: int
    lossless_bytes: int
    lossy_packets: int
    lossy_bytes: int
    lossless_first_at: float = 0.0
    """``time.monotonic()`` of the first / last custom packet received (0 if none); the
    monotonic clock is system-wide, so values compare across processes."""
    lossless_last_at: float = 0.0
    lossy_first_at: float = 0.0
    lossy_last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PumpResult:
    """What :meth:`ToxPeer.pump_lossless` / ``pump_lossy`` sent."""

    sent: int
    sendq_hits: int
    """How often toxcore answered SENDQ (queue full or rate limit reached)."""
    started_at: float
    finished_at: float
    error: str | None = None
    """The ``TOX_ERR_FRIEND_CUSTOM_PACKET_*`` name that stopped the pump early, if any."""

    @property
    def seconds(self) -> float:
        """Time from the first send attempt to the last packet queued."""
        return self.finished_at - self.started_at
