"""Server role of the forwarding mux (``tunnel serve``; tuntox's default mode).

Theory of operation (tuntox-toxvpn.md 1.4 main.c ``handle_request_tunnel_frame``, and the
defects of 1.5 this fixes):

* Friend requests: :meth:`ServerMux.friend_request` applies the :class:`AuthPolicy` (secret in
  the request message, allowlist, both). Packets of friends that fail the allowlist are
  dropped, so removing a key revokes access without deleting the friend.
* REQUESTTUNNEL (connid = port, payload = forward id + host): validated, checked against the
  :class:`RuleSet` (default deny once rules exist) and the per-friend limits, then a random
  unused 16-bit tunnel id is reserved and a :class:`ConnectRequest` asks the driver to
  resolve and connect WITHOUT blocking (tuntox blocks its whole loop here). The driver
  reports :meth:`connect_result`; a deadline (``connect_timeout_s``) bounds the wait.
* Success: ACKTUNNEL(tunnel id, forward id), exactly as tuntox sends it.
* Refusal/failure is answered at once: DENYTUNNEL with a reason to our clients. tuntox sends
  nothing, leaving its client's ``-L`` port wedged; to plain tuntox clients we send, by
  default (``legacy_refusal="ack_fin"``), ACKTUNNEL followed by TCP_FIN, which makes the
  tuntox client close the local connection at once; ``"silent"`` mimics tuntox exactly.
* A PING carrying a caps offer is answered with a caps PONG (the agreed flags = offer AND
  ours, plus our receive window); every other PING is echoed as tuntox does. A friend whose
  first tunnel request arrives without an offer is plain tuntox.
* Friend offline: every tunnel of that friend ends (tuntox's server never cleans up).
"""

from __future__ import annotations

from typing import Literal

from tunnel.crypto.keys import Rng
from tunnel.errors import BadPacket
from tunnel.forward.auth import AuthPolicy
from tunnel.forward.events import ConnectRequest, FriendId, TunnelClosed, TunnelOpened
from tunnel.forward.mux import ForwardMux
from tunnel.forward.rules import RuleSet, validate_request_host
from tunnel.forward.state import (
    DEFAULT_WINDOW_BYTES,
    MAX_TUNNELS_PER_FRIEND,
    OUR_CAPS_FLAGS,
    TOMBSTONE_S,
    Peer,
    PeerMode,
    Tunnel,
    TunnelState,
)
from tunnel.wire.tuntox import (
    CAPS_KIND_ANSWER,
    CAPS_KIND_OFFER,
    AckTunnel,
    Capabilities,
    CapFlag,
    DenyCode,
    DenyTunnel,
    Ping,
    Pong,
    RequestTunnel,
    TcpFin,
    caps_untrusted,
)

CONNECT_TIMEOUT_S = 15.0
"""Resolve + connect budget for one tunnel request."""
MAX_PENDING_CONNECTS_PER_FRIEND = 128

LegacyRefusal = Literal["ack_fin", "silent"]


