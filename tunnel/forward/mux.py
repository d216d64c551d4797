"""Sans-IO tunnel multiplexer shared by both roles (tuntox-toxvpn.md 1.4, 1.5, 4.6).

Theory of operation
-------------------
One mux instance serves one role (``ClientMux`` or ``ServerMux``) towards any number of
friends. Per friend it keeps a :class:`Peer`: whether the friend is online, what it speaks
(UNKNOWN until the capability exchange ends, then LEGACY = plain tuntox or EXTENDED = ours),
a priority queue of control frames, a round-robin list of tunnels with data to send, and a
queue of lossy UDP packets.

Per tunnel (a :class:`Tunnel`, named by a driver-facing integer *handle*)::

    OPENING --ACK--> OPEN --(both EOFs | FIN | RESET | error | friend offline)--> gone
       \\--DENY / timeout / offline--> gone

Once gone, the wire id rests in a per-friend tombstone set for ``TOMBSTONE_S`` so frames
still in flight are dropped quietly and the id is not reused.

Ordering: toxcore delivers lossless custom packets reliably and in order per friend. Frames
of one tunnel therefore arrive in the order sent; the mux emits events in that order (data,
then EOF/close) and sends a tunnel's EOF/FIN only after its buffered data. Control frames
(caps, ACK, DENY, WINDOW, RESET, PONG) jump ahead of queued stream data, which is safe: none
of them may be reordered against data of the same tunnel in a harmful way (an ACK precedes
any data of its tunnel, a RESET discards the data anyway).

Back-pressure: ``packets_to_send(friend, max_packets)`` takes the number of lossless packets
the transport below accepts right now and produces at most that many; data stays buffered in
the mux otherwise. Each tunnel buffers at most ``SEND_BUFFER_BYTES`` before
``send_capacity()`` reports 0; ``SendSpaceAvailable`` tells the driver to read again. With
our peers, credit-based flow control (``WINDOW`` frames) bounds what a peer may send per
tunnel, so one slow local consumer never stalls other tunnels. Plain tuntox peers cannot be
slowed per tunnel; a tunnel whose undelivered data passes ``LEGACY_MAX_UNCONSUMED_BYTES`` is
closed with an error instead of stalling everyone (tuntox blocks its whole event loop).

Bad frames from the network are dropped and counted (``statistics()``), never raised. What
each frame does is :mod:`tunnel.forward.mux_frames` (a mixin of :class:`ForwardMux`).
"""

from __future__ import annotations

import struct
from collections import deque

from tunnel.crypto.keys import Rng
from tunnel.errors import BadPacket
from tunnel.forward.events import (
    Event,
    FriendId,
    PeerModeKnown,
    PingTimedOut,
    SendSpaceAvailable,
    TunnelClosed,
)
from tunnel.forward.mux_frames import MuxFrames
from tunnel.forward.state import (
    CONTROL_QUEUE_SOFT_LIMIT,
    DEFAULT_WINDOW_BYTES,
    LOSSY_QUEUE_MAX_PACKETS,
    OUR_CAPS_FLAGS,
    PING_TIMEOUT_S,
    SEND_BUFFER_BYTES,
    TOMBSTONE_S,
    UDP_IDLE_TIMEOUT_S,
    WINDOW_UPDATE_FRACTION,
    Peer,
    PeerMode,
    Tunnel,
    TunnelState,
)
from tunnel.wire.tuntox import (
    CAPS_KIND_ANSWER,
    CAPS_KIND_OFFER,
    HEADER_SIZE_BYTES,
    MAGIC_V2,
    MAX_CUSTOM_PACKET_SIZE_BYTES,
    MAX_LARGE_CUSTOM_PACKET_BYTES,
    MAX_UDP_PAYLOAD_BYTES,
    TUNTOX_PACKET_ID,
    UDP_LOSSY_PACKET_ID,
    Capabilities,
    CapFlag,
    DenyCode,
    FrameType,
    Ping,
    TcpFin,
    TunnelEof,
    TunnelReset,
    TypedFrame,
    UdpDatagram,
    WindowUpdate,
    decode_frame_untrusted,
)

