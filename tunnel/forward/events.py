"""Events the forwarding muxes hand to their driver (tuntox-toxvpn.md 1.4 / 4.6).

A *handle* is the mux's own integer name for one tunnel (one forwarded TCP connection or one
UDP association); it is never on the wire. Events of one tunnel come out in order: all
``TunnelData`` before the ``PeerEof``/``TunnelClosed`` that follows them, so a driver that
writes data in event order and then shuts down / closes the socket delivers the stream whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from tunnel.wire.tuntox import Capabilities, DenyCode

FriendId = bytes
"""A friend's long-term Tox public key (32 bytes)."""

IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Server: open a connection to ``host:port`` for ``handle`` and report ``connect_result``.

    ``restrict_to``: when not ``None`` the request was allowed only by CIDR rules, so the
    driver must connect only to resolved addresses inside one of these networks (and report
    ``DenyCode.NOT_ALLOWED`` if none is).
    """

    handle: int
    friend: FriendId
    host: str
    port: int
    udp: bool
    restrict_to: tuple[IPNetwork, ...] | None


@dataclass(frozen=True, slots=True)
class TunnelOpened:
    """The tunnel is established: data may flow both ways."""

    handle: int
    friend: FriendId


@dataclass(frozen=True, slots=True)
class TunnelOpenFailed:
    """Client: the open was refused, failed or timed out; close the local socket."""

    handle: int
    code: DenyCode
    reason: str


@dataclass(frozen=True, slots=True)
class TunnelData:
    """Bytes from the peer for the local socket; call ``data_consumed`` once written."""

    handle: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerEof:
    """The peer will send no more (half-close): shut down the local socket's write side."""

    handle: int


@dataclass(frozen=True, slots=True)
class TunnelClosed:
    """The tunnel is over. ``error is None``: flush what was delivered, then close normally;
    otherwise abort the local socket (the stream is incomplete)."""

    handle: int
    error: str | None


@dataclass(frozen=True, slots=True)
class DatagramReceived:
    """A UDP datagram from the peer for the local UDP association ``handle``."""

    handle: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SendSpaceAvailable:
    """The tunnel's send buffer drained below half: reading the local socket may resume."""

    handle: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """Answer to our ``ping``: round-trip time in seconds."""

    friend: FriendId
    rtt_s: float


@dataclass(frozen=True, slots=True)
class PingTimedOut:
    """No PONG for our PING within ``PING_TIMEOUT_S``."""

    friend: FriendId


@dataclass(frozen=True, slots=True)
class PeerModeKnown:
    """We learned whether the friend speaks our extensions (``caps``) or plain tuntox."""

    friend: FriendId
    caps: Capabilities | None


Event = (
    ConnectRequest
    | TunnelOpened
    | TunnelOpenFailed
    | TunnelData
    | PeerEof
    | TunnelClosed
    | DatagramReceived
    | SendSpaceAvailable
    | PongReceived
    | PingTimedOut
    | PeerModeKnown
)

__all__ = [
    "ConnectRequest",
    "DatagramReceived",
    "DenyCode",
    "Event",
    "FriendId",
    "IPNetwork",
    "PeerEof",
    "PeerModeKnown",
    "PingTimedOut",
    "PongReceived",
    "SendSpaceAvailable",
    "TunnelClosed",
    "TunnelData",
    "TunnelOpenFailed",
    "TunnelOpened",
]