class ServerMux(ForwardMux):
    """Tunnels from any number of client friends to local services."""

    def __init__(
        self,
        rng: Rng,
        *,
        rules: RuleSet | None = None,
        auth: AuthPolicy | None = None,
        window_bytes: int = DEFAULT_WINDOW_BYTES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        legacy_refusal: LegacyRefusal = "ack_fin",
        allow_udp: bool = True,
        max_tunnels_per_friend: int = MAX_TUNNELS_PER_FRIEND,
        max_pending_per_friend: int = MAX_PENDING_CONNECTS_PER_FRIEND,
    ) -> None:
        super().__init__(rng, window_bytes=window_bytes)
        self._rules = rules if rules is not None else RuleSet(None)
        self._auth = auth if auth is not None else AuthPolicy()
        self._connect_timeout_s = connect_timeout_s
        self._legacy_refusal = legacy_refusal
        self._allow_udp = allow_udp
        self._max_tunnels = max_tunnels_per_friend
        self._max_pending = max_pending_per_friend

    # --- policy -----------------------------------------------------------------------

    def friend_request(self, public_key: bytes, message: bytes) -> bool:
        """Should the driver accept this friend request (``tox_friend_add_norequest``)?"""
        accepted = self._auth.accepts_request(public_key, message)
        self._count("friend_requests_accepted" if accepted else "friend_requests_refused")
        return accepted

    def _friend_allowed(self, friend: FriendId) -> bool:
        return self._auth.friend_allowed(friend)

    # --- driver results ---------------------------------------------------------------

    def connect_result(
        self,
        handle: int,
        error: str | None,
        now: float,
        code: DenyCode = DenyCode.CONNECT_FAILED,
    ) -> None:
        """The driver's answer to :class:`ConnectRequest`: ``error is None`` = connected.

        If the tunnel is no longer wanted (timed out, friend offline) a successful connect is
        answered with ``TunnelClosed`` so the driver closes the socket it just opened.
        """
        self._tick(now)
        tunnel = self._tunnels.get(handle)
        if tunnel is None or tunnel.state is not TunnelState.OPENING:
            if error is None:
                self._events.append(TunnelClosed(handle, "tunnel no longer wanted"))
            return
        peer = self._peers[tunnel.friend]
        if error is not None:
            self._count("connect_failed")
            self._drop_opening(peer, tunnel)
            self._refuse(peer, tunnel.forward_id, code, error)
            return
        assert tunnel.wire_id is not None
        self._control(peer.friend, AckTunnel(tunnel.wire_id, tunnel.forward_id))
        self._configure_open(peer, tunnel, now)
        self._count("tunnels_opened")
        self._events.append(TunnelOpened(handle, peer.friend))

    # --- frames -----------------------------------------------------------------------

    def _handle_ping(self, peer: Peer, frame: Ping, now: float) -> None:
        try:
            caps = caps_untrusted(frame.payload)
        except BadPacket:
            caps = None
            self._count("bad_caps")
        if caps is not None and caps[0] == CAPS_KIND_OFFER and peer.mode is not PeerMode.LEGACY:
            offer = caps[1]
            agreed = Capabilities(offer.flags & OUR_CAPS_FLAGS, offer.window_bytes, offer.version)
            if peer.mode is PeerMode.EXTENDED:
                # A new offer means the client started a new session (it saw the friend
                # connection drop and come back even if we did not): its tunnels are gone.
                self._count("peer_restarted")
                for tunnel in [t for t in self._tunnels.values() if t.friend == peer.friend]:
                    self._on_offline_tunnel(peer, tunnel, now)
            self._set_mode(peer, agreed)
            if self._flooded(peer):
                return
            answer = Capabilities(agreed.flags, self._window_bytes)
            self._control(peer.friend, Pong(answer.payload(CAPS_KIND_ANSWER)))
            return
        super()._handle_ping(peer, frame, now)

    def _handle_request(self, peer: Peer, frame: RequestTunnel, now: float) -> None:
        if peer.mode is PeerMode.UNKNOWN:
            self._set_mode(peer, None)  # our clients always offer caps first
        self._count("requests")
        host = validate_request_host(frame.host)
        if host is None or frame.port == 0:
            self._refuse(peer, frame.forward_id, DenyCode.BAD_REQUEST, "bad host or port")
            return
        if frame.udp and not (self._allow_udp and peer.shared_flags() & CapFlag.UDP):
            self._refuse(peer, frame.forward_id, DenyCode.UNSUPPORTED, "UDP forwarding is off")
            return
        tunnels = [t for t in peer.tunnels.values() if t.state is not TunnelState.CLOSED]
        pending = sum(1 for t in tunnels if t.state is TunnelState.OPENING)
        if len(tunnels) >= self._max_tunnels or pending >= self._max_pending:
            self._refuse(peer, frame.forward_id, DenyCode.LIMIT, "too many tunnels")
            return
        decision = self._rules.evaluate(host, frame.port, "udp" if frame.udp else "tcp")
        if not decision.allowed:
            self._count("requests_not_allowed")
            reason = f"{host}:{frame.port} is not allowed by the server's rules"
            self._refuse(peer, frame.forward_id, DenyCode.NOT_ALLOWED, reason)
            return
        wire_id = self._alloc_wire_id(peer)
        if wire_id is None:
            self._refuse(peer, frame.forward_id, DenyCode.LIMIT, "no free tunnel id")
            return
        handle = self._new_handle()
        tunnel = Tunnel(handle, peer.friend, host, frame.port, frame.udp)
        tunnel.wire_id = wire_id
        tunnel.forward_id = frame.forward_id
        tunnel.deadline = now + self._connect_timeout_s
        peer.tunnels[wire_id] = tunnel
        self._tunnels[handle] = tunnel
        self._events.append(
            ConnectRequest(handle, peer.friend, host, frame.port, frame.udp, decision.restrict_to)
        )

    # --- timers / aborts --------------------------------------------------------------

    def _on_deadline(self, tunnel: Tunnel, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            self._count("connect_timeout")
            peer = self._peers[tunnel.friend]
            self._drop_opening(peer, tunnel)
            self._events.append(TunnelClosed(tunnel.handle, "connect timed out"))
            self._refuse(peer, tunnel.forward_id, DenyCode.TIMEOUT, "connect timed out")

    def _abort_local(self, tunnel: Tunnel, error: str, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            self.connect_result(tunnel.handle, error, now, DenyCode.LOCAL_ERROR)
        else:
            self._abort_open(tunnel, error, now)

    def _on_offline_tunnel(self, peer: Peer, tunnel: Tunnel, now: float) -> None:
        if tunnel.state is TunnelState.OPENING:
            self._drop_opening(peer, tunnel)
            self._events.append(TunnelClosed(tunnel.handle, "friend went offline"))
            return
        super()._on_offline_tunnel(peer, tunnel, now)

    def _on_online(self, peer: Peer, now: float) -> None:
        """Nothing to send: the client speaks first (caps offer or a tunnel request)."""

    # --- helpers ----------------------------------------------------------------------

    def _drop_opening(self, peer: Peer, tunnel: Tunnel) -> None:
        tunnel.state = TunnelState.CLOSED
        self._tunnels.pop(tunnel.handle, None)
        if tunnel.wire_id is not None and peer.tunnels.get(tunnel.wire_id) is tunnel:
            del peer.tunnels[tunnel.wire_id]

    def _refuse(self, peer: Peer, forward_id: int, code: DenyCode, reason: str) -> None:
        self._count("denied")
        if self._flooded(peer):
            return
        if peer.mode is PeerMode.EXTENDED and peer.shared_flags() & CapFlag.DENY:
            self._control(peer.friend, DenyTunnel(forward_id, code, reason))
        elif self._legacy_refusal == "ack_fin":
            wire_id = self._alloc_wire_id(peer)
            if wire_id is None:
                return
            self._control(peer.friend, AckTunnel(wire_id, forward_id))
            self._control(peer.friend, TcpFin(wire_id))
            peer.tombstones[wire_id] = self._now + TOMBSTONE_S

    def _alloc_wire_id(self, peer: Peer) -> int | None:
        """A random unused 16-bit tunnel id (tuntox ``get_random_tunnel_id``), never 0."""
        for _ in range(32):
            candidate = int.from_bytes(self._rng(2), "big")
            if candidate and candidate not in peer.tunnels and candidate not in peer.tombstones:
                return candidate
        for candidate in range(1, 0x10000):
            if candidate not in peer.tunnels and candidate not in peer.tombstones:
                return candidate
        return None
