"""Per-friend and per-tunnel state of the forwarding muxes, and their tunables.

See :mod:`tunnel.forward.mux` for the theory of operation; these are plain mutable records
that only the muxes touch.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from tunnel.forward.events import FriendId
from tunnel.wire.tuntox import Capabilities, CapFlag, DenyCode

SEND_BUFFER_BYTES = 256 * 1024
"""Per-tunnel bytes the mux buffers before ``send_capacity`` says 0."""
DEFAULT_WINDOW_BYTES = 1024 * 1024
"""Receive window we advertise per tunnel (credit the peer starts with). One window per
round trip is the per-tunnel throughput ceiling: 1 MiB / 120 ms (TCP relay, tuntox-toxvpn.md
4.5) is about 70 Mbit/s, near toxcore's own ~100 Mbit/s ceiling (4.4)."""
WINDOW_UPDATE_FRACTION = 4
"""Send a WINDOW once a quarter of the window was consumed."""
LEGACY_MAX_UNCONSUMED_BYTES = 8 * 1024 * 1024
"""Plain tuntox peers: undelivered bytes per tunnel before it is closed with an error."""
TOMBSTONE_S = 120.0
PING_TIMEOUT_S = 10.0
UDP_IDLE_TIMEOUT_S = 120.0
LOSSY_QUEUE_MAX_PACKETS = 256
MAX_TUNNELS_PER_FRIEND = 4096
CONTROL_QUEUE_SOFT_LIMIT = 4096
"""Queued control frames per friend past which PONG/DENY answers are dropped (flooding)."""
OUR_CAPS_FLAGS = CapFlag.ALL


def reason_text(code: int, reason: str) -> str:
    """Human-readable reason of a DENY/RESET: the peer's text, else the code's name."""
    if reason:
        return reason
    try:
        return DenyCode(code).name.lower().replace("_", " ")
    except ValueError:
        return f"code {code}"


class PeerMode(enum.Enum):
    """What the friend speaks."""

    UNKNOWN = "unknown"
    LEGACY = "legacy"
    EXTENDED = "extended"


class TunnelState(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    CLOSED = "closed"


@dataclass(eq=False)
class Tunnel:
    """Mutable per-tunnel state (internal to the muxes)."""

    handle: int
    friend: FriendId
    host: str
    port: int
    udp: bool
    state: TunnelState = TunnelState.OPENING
    wire_id: int | None = None
    forward_id: int = 0
    deadline: float | None = None
    wait_deadline: float | None = None
    """Client opens: give up if the friend is not online by then."""
    request_sent: bool = False
    flow: bool = False
    half_close: bool = False
    send_credit: int | None = None
    send_buf: bytearray = field(default_factory=bytearray)
    local_eof: bool = False
    eof_sent: bool = False
    remote_eof: bool = False
    recv_window_left: int = 0
    consumed_unannounced: int = 0
    unconsumed: int = 0
    blocked: bool = False
    in_ready: bool = False
    last_activity: float = 0.0

    def sendable(self) -> bool:
        if self.state is not TunnelState.OPEN or self.wire_id is None:
            return False
        if self.send_buf:
            return self.send_credit is None or self.send_credit > 0
        return self.local_eof and not self.eof_sent


@dataclass(eq=False)
class Peer:
    """Per-friend state."""

    friend: FriendId
    online: bool = False
    mode: PeerMode = PeerMode.UNKNOWN
    caps: Capabilities | None = None
    control: deque[bytes] = field(default_factory=deque)
    ready: deque[Tunnel] = field(default_factory=deque)
    lossy: deque[bytes] = field(default_factory=deque)
    tunnels: dict[int, Tunnel] = field(default_factory=dict)
    tombstones: dict[int, float] = field(default_factory=dict)
    pings: dict[bytes, float] = field(default_factory=dict)

    def shared_flags(self) -> int:
        if self.mode is not PeerMode.EXTENDED or self.caps is None:
            return 0
        return self.caps.flags & OUR_CAPS_FLAGS
