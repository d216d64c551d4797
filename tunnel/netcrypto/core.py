"""``NetCrypto``: every net_crypto session of one node, sans-IO (tox-protocol.md 6, 7.6).

Sessions are keyed by the peer's real public key (one connection per peer). Packets arrive
over UDP (:meth:`NetCrypto.receive`, the :class:`~tunnel.core.DatagramCore` shape) or through a
TCP relay (:meth:`NetCrypto.receive_tcp`); the bytes are identical on both paths.

* Cookie requests are answered statelessly on the path they came from; nothing is stored, so a
  flood of them costs CPU but no memory.
* Handshakes are verified here (our cookie, fresh, box opens, SHA-512 of the cookie) and then
  handed to the peer's session, or, for a peer without one, accepted only if ``accept_peer``
  (set by friend_connection) says the real key is a friend.
* Data packets are only taken from addresses bound to a session (toxcore does the same).

Path choice per packet (6.8): direct UDP while a valid UDP packet arrived from the peer in the
last ``UDP_DIRECT_TIMEOUT_S``; otherwise via TCP when the relay layer has marked the peer
reachable there, plus UDP for handshake-phase packets and small packets every 4 s; with no TCP
path at all, UDP if an address is known. A session keeps its stream across path switches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tunnel.crypto import KeyPair, Rng
from tunnel.netcrypto import handshake
from tunnel.netcrypto.congestion import MAX_RATE_PKT_S
from tunnel.netcrypto.cookies import Identity
from tunnel.netcrypto.lossy_opener import LossyOpener
from tunnel.netcrypto.session import (
    Established,
    Lossless,
    Lossy,
    NotConnected,
    Session,
    SessionDown,
    SessionStats,
    SessionUp,
)
from tunnel.wire.ip_port import Addr
from tunnel.wire.netcrypto import (
    COOKIE_REQUEST_KIND,
    COOKIE_RESPONSE_KIND,
    DATA_KIND,
    HANDSHAKE_KIND,
    MAX_CRYPTO_PACKET_SIZE_BYTES,
)

UDP_DIRECT_TIMEOUT_S = 8.0
UDP_SMALL_PROBE_INTERVAL_S = 4.0
UDP_SMALL_PROBE_MAX_BYTES = 96
TCP_MAX_RATE_PKT_S = 1000.0
"""Rate cap while a session runs over TCP relays. tox-bootstrapd's relay reads a frame only once
it is whole and polls every 30 ms; Linux frees coalesced receive memory only when the buffer is
fully read, so a half-received frame can pin its receive buffer, the window closes and the frame
never completes (zero-window probes, the relay socket's memory full with ~1.3 KB unread). The
relay client's writes are paced (``tunnel.io.tcp_relay.WriteBudget``, ``TCP_NOTSENT_LOWAT``),
which let two of our clients blast ~30 Mbit/s through it on loopback, but with a NAT router in
between (tests/forward test_10) 3500 still stalled a 1 MB echo in 3 of 6 runs; 1000 (~1.4 MB/s,
~40 KiB per relay tick) passed 6 of 6. Toxcore clients flooded by a relay also stall
(toxcore-test-peers.md 5.2)."""


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ConnectionUp:
    """The session with ``peer_pk`` is established."""

    peer_pk: bytes


@dataclass(frozen=True, slots=True)
class ConnectionDown:
    """The session with ``peer_pk`` is gone (``reason`` for logs)."""

    peer_pk: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class LosslessPacket:
    """An in-order lossless packet ``[id][data]`` from ``peer_pk``."""

    peer_pk: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class LossyPacket:
    """A lossy packet ``[id][data]`` from ``peer_pk``."""

    peer_pk: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class PeerDhtKey:
    """A peer presented a handshake with a DHT key we did not know for it."""

    peer_pk: bytes
    dht_pk: bytes


NetCryptoEvent = ConnectionUp | ConnectionDown | LosslessPacket | LossyPacket | PeerDhtKey


@dataclass(frozen=True, slots=True)
class TcpPacket:
    """A net_crypto packet for the TCP relay layer: to ``dht_pk`` (via ``via`` if given)."""

    dht_pk: bytes
    data: bytes
    via: object = None


@dataclass(slots=True)
class _Path:
    udp_addr: Addr | None = None
    last_udp_recv: float = -1e18
    last_small_probe: float = -1e18
    tcp: bool = False


class NetCrypto:
    """All net_crypto sessions of one node; implements :class:`tunnel.core.DatagramCore`."""

    def __init__(
        self,
        real: KeyPair,
        dht: KeyPair,
        rng: Rng,
        *,
        accept_peer: Callable[[bytes, bytes], bool] | None = None,
    ) -> None:
        self.ident = Identity.create(real, dht, rng)
        self.accept_peer = accept_peer or (lambda _real, _dht: False)
        self.sessions: dict[bytes, Session] = {}
        self._paths: dict[bytes, _Path] = {}
        self._by_addr: dict[Addr, bytes] = {}
        self._udp_out: list[tuple[Addr, bytes]] = []
        self._tcp_out: list[TcpPacket] = []
        self._events: list[NetCryptoEvent] = []
        self.counters: Counter[str] = Counter()
        self.tcp_enabled = False
        """True when a TCP relay layer is attached: peers are then also tried via TCP."""
        self._now = 0.0

    @property
    def last_now(self) -> float:
        """The latest ``now`` given with a packet or timer: the time of pending :meth:`events`
        (callers draining them without a clock of their own use it)."""
        return self._now

    # ------------------------------------------------------------------ commands

    def connect(
        self,
        peer_pk: bytes,
        peer_dht_pk: bytes,
        now: float,
        *,
        udp_addr: Addr | None = None,
        direct: bool = False,
    ) -> Session:
        """Start (or return the existing) session with ``peer_pk`` as initiator."""
        existing = self.sessions.get(peer_pk)
        if existing is not None and not existing.closed:
            if udp_addr is not None:
                self.set_udp_addr(peer_pk, udp_addr, now, direct=direct)
            return existing
        session = Session.initiate(self.ident, peer_pk, peer_dht_pk, now)
        self._add(session)
        if udp_addr is not None:
            self.set_udp_addr(peer_pk, udp_addr, now, direct=direct)
        self._flush(session, now)
        return session

    def set_udp_addr(self, peer_pk: bytes, addr: Addr, now: float, *, direct: bool = False) -> None:
        """Tell us the peer's UDP address (``direct``: DHT just heard from it there)."""
        path = self._paths.get(peer_pk)
        if path is None:
            return
        if path.udp_addr is not None and self._by_addr.get(path.udp_addr) == peer_pk:
            del self._by_addr[path.udp_addr]
        if addr != path.udp_addr:
            session = self.sessions.get(peer_pk)
            if session is not None and session.large is not None:
                session.large.path_changed()  # a large packet's proof holds for one path
        path.udp_addr = addr
        self._by_addr[addr] = peer_pk
        if direct:
            path.last_udp_recv = now

    def lossy_opener(self, peer_pk: bytes, packet_id: int) -> LossyOpener | None:
        """A :class:`LossyOpener` for the peer's lossy ``packet_id`` packets that marks the
        peer's UDP path alive as :meth:`receive` would; None unless established."""
        session = self.sessions.get(peer_pk)
        path = self._paths.get(peer_pk)
        if session is None or path is None or not isinstance(session.state, Established):
            return None
        return LossyOpener(session, session.state.data_key, path, packet_id)

    def udp_path_lost(self, peer_pk: bytes) -> None:
        """The caller's own liveness check (issue 11's keepalives) says direct UDP to the peer
        is gone: route over TCP at once instead of after ``UDP_DIRECT_TIMEOUT_S``. The next
        valid UDP packet from the peer makes the path direct again."""
        path = self._paths.get(peer_pk)
        if path is not None:
            path.last_udp_recv = -1e18

    def set_tcp_available(self, peer_pk: bytes, available: bool) -> None:
        """The relay layer can (or can no longer) carry packets to this peer."""
        path = self._paths.get(peer_pk)
        if path is not None:
            path.tcp = available

    def send_lossless(
        self, peer_pk: bytes, payload: bytes, now: float, *, congestion_control: bool = True
    ) -> int:
        """Queue a lossless packet; see :meth:`Session.send_lossless` (same exceptions)."""
        session = self._established(peer_pk)
        number = session.send_lossless(payload, now, congestion_control=congestion_control)
        self._flush(session, now)
        return number

    def send_lossless_many(self, peer_pk: bytes, payloads: list[bytes], now: float) -> int:
        """Queue lossless packets while there is room; see :meth:`Session.send_lossless_many`."""
        session = self._established(peer_pk)
        try:
            return session.send_lossless_many(payloads, now)
        finally:
            self._flush(session, now)

    def send_lossy(self, peer_pk: bytes, payload: bytes, now: float) -> None:
        """Send a lossy packet; see :meth:`Session.send_lossy`."""
        session = self._established(peer_pk)
        session.send_lossy(payload, now)
        self._flush(session, now)

    def send_capacity(self, peer_pk: bytes) -> int:
        """Congestion-controlled lossless packets that may be queued now (0 if not connected)."""
        session = self.sessions.get(peer_pk)
        return 0 if session is None else session.send_capacity()

    def delivered(self, peer_pk: bytes, number: int) -> bool:
        """Whether the lossless packet ``number`` reached ``peer_pk`` (current session)."""
        session = self.sessions.get(peer_pk)
        return session is not None and session.delivered(number)

    def kill(self, peer_pk: bytes, now: float) -> None:
        """Close the session (sending a kill packet if established) and forget it."""
        session = self.sessions.get(peer_pk)
        if session is None:
            return
        session.close(now)
        self._flush(session, now)

    def is_established(self, peer_pk: bytes) -> bool:
        """True if a session with ``peer_pk`` is established."""
        session = self.sessions.get(peer_pk)
        return session is not None and session.established

    def is_direct(self, peer_pk: bytes, now: float) -> bool:
        """True if the peer is currently reachable by direct UDP."""
        path = self._paths.get(peer_pk)
        return path is not None and now - path.last_udp_recv < UDP_DIRECT_TIMEOUT_S

    def udp_addr(self, peer_pk: bytes) -> Addr | None:
        """The peer's current UDP address (None if unknown)."""
        path = self._paths.get(peer_pk)
        return None if path is None else path.udp_addr

    def statistics(self, peer_pk: bytes) -> SessionStats | None:
        """Per-peer statistics snapshot, or ``None`` without a session."""
        session = self.sessions.get(peer_pk)
        return None if session is None else session.statistics()

    def _established(self, peer_pk: bytes) -> Session:
        session = self.sessions.get(peer_pk)
        if session is None or not session.established:
            raise NotConnected("no established session with this peer")
        return session

    def _add(self, session: Session) -> None:
        self.sessions[session.peer_real_pk] = session
        self._paths.setdefault(session.peer_real_pk, _Path())

    # ------------------------------------------------------------------ DatagramCore

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A UDP datagram from ``addr``."""
        if now > self._now:
            self._now = now
        if data and data[0] == DATA_KIND:  # the bulk path: _receive's data branch inline
            peer = self._by_addr.get(addr)
            session = None if peer is None else self.sessions.get(peer)
            if session is None:
                self.counters["data_unknown_source"] += 1
                return
            if session.handle_data(data, now):
                self._paths[session.peer_real_pk].last_udp_recv = now
            self._flush(session, now)
            return
        self._receive(data, now, addr=addr)

    def receive_tcp(self, data: bytes, sender_dht_pk: bytes, via: object, now: float) -> None:
        """A net_crypto packet that came through a TCP relay from ``sender_dht_pk``."""
        self._now = max(self._now, now)
        self._receive(data, now, tcp=(sender_dht_pk, via))

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain UDP datagrams."""
        out, self._udp_out = self._udp_out, []
        return out

    def tcp_packets_to_send(self) -> list[TcpPacket]:
        """Drain packets for the TCP relay layer."""
        out, self._tcp_out = self._tcp_out, []
        return out

    def next_event(self) -> NetCryptoEvent | None:
        """Pop the oldest event."""
        return self._events.pop(0) if self._events else None

    def events(self) -> list[NetCryptoEvent]:
        """Drain all pending events."""
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float | None:
        """Earliest session deadline."""
        deadlines = [d for s in self.sessions.values() if (d := s.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run every session's timers."""
        self._now = max(self._now, now)
        for session in list(self.sessions.values()):
            deadline = session.next_deadline()
            if deadline is not None and deadline <= now:
                session.handle_timer(now)
            self._flush(session, now)

    # ------------------------------------------------------------------ input

    def _receive(
        self,
        data: bytes,
        now: float,
        *,
        addr: Addr | None = None,
        tcp: tuple[bytes, object] | None = None,
    ) -> None:
        if not data:
            self.counters["empty"] += 1
            return
        kind = data[0]
        if kind == COOKIE_REQUEST_KIND:
            self._handle_cookie_request(data, now, addr, tcp)
        elif kind == COOKIE_RESPONSE_KIND:
            session = self._session_for(addr, tcp)
            if session is None:
                self.counters["cookie_response_unknown_source"] += 1
                return
            if session.handle_cookie_response(data, now):
                self._mark_udp(session, addr, now)
            self._flush(session, now)
        elif kind == HANDSHAKE_KIND:
            self._handle_handshake(data, now, addr, tcp)
        elif kind == DATA_KIND:
            session = self._session_for(addr, tcp)
            if session is None:
                self.counters["data_unknown_source"] += 1
                return
            if session.handle_data(data, now):
                self._mark_udp(session, addr, now)
            self._flush(session, now)
        else:
            self.counters["not_netcrypto"] += 1

    def _session_for(self, addr: Addr | None, tcp: tuple[bytes, object] | None) -> Session | None:
        if addr is not None:
            peer = self._by_addr.get(addr)
            return None if peer is None else self.sessions.get(peer)
        if tcp is not None:
            for session in self.sessions.values():
                if session.peer_dht_pk == tcp[0] and not session.closed:
                    return session
        return None

    def _mark_udp(self, session: Session, addr: Addr | None, now: float) -> None:
        if addr is not None:
            self._paths[session.peer_real_pk].last_udp_recv = now

    def _handle_cookie_request(
        self, data: bytes, now: float, addr: Addr | None, tcp: tuple[bytes, object] | None
    ) -> None:
        request = handshake.open_cookie_request(self.ident, data, self.counters)
        if request is None:
            return
        if tcp is not None and tcp[0] != request.sender_dht_pk:
            self.counters["cookie_request_oob_mismatch"] += 1
            return
        response = handshake.make_cookie_response(self.ident, request, now)
        self.counters["cookie_responses_sent"] += 1
        if addr is not None:
            self._udp_out.append((addr, response))
        elif tcp is not None:
            self._tcp_out.append(TcpPacket(tcp[0], response, tcp[1]))

    def _handle_handshake(
        self, data: bytes, now: float, addr: Addr | None, tcp: tuple[bytes, object] | None
    ) -> None:
        peer = handshake.open_handshake(self.ident, data, now, self.counters)
        if peer is None:
            return
        if tcp is not None and tcp[0] != peer.dht_pk:
            self.counters["handshake_oob_mismatch"] += 1
            return
        session = self.sessions.get(peer.real_pk)
        if session is not None and not session.closed:
            if session.peer_dht_pk != peer.dht_pk:
                # The peer restarted with a new DHT key: replace the session.
                self._events.append(PeerDhtKey(peer.real_pk, peer.dht_pk))
                session.close(now)
                self._flush(session, now)
            elif session.handle_handshake(peer, now):
                self._bind(session, addr, tcp, now)
                self._flush(session, now)
                return
            else:
                return
        if not self.accept_peer(peer.real_pk, peer.dht_pk):
            self.counters["handshake_not_accepted"] += 1
            return
        session = Session.accept(self.ident, peer, now)
        self._add(session)
        self._bind(session, addr, tcp, now)
        self._flush(session, now)

    def _bind(
        self, session: Session, addr: Addr | None, tcp: tuple[bytes, object] | None, now: float
    ) -> None:
        if addr is not None:
            self.set_udp_addr(session.peer_real_pk, addr, now, direct=True)
        if tcp is not None:
            self._paths[session.peer_real_pk].tcp = True

    # ------------------------------------------------------------------ output

    def _flush(self, session: Session, now: float) -> None:
        peer = session.peer_real_pk
        if session.outbox:
            path = self._paths[peer]
            direct = now - path.last_udp_recv < UDP_DIRECT_TIMEOUT_S
            via_tcp = not direct and (path.tcp or self.tcp_enabled)
            session.congestion.set_rate_cap(TCP_MAX_RATE_PKT_S if via_tcp else MAX_RATE_PKT_S)
            large = session.large
            if large is not None and large.direct != direct:
                large.set_direct(direct)
            if session.closed:
                self._route_everywhere(session, path)  # the kill packet
            else:
                for packet in session.outbox:
                    self._route(session, path, packet, direct, now)
            session.outbox.clear()
        if session.events:
            for event in session.events:
                if isinstance(event, Lossless):
                    self._events.append(LosslessPacket(peer, event.payload))
                elif isinstance(event, Lossy):
                    self._events.append(LossyPacket(peer, event.payload))
                elif isinstance(event, SessionUp):
                    self._events.append(ConnectionUp(peer))
                elif isinstance(event, SessionDown):
                    self._events.append(ConnectionDown(peer, event.reason))
            session.events.clear()
        if session.closed and self.sessions.get(peer) is session:
            del self.sessions[peer]
            gone = self._paths.pop(peer, None)
            if gone is not None and gone.udp_addr is not None:
                self._by_addr.pop(gone.udp_addr, None)

    def _route_everywhere(self, session: Session, path: _Path) -> None:
        """A closing session's last packets (its kill) go by UDP and by the relays both: a peer
        that has not taken our UDP address for this session yet (toxcore drops data packets
        from an address it does not know for the connection) still gets the kill at once."""
        for packet in session.outbox:
            if path.udp_addr is not None:
                self._udp_out.append((path.udp_addr, packet))
            if path.tcp or self.tcp_enabled:
                self._tcp_out.append(TcpPacket(session.peer_dht_pk, packet))

    def _route(
        self, session: Session, path: _Path, packet: bytes, direct: bool, now: float
    ) -> None:
        tcp = path.tcp or self.tcp_enabled
        if path.udp_addr is not None and (direct or not tcp):
            self._udp_out.append((path.udp_addr, packet))
            return
        if tcp:
            if len(packet) > MAX_CRYPTO_PACKET_SIZE_BYTES:
                # a large packet built for the direct path that just went away (_flush told
                # session.large so): relays take toxcore-sized packets only; its resend goes
                # as fragments
                self.counters["large_dropped_not_direct"] += 1
                return
            self._tcp_out.append(TcpPacket(session.peer_dht_pk, packet))
        if path.udp_addr is None:
            return
        if packet[0] != DATA_KIND:
            self._udp_out.append((path.udp_addr, packet))
        elif (
            len(packet) < UDP_SMALL_PROBE_MAX_BYTES
            and now - path.last_small_probe >= UDP_SMALL_PROBE_INTERVAL_S
        ):
            path.last_small_probe = now
            self._udp_out.append((path.udp_addr, packet))
