"""Client role of the forwarding mux (``tunnel connect``; tuntox ``-L/-W/-D/-p``, our ``-U``).

Theory of operation (tuntox-toxvpn.md 1.4 "Opening a forwarded connection"):

* ``open_tunnel(friend, host, port, now)`` returns a handle at once. When the friend is online
  the mux sends REQUESTTUNNEL (connid = port, payload = forward id + host); a fresh u32
  forward id per request (tuntox reuses one per ``-L``, which is what breaks its ``-L`` after
  the first connection). The open stays pending while the friend is offline and is re-sent
  after a reconnect. Two clocks bound it: ``open_timeout_s`` runs from the moment the request
  is sent (the server's answer time), ``offline_wait_s`` from the moment the open was made
  (how long it may wait for the friend to come online at all). Counting the friend search
  against the answer timeout made a fresh client's first open (``-W`` under ssh) fail with
  "no answer from the server" whenever finding the friend took longer than the timeout.
* When the friend comes online the client first sends a PING carrying a caps offer. A plain
  tuntox server echoes it (-> LEGACY), ours answers with a caps PONG (-> EXTENDED). TCP
  opens do not wait for the answer: the server handles frames in order, and its answer
  reaches us before its ACK, so both ends agree on the tunnel's features at ACK time. UDP
  opens wait for the answer (plain tuntox cannot forward UDP). There is deliberately no
  timeout on the answer: deciding "plain tuntox" on our own while the server decided
  "extended" would desynchronise flow control; an ACK that arrives while the mode is still
  unknown proves the server never saw the offer (it answers before acting on later frames),
  so it is plain tuntox for both ends.
* ACKTUNNEL carries the server's tunnel id; DENYTUNNEL (our servers) or the open timeout
  (plain tuntox servers say nothing on failure) fails the open. An ACK arriving after we gave
  up is answered with TCP_FIN/TUN_RESET so the server does not leak the connection.
"""

from __future__ import annotations

from tunnel.crypto.keys import Rng
from tunnel.forward.events import FriendId, TunnelOpened, TunnelOpenFailed
from tunnel.forward.mux import ForwardMux
from tunnel.forward.rules import validate_request_host
from tunnel.forward.state import (
    DEFAULT_WINDOW_BYTES,
    TOMBSTONE_S,
    Peer,
    PeerMode,
    Tunnel,
    TunnelState,
    reason_text,
)
from tunnel.wire.tuntox import (
    CAPS_KIND_ANSWER,
    AckTunnel,
    Capabilities,
    CapFlag,
    DenyCode,
    DenyTunnel,
    Ping,
    RequestTunnel,
    TcpFin,
    TunnelReset,
)

OPEN_TIMEOUT_S = 30.0
"""Give up on an unanswered REQUESTTUNNEL (plain tuntox never answers a failed open)."""
WAIT_ONLINE_S = 120.0
"""``tunnel connect``'s default wait for an unreachable server (the mux's own default is
``open_timeout_s``)."""
ABANDONED_TTL_S = 300.0
"""How long a late ACK for an abandoned open is still answered with a close."""


