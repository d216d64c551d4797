"""What each frame from a peer does to the mux (tuntox-toxvpn.md 1.4, our extensions).

The frame handlers of :class:`tunnel.forward.mux.ForwardMux`: PING/PONG (and the capability
exchange riding on them), stream data with its credit check (``WINDOW`` flow control) or the
plain-tuntox buffer limit, TCP_FIN, our half-close EOF, TUN_RESET, WINDOW and UDP datagrams.
Frames for tunnels that are gone or not open are dropped and counted (late frames inside the
tombstone period separately); a peer that breaks the protocol loses that tunnel only.

A mixin of :class:`~tunnel.forward.mux.ForwardMux` (``receive_packet`` decodes and calls in);
:class:`~tunnel.forward.client_mux.ClientMux` and :class:`~tunnel.forward.server_mux.ServerMux`
override the handlers of the frames their role expects (REQUEST, ACK, DENY, caps PONG).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tunnel.errors import BadPacket
from tunnel.forward.events import (
    DatagramReceived,
    Event,
    FriendId,
    PeerEof,
    PongReceived,
    TunnelData,
)
from tunnel.forward.state import (
    LEGACY_MAX_UNCONSUMED_BYTES,
    Peer,
    Tunnel,
    TunnelState,
    reason_text,
)
from tunnel.wire.tuntox import (
    AckTunnel,
    Capabilities,
    DenyCode,
    DenyTunnel,
    Frame,
    Ping,
    Pong,
    RequestTunnel,
    TcpData,
    TcpFin,
    TunnelEof,
    TunnelReset,
    TypedFrame,
    UdpDatagram,
    WindowUpdate,
    caps_untrusted,
)


class MuxFrames:
    """Frame handling of a :class:`~tunnel.forward.mux.ForwardMux` (see module docstring)."""

    # the mux's own state, used here
    _peers: dict[FriendId, Peer]
    _events: deque[Event]
    _stats: dict[str, int]

    if TYPE_CHECKING:

        def _count(self, name: str, amount: int = 1) -> None: ...

        def _control(self, friend: FriendId, frame: TypedFrame) -> None: ...

        def _flooded(self, peer: Peer) -> bool: ...

        def _mark_ready(self, tunnel: Tunnel) -> None: ...

        def _violation(self, tunnel: Tunnel, code: DenyCode, reason: str, now: float) -> None: ...

        def _finish(
            self,
            tunnel: Tunnel,
            error: str | None,
            now: float,
            *,
            emit: bool = True,
            tombstone: bool = True,
        ) -> None: ...

    def _dispatch(self, peer: Peer, frame: TypedFrame | Frame, now: float) -> None:
        match frame:
            case Ping():
                self._handle_ping(peer, frame, now)
            case Pong():
                self._handle_pong(peer, frame, now)
            case TcpData():
                self._handle_data(peer, frame.tunnel_id, frame.data, now)
            case TcpFin():
                self._handle_fin(peer, frame.tunnel_id, now)
            case TunnelEof():
                self._handle_eof(peer, frame.tunnel_id, now)
            case TunnelReset():
                self._handle_reset(peer, frame, now)
            case WindowUpdate():
                self._handle_window(peer, frame, now)
            case RequestTunnel():
                self._handle_request(peer, frame, now)
            case AckTunnel():
                self._handle_ack(peer, frame, now)
            case DenyTunnel():
                self._handle_deny(peer, frame, now)
            case _:
                self._count("unknown_frame_type")

    def _handle_request(self, peer: Peer, frame: RequestTunnel, now: float) -> None:
        self._count("unexpected_frame")

    def _handle_ack(self, peer: Peer, frame: AckTunnel, now: float) -> None:
        self._count("unexpected_frame")

    def _handle_deny(self, peer: Peer, frame: DenyTunnel, now: float) -> None:
        self._count("unexpected_frame")

    def _handle_ping(self, peer: Peer, frame: Ping, now: float) -> None:
        # tuntox answers every PING (both roles) with a PONG echoing the payload, connid 0.
        if self._flooded(peer):
            return
        self._control(peer.friend, Pong(frame.payload))

    def _handle_pong(self, peer: Peer, frame: Pong, now: float) -> None:
        try:
            caps = caps_untrusted(frame.payload)
        except BadPacket:
            self._count("bad_packet")
            return
        if caps is not None:
            self._handle_caps_pong(peer, caps[0], caps[1], now)
            return
        sent = peer.pings.pop(frame.payload, None)
        if sent is None:
            self._count("unexpected_pong")
            return
        self._events.append(PongReceived(peer.friend, max(0.0, now - sent)))

    def _handle_caps_pong(self, peer: Peer, kind: int, caps: Capabilities, now: float) -> None:
        self._count("unexpected_frame")

    def _lookup(self, peer: Peer, wire_id: int, what: str) -> Tunnel | None:
        tunnel = peer.tunnels.get(wire_id)
        if tunnel is None or tunnel.state is not TunnelState.OPEN:
            self._count("late_frame" if wire_id in peer.tombstones else f"unknown_tunnel_{what}")
            return None
        return tunnel

    def _handle_data(self, peer: Peer, tunnel_id: int, data: bytes, now: float) -> None:
        tunnel = self._lookup(peer, tunnel_id, "data")
        if tunnel is None or not data:
            return
        if tunnel.udp or tunnel.remote_eof:
            self._count("protocol_violation")
            self._violation(tunnel, DenyCode.BAD_REQUEST, "data after EOF or on a UDP tunnel", now)
            return
        size = len(data)
        if tunnel.flow:
            if size > tunnel.recv_window_left:
                self._count("flow_control_violation")
                self._violation(tunnel, DenyCode.FLOW_CONTROL, "peer exceeded its window", now)
                return
            tunnel.recv_window_left -= size
        tunnel.unconsumed += size
        tunnel.last_activity = now
        self._stats["bytes_received"] = self._stats.get("bytes_received", 0) + size
        self._events.append(TunnelData(tunnel.handle, data))
        if not tunnel.flow and tunnel.unconsumed > LEGACY_MAX_UNCONSUMED_BYTES:
            self._count("legacy_buffer_overflow")
            self._violation(tunnel, DenyCode.FLOW_CONTROL, "local consumer too slow", now)

    def _handle_fin(self, peer: Peer, wire_id: int, now: float) -> None:
        tunnel = self._lookup(peer, wire_id, "fin")
        if tunnel is None:
            return
        # TCP_FIN closes both directions (tuntox has no half-close); our buffer is moot.
        self._finish(tunnel, None, now)

    def _handle_eof(self, peer: Peer, wire_id: int, now: float) -> None:
        tunnel = self._lookup(peer, wire_id, "eof")
        if tunnel is None:
            return
        if not tunnel.half_close or tunnel.remote_eof:
            self._count("protocol_violation")
            return
        tunnel.remote_eof = True
        self._events.append(PeerEof(tunnel.handle))
        if tunnel.eof_sent:
            self._finish(tunnel, None, now)

    def _handle_reset(self, peer: Peer, frame: TunnelReset, now: float) -> None:
        tunnel = self._lookup(peer, frame.tunnel_id, "reset")
        if tunnel is None:
            return
        self._finish(tunnel, f"reset by peer: {reason_text(frame.code, frame.reason)}", now)

    def _handle_window(self, peer: Peer, frame: WindowUpdate, now: float) -> None:
        tunnel = self._lookup(peer, frame.tunnel_id, "window")
        if tunnel is None:
            return
        if not tunnel.flow or tunnel.send_credit is None:
            self._count("protocol_violation")
            return
        tunnel.send_credit = min(tunnel.send_credit + frame.increment, 1 << 40)
        self._mark_ready(tunnel)

    def _receive_datagram(self, peer: Peer, datagram: UdpDatagram, now: float) -> None:
        tunnel = peer.tunnels.get(datagram.tunnel_id)
        if tunnel is None or not tunnel.udp or tunnel.state is not TunnelState.OPEN:
            self._count("datagram_unknown_tunnel")
            return
        tunnel.last_activity = now
        self._events.append(DatagramReceived(tunnel.handle, datagram.data))