_TCP_HEADER = struct.Struct(">HHHH")
"""magic, frame type, connid, length: the TCP data frame header (fast path of the codec in
:mod:`tunnel.wire.tuntox`, which stays the reference; tests compare the two)."""
_TCP_PREFIX = struct.pack(">HH", MAGIC_V2, FrameType.TCP)


def encode_tcp_data(tunnel_id: int, data: bytes) -> bytes:
    """``TcpData(tunnel_id, data).encode()`` without the dataclasses (the per-frame hot path)."""
    return _TCP_HEADER.pack(MAGIC_V2, FrameType.TCP, tunnel_id, len(data)) + data


class ForwardMux(MuxFrames):
    """Machinery common to :class:`ClientMux` and :class:`ServerMux` (see module docstring)."""

    def __init__(self, rng: Rng, *, window_bytes: int = DEFAULT_WINDOW_BYTES) -> None:
        self._rng = rng
        self._window_bytes = window_bytes
        self._caps = Capabilities(OUR_CAPS_FLAGS, window_bytes)
        self._peers: dict[FriendId, Peer] = {}
        self._tunnels: dict[int, Tunnel] = {}
        self._events: deque[Event] = deque()
        self._next_handle = 1
        self._ping_seq = 0
        self._stats: dict[str, int] = {}
        self._now = 0.0

    # --- outputs ----------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """The next event for the driver, or ``None``."""
        return self._events.popleft() if self._events else None

    def drain_events(self) -> list[Event]:
        """All pending events, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    def friends_with_output(self) -> list[FriendId]:
        """Friends for which :meth:`packets_to_send` or :meth:`lossy_packets_to_send` has
        something."""
        return [
            friend
            for friend, peer in self._peers.items()
            if peer.online and (peer.control or peer.ready or peer.lossy)
        ]

    def packets_to_send(
        self,
        friend: FriendId,
        max_packets: int | None = None,
        packet_bytes: int = MAX_CUSTOM_PACKET_SIZE_BYTES,
    ) -> list[bytes]:
        """Up to ``max_packets`` lossless custom packets for ``friend``, in sending order,
        stream frames up to ``packet_bytes`` long (the transport's ``lossless_limit``: more
        than 1373 only with a peer that agreed it, issue 8).

        Every packet returned MUST be handed to the transport in this order; if the transport
        cannot deliver (friend gone), call :meth:`friend_offline`.
        """
        peer = self._peers.get(friend)
        if peer is None or not peer.online:
            return []
        budget = max_packets if max_packets is not None else 1 << 30
        frame_payload = min(packet_bytes, MAX_LARGE_CUSTOM_PACKET_BYTES) - HEADER_SIZE_BYTES
        out: list[bytes] = []
        while peer.control and len(out) < budget:
            out.append(peer.control.popleft())
        while peer.ready and len(out) < budget:
            tunnel = peer.ready.popleft()
            tunnel.in_ready = False
            if not tunnel.sendable():
                continue
            out.append(self._next_stream_frame(peer, tunnel, frame_payload))
            if tunnel.sendable():
                tunnel.in_ready = True
                peer.ready.append(tunnel)
            # a stream frame may have queued control (nothing today) or closed the tunnel
            while peer.control and len(out) < budget:
                out.append(peer.control.popleft())
        return out

    def lossy_packets_to_send(self, friend: FriendId) -> list[bytes]:
        """All queued lossy custom packets (UDP datagrams) for ``friend``."""
        peer = self._peers.get(friend)
        if peer is None or not peer.online:
            return []
        out = list(peer.lossy)
        peer.lossy.clear()
        return out

    @property
    def bytes_sent(self) -> int:
        """Stream bytes put into frames so far."""
        return self._stats.get("bytes_sent", 0)

    def statistics(self) -> dict[str, int]:
        """A snapshot of the counters (drops, violations, frames)."""
        return dict(self._stats)

    def peer_mode(self, friend: FriendId) -> PeerMode:
        peer = self._peers.get(friend)
        return PeerMode.UNKNOWN if peer is None else peer.mode

    def wire_id(self, handle: int) -> int | None:
        """The tuntox tunnel id (connid) of ``handle``, once known (logging, tests)."""
        tunnel = self._tunnels.get(handle)
        return None if tunnel is None else tunnel.wire_id

    def tunnel_count(self, friend: FriendId | None = None) -> int:
        if friend is None:
            return len(self._tunnels)
        return sum(1 for t in self._tunnels.values() if t.friend == friend)

    # --- timers -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Earliest ``now`` at which :meth:`handle_timer` has work."""
        times: list[float] = []
        for tunnel in self._tunnels.values():
            if tunnel.deadline is not None:
                times.append(tunnel.deadline)
            if tunnel.udp and tunnel.state is TunnelState.OPEN:
                times.append(tunnel.last_activity + UDP_IDLE_TIMEOUT_S)
        for peer in self._peers.values():
            times.extend(sent + PING_TIMEOUT_S for sent in peer.pings.values())
            times.extend(peer.tombstones.values())
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``."""
        self._tick(now)
        for tunnel in list(self._tunnels.values()):
            if tunnel.deadline is not None and tunnel.deadline <= now:
                self._on_deadline(tunnel, now)
            elif (
                tunnel.udp
                and tunnel.state is TunnelState.OPEN
                and tunnel.last_activity + UDP_IDLE_TIMEOUT_S <= now
            ):
                self._count("udp_idle_closed")
                self._send_fin_now(tunnel)
                self._finish(tunnel, None, now)
        for peer in self._peers.values():
            for payload, sent in list(peer.pings.items()):
                if sent + PING_TIMEOUT_S <= now:
                    del peer.pings[payload]
                    self._events.append(PingTimedOut(peer.friend))
            for wire_id, expiry in list(peer.tombstones.items()):
                if expiry <= now:
                    del peer.tombstones[wire_id]

    def _on_deadline(self, tunnel: Tunnel, now: float) -> None:
        raise NotImplementedError

    # --- friends ----------------------------------------------------------------------

    def friend_online(self, friend: FriendId, now: float) -> None:
        """The friend connection came up (toxcore reports it online)."""
        self._tick(now)
        peer = self._peer(friend)
        if peer.online:
            return
        peer.online = True
        peer.mode = PeerMode.UNKNOWN
        peer.caps = None
        self._on_online(peer, now)

    def friend_offline(self, friend: FriendId, now: float) -> None:
        """The friend connection went down: every tunnel of the friend ends with an error."""
        self._tick(now)
        peer = self._peers.get(friend)
        if peer is None:
            return
        was_online = peer.online
        peer.online = False
        peer.mode = PeerMode.UNKNOWN
        peer.caps = None
        peer.control.clear()
        peer.ready.clear()
        peer.lossy.clear()
        peer.pings.clear()
        peer.tombstones.clear()
        for tunnel in [t for t in self._tunnels.values() if t.friend == friend]:
            tunnel.in_ready = False
            self._on_offline_tunnel(peer, tunnel, now)
        if not any(t.friend == friend for t in self._tunnels.values()):
            del self._peers[friend]  # nothing pending: forget the friend entirely
        if was_online:
            self._count("friend_offline")

    def _on_online(self, peer: Peer, now: float) -> None:
        raise NotImplementedError

    def _on_offline_tunnel(self, peer: Peer, tunnel: Tunnel, now: float) -> None:
        self._finish(tunnel, "friend went offline", now, tombstone=False)

    # --- application side -------------------------------------------------------------

    def send_capacity(self, handle: int) -> int:
        """How many more bytes :meth:`stream_data` should take for ``handle`` right now."""
        tunnel = self._tunnels.get(handle)
        if tunnel is None or tunnel.udp or tunnel.local_eof:
            return 0
        room = SEND_BUFFER_BYTES - len(tunnel.send_buf)
        if room <= 0:
            tunnel.blocked = True
            return 0
        return room

    def stream_data(self, handle: int, data: bytes, now: float) -> None:
        """Bytes read from the local socket of ``handle``, to forward to the peer.

        Always buffered (never dropped); respect :meth:`send_capacity` to bound memory.
        """
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None or tunnel.udp or not data:
            return
        if tunnel.local_eof:
            raise ValueError("stream_data after stream_eof")
        tunnel.send_buf += data
        tunnel.last_activity = now
        if len(tunnel.send_buf) >= SEND_BUFFER_BYTES:
            tunnel.blocked = True
        self._mark_ready(tunnel)

    def stream_eof(self, handle: int, now: float) -> None:
        """The local socket reached EOF: after the buffered data, half-close (our peers) or
        close the tunnel with TCP_FIN (plain tuntox, which has no half-close)."""
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None or tunnel.local_eof:
            return
        tunnel.local_eof = True
        self._mark_ready(tunnel)

    def data_consumed(self, handle: int, nbytes: int, now: float) -> None:
        """The driver wrote ``nbytes`` of received data to the local socket: grant credit."""
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None or nbytes <= 0:
            return
        nbytes = min(nbytes, tunnel.unconsumed)
        tunnel.unconsumed -= nbytes
        if not tunnel.flow or tunnel.remote_eof or tunnel.wire_id is None:
            return
        tunnel.consumed_unannounced += nbytes
        if tunnel.consumed_unannounced >= max(1, self._window_bytes // WINDOW_UPDATE_FRACTION):
            increment = tunnel.consumed_unannounced
            tunnel.consumed_unannounced = 0
            tunnel.recv_window_left += increment
            self._control(tunnel.friend, WindowUpdate(tunnel.wire_id, increment))

    def send_datagram(self, handle: int, data: bytes, now: float) -> bool:
        """Queue one UDP datagram of the association ``handle``; False if it was dropped."""
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None or not tunnel.udp or tunnel.state is not TunnelState.OPEN:
            self._count("datagram_dropped_not_open")
            return False
        if len(data) > MAX_UDP_PAYLOAD_BYTES or tunnel.wire_id is None:
            self._count("datagram_dropped_too_big")
            return False
        peer = self._peers[tunnel.friend]
        if len(peer.lossy) >= LOSSY_QUEUE_MAX_PACKETS:
            peer.lossy.popleft()
            self._count("datagram_dropped_queue_full")
        peer.lossy.append(UdpDatagram(tunnel.wire_id, data).encode())
        tunnel.last_activity = now
        return True

    def close_tunnel(self, handle: int, error: str | None, now: float) -> None:
        """The driver aborts ``handle`` (local socket error or reset, or shutdown).

        Buffered outgoing data is discarded; our peers get TUN_RESET, plain tuntox TCP_FIN.
        No event is emitted for a driver-initiated close.
        """
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None:
            return
        self._abort_local(tunnel, error or "closed by the local side", now)

    def _abort_local(self, tunnel: Tunnel, error: str, now: float) -> None:
        raise NotImplementedError

    # --- network side -----------------------------------------------------------------

    def receive_packet(self, friend: FriendId, data: bytes, now: float) -> None:
        """A custom packet (lossless 0xA2 or lossy 0xE2) from ``friend``. Never raises for
        bad input: it is dropped and counted."""
        if now > self._now:
            self._now = now
        peer = self._peers.get(friend)
        if peer is None or not peer.online:
            self._count("dropped_friend_offline")
            return
        if not data:
            self._count("bad_packet")
            return
        if not self._friend_allowed(friend):
            self._count("dropped_unauthorised_friend")
            return
        try:
            if (
                data.startswith(_TCP_PREFIX)
                and len(data) >= _TCP_HEADER.size
                and len(data) - _TCP_HEADER.size == (length := (data[6] << 8) | data[7])
                and length <= MAX_LARGE_CUSTOM_PACKET_BYTES - HEADER_SIZE_BYTES
            ):
                # fast path of decode_frame_untrusted for stream data (same checks)
                self._count("frames_received")
                connid = (data[4] << 8) | data[5]
                self._handle_data(peer, connid, data[_TCP_HEADER.size :], now)
            elif data[0] == TUNTOX_PACKET_ID:
                frame = decode_frame_untrusted(data)
                self._count("frames_received")
                self._dispatch(peer, frame, now)
            elif data[0] == UDP_LOSSY_PACKET_ID:
                self._receive_datagram(peer, UdpDatagram.decode(data), now)
            else:
                self._count("dropped_foreign_packet_id")
        except BadPacket:
            self._count("bad_packet")

    def _friend_allowed(self, friend: FriendId) -> bool:
        return True

    # --- helpers ----------------------------------------------------------------------

    def _peer(self, friend: FriendId) -> Peer:
        peer = self._peers.get(friend)
        if peer is None:
            peer = self._peers[friend] = Peer(bytes(friend))
        return peer

    def _new_handle(self) -> int:
        handle = self._next_handle
        self._next_handle += 1
        return handle

    def _flooded(self, peer: Peer) -> bool:
        """True (and counted) when the peer's control queue is too long for optional answers."""
        if len(peer.control) < CONTROL_QUEUE_SOFT_LIMIT:
            return False
        self._count("dropped_answer_flood")
        return True

    def _tick(self, now: float) -> None:
        if now > self._now:
            self._now = now

    def _count(self, name: str, amount: int = 1) -> None:
        self._stats[name] = self._stats.get(name, 0) + amount

    def _control(self, friend: FriendId, frame: TypedFrame) -> None:
        peer = self._peers.get(friend)
        if peer is not None and peer.online:
            peer.control.append(frame.encode())

    def _send_ping(self, peer: Peer, payload: bytes, now: float) -> None:
        peer.pings[payload] = now
        self._control(peer.friend, Ping(payload))

    def ping(self, friend: FriendId, now: float) -> None:
        """Send a PING; a :class:`PongReceived` (or :class:`PingTimedOut`) follows."""
        self._tick(now)
        peer = self._peers.get(friend)
        if peer is None or not peer.online:
            self._events.append(PingTimedOut(friend))
            return
        self._ping_seq += 1
        self._send_ping(peer, b"tunnel-ping " + str(self._ping_seq).encode(), now)

    def _offer_payload(self) -> bytes:
        return self._caps.payload(CAPS_KIND_OFFER)

    def _answer_payload(self) -> bytes:
        return self._caps.payload(CAPS_KIND_ANSWER)

    def _set_mode(self, peer: Peer, caps: Capabilities | None) -> None:
        peer.mode = PeerMode.LEGACY if caps is None else PeerMode.EXTENDED
        peer.caps = caps
        self._events.append(PeerModeKnown(peer.friend, caps))

    def _configure_open(self, peer: Peer, tunnel: Tunnel, now: float) -> None:
        """Tunnel just became OPEN: fix its features from the peer's mode."""
        flags = peer.shared_flags()
        tunnel.state = TunnelState.OPEN
        tunnel.deadline = None
        tunnel.last_activity = now
        tunnel.flow = bool(flags & CapFlag.FLOW_CONTROL)
        tunnel.half_close = bool(flags & CapFlag.HALF_CLOSE)
        if tunnel.flow and peer.caps is not None:
            tunnel.send_credit = peer.caps.window_bytes
            tunnel.recv_window_left = self._window_bytes
        else:
            tunnel.send_credit = None
        self._mark_ready(tunnel)

    def _mark_ready(self, tunnel: Tunnel) -> None:
        if tunnel.in_ready or not tunnel.sendable():
            return
        peer = self._peers.get(tunnel.friend)
        if peer is None or not peer.online:
            return
        tunnel.in_ready = True
        peer.ready.append(tunnel)

    def _next_stream_frame(self, peer: Peer, tunnel: Tunnel, frame_payload: int) -> bytes:
        assert tunnel.wire_id is not None
        if tunnel.send_buf:
            size = min(len(tunnel.send_buf), frame_payload)
            if tunnel.send_credit is not None:
                size = min(size, tunnel.send_credit)
                tunnel.send_credit -= size
            chunk = bytes(tunnel.send_buf[:size])
            del tunnel.send_buf[:size]
            self._count("bytes_sent", size)
            if tunnel.blocked and len(tunnel.send_buf) <= SEND_BUFFER_BYTES // 2:
                tunnel.blocked = False
                self._events.append(SendSpaceAvailable(tunnel.handle))
            return encode_tcp_data(tunnel.wire_id, chunk)
        # buffer empty and local EOF pending
        tunnel.eof_sent = True
        if tunnel.half_close:
            frame = TunnelEof(tunnel.wire_id).encode()
            if tunnel.remote_eof:
                self._finish(tunnel, None, self._now)
            return frame
        frame = TcpFin(tunnel.wire_id).encode()
        self._finish(tunnel, None, self._now)
        return frame

    def _send_fin_now(self, tunnel: Tunnel) -> None:
        if tunnel.wire_id is not None:
            self._control(tunnel.friend, TcpFin(tunnel.wire_id))

    def _reset_remote(self, tunnel: Tunnel, code: DenyCode, reason: str) -> None:
        """Abort the peer's end: TUN_RESET for our peers, TCP_FIN for plain tuntox."""
        if tunnel.wire_id is None:
            return
        if self._peers[tunnel.friend].mode is PeerMode.EXTENDED:
            self._control(tunnel.friend, TunnelReset(tunnel.wire_id, code, reason))
        else:
            self._control(tunnel.friend, TcpFin(tunnel.wire_id))

    def _violation(self, tunnel: Tunnel, code: DenyCode, reason: str, now: float) -> None:
        """The peer broke the protocol on one tunnel: tear down that tunnel only."""
        self._reset_remote(tunnel, code, reason)
        self._finish(tunnel, reason, now)

    def _abort_open(self, tunnel: Tunnel, error: str, now: float) -> None:
        """Driver-initiated abort of an OPEN tunnel (no event)."""
        self._reset_remote(tunnel, DenyCode.LOCAL_ERROR, error)
        self._finish(tunnel, error, now, emit=False)

    def _finish(
        self,
        tunnel: Tunnel,
        error: str | None,
        now: float,
        *,
        emit: bool = True,
        tombstone: bool = True,
    ) -> None:
        """Forget ``tunnel`` (it is over) and tell the driver unless ``emit`` is False."""
        if tunnel.state is TunnelState.CLOSED:
            return
        tunnel.state = TunnelState.CLOSED
        tunnel.send_buf.clear()
        self._tunnels.pop(tunnel.handle, None)
        peer = self._peers.get(tunnel.friend)
        if peer is not None and tunnel.wire_id is not None:
            if peer.tunnels.get(tunnel.wire_id) is tunnel:
                del peer.tunnels[tunnel.wire_id]
            if tombstone:
                peer.tombstones[tunnel.wire_id] = now + TOMBSTONE_S
        self._count("tunnels_closed" if error is None else "tunnels_failed")
        if emit:
            self._events.append(TunnelClosed(tunnel.handle, error))