class ClientMux(ForwardMux):
    """Tunnels towards forwarding servers (usually one friend)."""

    def __init__(
        self,
        rng: Rng,
        *,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        offline_wait_s: float | None = None,
        negotiate: bool = True,
    ) -> None:
        """``negotiate=False`` behaves exactly like a tuntox client (no caps offer).

        ``offline_wait_s`` (default: ``open_timeout_s``) bounds how long an open waits for
        the friend to come online; ``open_timeout_s`` how long the server may take to answer
        a request once sent.
        """
        super().__init__(rng, window_bytes=window_bytes)
        self._open_timeout_s = open_timeout_s
        self._offline_wait_s = open_timeout_s if offline_wait_s is None else offline_wait_s
        self._negotiate = negotiate
        self._next_forward_id = int.from_bytes(rng(4), "big")
        self._pending: dict[tuple[FriendId, int], Tunnel] = {}
        self._abandoned: dict[tuple[FriendId, int], float] = {}

    # --- application side -------------------------------------------------------------

    def open_tunnel(
        self, friend: FriendId, host: str, port: int, now: float, *, udp: bool = False
    ) -> int:
        """Ask ``friend`` to connect to ``host:port``; returns the new tunnel's handle.

        A :class:`TunnelOpened` or :class:`TunnelOpenFailed` event follows. Data given to
        :meth:`stream_data` before that is buffered and sent once the tunnel is open.

        Raises:
            ValueError: ``host`` is not a plausible host name / IP literal, or bad port.
        """
        self._tick(now)
        checked = validate_request_host(host.encode("ascii", "replace"))
        if checked is None:
            raise ValueError(f"bad host {host!r}")
        if not 1 <= port <= 0xFFFF:
            raise ValueError(f"bad port {port}")
        handle = self._new_handle()
        tunnel = Tunnel(handle, bytes(friend), checked, port, udp)
        tunnel.wait_deadline = now + self._offline_wait_s
        tunnel.deadline = tunnel.wait_deadline
        self._tunnels[handle] = tunnel
        self._try_request(self._peer(friend), tunnel)
        return handle

    # --- timers -----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        times = [t for t in (super().next_deadline(),) if t is not None]
        times.extend(self._abandoned.values())
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        super().handle_timer(now)
        for key, expiry in list(self._abandoned.items()):
            if expiry <= now:
                del self._abandoned[key]

    def _on_deadline(self, tunnel: Tunnel, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            self._count("open_timeout" if tunnel.request_sent else "open_offline_timeout")
            reason = "no answer from the server" if tunnel.request_sent else "server not online"
            self._drop_opening(tunnel, now)
            self._events.append(TunnelOpenFailed(tunnel.handle, DenyCode.TIMEOUT, reason))

    # --- friends ----------------------------------------------------------------------

    def _on_online(self, peer: Peer, now: float) -> None:
        if self._negotiate:
            self._control(peer.friend, Ping(self._offer_payload()))
        else:
            self._set_mode(peer, None)
        for tunnel in sorted(self._tunnels.values(), key=lambda t: t.handle):
            if tunnel.friend == peer.friend and tunnel.state is TunnelState.OPENING:
                self._try_request(peer, tunnel)

    def friend_offline(self, friend: FriendId, now: float) -> None:
        super().friend_offline(friend, now)
        for key in [k for k in self._abandoned if k[0] == friend]:
            del self._abandoned[key]

    def _on_offline_tunnel(self, peer: Peer, tunnel: Tunnel, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            # Re-request after the reconnect (until the open deadline).
            self._pending.pop((peer.friend, tunnel.forward_id), None)
            tunnel.request_sent = False
            tunnel.deadline = max(tunnel.wait_deadline or now, now)
            return
        super()._on_offline_tunnel(peer, tunnel, now)

    # --- frames -----------------------------------------------------------------------

    def _handle_caps_pong(self, peer: Peer, kind: int, caps: Capabilities, now: float) -> None:
        if peer.mode is not PeerMode.UNKNOWN:
            self._count("unexpected_caps")
            return
        # Our own offer echoed back: a plain tuntox server (it echoes every PING).
        self._learned_mode(peer, caps if kind == CAPS_KIND_ANSWER else None)

    def _learned_mode(self, peer: Peer, caps: Capabilities | None) -> None:
        self._set_mode(peer, caps)
        for tunnel in sorted(self._tunnels.values(), key=lambda t: t.handle):
            if tunnel.friend == peer.friend and tunnel.state is TunnelState.OPENING:
                self._try_request(peer, tunnel)

    def _handle_ack(self, peer: Peer, frame: AckTunnel, now: float) -> None:
        key = (peer.friend, frame.forward_id)
        tunnel = self._pending.pop(key, None)
        if tunnel is None:
            if self._abandoned.pop(key, None) is not None:
                self._count("late_ack_closed")
                self._close_remote(peer, frame.tunnel_id)
            else:
                self._count("unexpected_ack")
            return
        if frame.tunnel_id in peer.tunnels:
            self._count("protocol_violation")
            self._drop_opening(tunnel, now)
            self._events.append(
                TunnelOpenFailed(tunnel.handle, DenyCode.BAD_REQUEST, "server reused a tunnel id")
            )
            return
        if peer.mode is PeerMode.UNKNOWN:
            # Our servers answer the caps offer before any ACK; so this one is plain tuntox.
            self._set_mode(peer, None)
        peer.tombstones.pop(frame.tunnel_id, None)
        tunnel.wire_id = frame.tunnel_id
        peer.tunnels[frame.tunnel_id] = tunnel
        self._configure_open(peer, tunnel, now)
        self._count("tunnels_opened")
        self._events.append(TunnelOpened(tunnel.handle, peer.friend))

    def _handle_deny(self, peer: Peer, frame: DenyTunnel, now: float) -> None:
        tunnel = self._pending.get((peer.friend, frame.forward_id))
        if tunnel is None:
            self._count("unexpected_deny")
            return
        self._count("opens_denied")
        self._drop_opening(tunnel, now)
        try:
            code = DenyCode(frame.code)
        except ValueError:
            code = DenyCode.UNSPECIFIED
        self._events.append(
            TunnelOpenFailed(tunnel.handle, code, reason_text(frame.code, frame.reason))
        )

    # --- helpers ----------------------------------------------------------------------

    def _try_request(self, peer: Peer, tunnel: Tunnel) -> None:
        if not peer.online or tunnel.request_sent or tunnel.state is not TunnelState.OPENING:
            return
        if tunnel.udp:
            if peer.mode is PeerMode.UNKNOWN:
                return  # wait for the caps answer
            if not peer.shared_flags() & CapFlag.UDP:
                self._drop_opening(tunnel, self._now)
                self._events.append(
                    TunnelOpenFailed(
                        tunnel.handle, DenyCode.UNSUPPORTED, "server cannot forward UDP"
                    )
                )
                return
        forward_id = self._next_forward_id
        self._next_forward_id = (self._next_forward_id + 1) & 0xFFFFFFFF
        tunnel.forward_id = forward_id
        tunnel.request_sent = True
        tunnel.deadline = self._now + self._open_timeout_s  # the server's answer time
        self._pending[(peer.friend, forward_id)] = tunnel
        request = RequestTunnel(tunnel.port, forward_id, tunnel.host.encode("ascii"), tunnel.udp)
        self._control(peer.friend, request)

    def _drop_opening(self, tunnel: Tunnel, now: float) -> None:
        """Forget an OPENING tunnel; a later ACK for it gets closed."""
        key = (tunnel.friend, tunnel.forward_id)
        if tunnel.request_sent and self._pending.pop(key, None) is tunnel:
            self._abandoned[key] = now + ABANDONED_TTL_S
        tunnel.state = TunnelState.CLOSED
        self._tunnels.pop(tunnel.handle, None)

    def _close_remote(self, peer: Peer, wire_id: int) -> None:
        if peer.mode is PeerMode.EXTENDED:
            self._control(peer.friend, TunnelReset(wire_id, DenyCode.TIMEOUT, "open abandoned"))
        else:
            self._control(peer.friend, TcpFin(wire_id))
        peer.tombstones[wire_id] = self._now + TOMBSTONE_S

    def _abort_local(self, tunnel: Tunnel, error: str, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            self._drop_opening(tunnel, now)
        else:
            self._abort_open(tunnel, error, now)
