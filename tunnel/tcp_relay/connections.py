"""Client-side pool of TCP relay connections for the layers above (tox-protocol.md 7.6).

Sans-IO. The pool decides *which* relays to connect to and when (with exponential backoff and
jitter after failures), keeps one :class:`RelayClientConnection` per connected relay, asks
every connected relay for a route to every peer it was told about, and offers net_crypto and
the onion a transport keyed by public keys:

* :meth:`RelayPool.send_to_peer` sends on the first relay where the peer is online; if there
  is none it sends the packet out-of-band (<= 1024 bytes) on every relay where the peer is
  registered (or, failing that, on every connected relay), as toxcore's ``TCP_connection.c``
  does;
* :meth:`RelayPool.send_onion_request` uses a connected relay as onion node A;
* events report relays coming and going, peers going online/offline per relay, routed data,
  OOB data and onion responses.

Driver contract (see :mod:`tunnel.io.tcp_relay`)::

    connect_requests() -> [RelayInfo]   open a stream (directly or via proxy) to each
    connection_made(pk, now) / connection_failed(pk, now, reason)
    receive_data(pk, data, now) / data_to_send(pk) / pop_writable()
    pop_to_close() -> [pk]              close these streams (the core gave up on them)
    connection_lost(pk, now)
    next_deadline() / handle_timer(now)

Peers and relays are identified by DHT public keys (TCP relay clients are DHT identities).
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field

from tunnel.crypto import KeyPair, Rng
from tunnel.tcp_relay.client import (
    TCP_CONNECTION_TIMEOUT_S,
    ClientStatus,
    Confirmed,
    ConnectionClosed,
    OnionResponseReceived,
    OobReceived,
    PongReceived,
    RelayClientConnection,
    RoutedData,
    RouteOffline,
    RouteOnline,
    RouteRefused,
    RouteRegistered,
    RouteStatus,
)
from tunnel.wire.ip_port import IPPort
from tunnel.wire.tcp_relay import MAX_OOB_DATA_SIZE_BYTES

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
ROUTE_RETRY_INITIAL_S = 2.0
ROUTE_RETRY_MAX_S = 20.0
"""A refused routing request is asked again after 2, 4, 8... up to 20 s while the peer is
still wanted. toxcore's client never asks again; a relay refuses when its slots are full, or
(a friends-only onion relay, issue 10) when it does not know our DHT key yet: it learns it
from the onion a moment later, and only a new request links us then."""


@dataclass(frozen=True, slots=True)
class RelayInfo:
    """Where a relay is and who it is (its DHT public key)."""

    ip_port: IPPort
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RelayConnected:
    """A relay accepted our handshake."""

    relay: RelayInfo


@dataclass(frozen=True, slots=True)
class RelayDisconnected:
    """A relay connection ended (a reconnect is scheduled unless it was removed)."""

    relay: RelayInfo
    reason: str


@dataclass(frozen=True, slots=True)
class PeerOnline:
    """``peer`` is linked with us on ``relay``."""

    peer: bytes
    relay: bytes


@dataclass(frozen=True, slots=True)
class PeerOffline:
    """``peer`` is no longer linked with us on ``relay``."""

    peer: bytes
    relay: bytes


@dataclass(frozen=True, slots=True)
class PeerData:
    """Data from ``peer`` (routed, or OOB from a known peer) via ``relay``."""

    peer: bytes
    relay: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OobData:
    """OOB data from a relay client that is not one of our peers (e.g. a new net_crypto peer)."""

    sender: bytes
    relay: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OnionData:
    """A raw onion response (0x84/0x86) that came back through ``relay``."""

    relay: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class RelayPong:
    """The relay answered our ping after ``rtt_s`` seconds (every 30 s while connected)."""

    relay: bytes
    rtt_s: float


PoolEvent = (
    RelayConnected
    | RelayDisconnected
    | RelayPong
    | PeerOnline
    | PeerOffline
    | PeerData
    | OobData
    | OnionData
)


class _RelayState(enum.Enum):
    WAITING = "waiting"  # until retry_at
    CONNECTING = "connecting"  # driver asked to open a stream
    CONNECTED = "connected"  # stream open; handshake maybe still running


@dataclass(slots=True)
class _Relay:
    info: RelayInfo
    state: _RelayState = _RelayState.WAITING
    retry_at: float = 0.0
    failures: int = 0
    conn: RelayClientConnection | None = None
    connect_deadline: float = 0.0
    last_rtt_s: float | None = None
    online: dict[bytes, None] = field(default_factory=dict)
    refused: dict[bytes, tuple[float, int]] = field(default_factory=dict)
    """Peer -> (when to ask for its route again, refusals so far)."""


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """Snapshot of one relay in the pool."""

    relay: RelayInfo
    state: str
    failures: int
    confirmed: bool
    last_rtt_s: float | None
    routes: int


class RelayPool:
    """Keeps connections to a set of relays and routes to a set of peers over them."""

    def __init__(
        self,
        self_keys: KeyPair,
        rng: Rng,
        *,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.self_keys = self_keys
        self._rng = rng
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._relays: dict[bytes, _Relay] = {}
        self._peers: dict[bytes, None] = {}
        self._events: deque[PoolEvent] = deque()
        self._connect: list[RelayInfo] = []
        self._to_close: list[bytes] = []
        self._writable: dict[bytes, None] = {}
        self._onion_rr = 0

    # ------------------------------------------------------------------ for the layers above

    def add_relay(self, ip_port: IPPort, public_key: bytes, now: float) -> None:
        """Keep a connection to this relay (no-op if it is already in the pool)."""
        if public_key in self._relays:
            return
        self._relays[public_key] = _Relay(RelayInfo(ip_port, public_key), retry_at=now)

    def remove_relay(self, public_key: bytes) -> None:
        """Stop using a relay; its stream is closed."""
        relay = self._relays.pop(public_key, None)
        if relay is None:
            return
        if relay.state is not _RelayState.WAITING:
            self._to_close.append(public_key)

    def relays(self) -> list[RelayStatus]:
        """Status of every relay in the pool."""
        out = []
        for relay in self._relays.values():
            conn = relay.conn
            out.append(
                RelayStatus(
                    relay.info,
                    relay.state.value,
                    relay.failures,
                    conn is not None and conn.status is ClientStatus.CONFIRMED,
                    relay.last_rtt_s,
                    len(conn.routes()) if conn is not None else 0,
                )
            )
        return out

    def connected_relays(self) -> list[RelayInfo]:
        """Relays whose handshake completed."""
        return [r.info for r in self._relays.values() if self._confirmed(r)]

    def add_peer(self, public_key: bytes) -> None:
        """Route to the peer with this DHT pk on every connected relay (now and later)."""
        if public_key in self._peers:
            return
        self._peers[public_key] = None
        for relay in self._relays.values():
            if self._confirmed(relay):
                assert relay.conn is not None
                relay.conn.send_routing_request(public_key)
                self._mark_writable(relay)

    def remove_peer(self, public_key: bytes) -> None:
        """Stop routing to a peer; its slots are freed at every relay."""
        if self._peers.pop(public_key, "absent") == "absent":
            return
        for relay in self._relays.values():
            conn = relay.conn
            if conn is None or conn.status is not ClientStatus.CONFIRMED:
                continue
            cid = conn.connection_id_for(public_key)
            relay.online.pop(public_key, None)
            relay.refused.pop(public_key, None)
            if cid is not None:
                conn.send_disconnect(cid)
                self._mark_writable(relay)

    def peer_online(self, public_key: bytes) -> bool:
        """True if the peer is linked with us on at least one relay."""
        return any(
            self._peer_slot(r, public_key, RouteStatus.ONLINE) for r in self._relays.values()
        )

    def peer_has_room(self, public_key: bytes, size: int) -> bool:
        """Would :meth:`send_to_peer` route ``size`` bytes now: the peer is online on a relay
        whose send queue has room for them? (False while the peer is online nowhere.)"""
        for relay in self._relays.values():
            if self._peer_slot(relay, public_key, RouteStatus.ONLINE) is not None:
                assert relay.conn is not None
                if relay.conn.can_send(size):
                    return True
        return False

    def send_to_peer(self, public_key: bytes, data: bytes) -> bool:
        """Send a net_crypto packet to a peer over the relays (False: could not send now)."""
        full = False
        for relay in self._relays.values():
            cid = self._peer_slot(relay, public_key, RouteStatus.ONLINE)
            if cid is None:
                continue
            assert relay.conn is not None
            if relay.conn.send_data(cid, data):
                self._mark_writable(relay)
                return True
            full = True
        if full or len(data) > MAX_OOB_DATA_SIZE_BYTES:
            return False
        registered = [
            r
            for r in self._relays.values()
            if self._peer_slot(r, public_key, RouteStatus.REGISTERED)
        ]
        targets = registered or [r for r in self._relays.values() if self._confirmed(r)]
        sent = False
        for relay in targets:
            assert relay.conn is not None
            if relay.conn.send_oob(public_key, data):
                self._mark_writable(relay)
                sent = True
        return sent

    def send_oob(self, relay_public_key: bytes, dest_public_key: bytes, data: bytes) -> bool:
        """OOB ``data`` to ``dest_public_key`` via one particular relay."""
        relay = self._relays.get(relay_public_key)
        if relay is None or not self._confirmed(relay):
            return False
        assert relay.conn is not None
        if relay.conn.send_oob(dest_public_key, data):
            self._mark_writable(relay)
            return True
        return False

    def send_onion_request(self, payload: bytes, relay_public_key: bytes | None = None) -> bool:
        """Send an onion request (``[nonce][IPP][pk][box]``) via a relay acting as node A.

        Without ``relay_public_key`` the connected relays take turns.
        """
        if relay_public_key is not None:
            chosen = self._relays.get(relay_public_key)
            candidates = [chosen] if chosen is not None and self._confirmed(chosen) else []
        else:
            live = [r for r in self._relays.values() if self._confirmed(r)]
            if live:
                self._onion_rr = (self._onion_rr + 1) % len(live)
                candidates = live[self._onion_rr :] + live[: self._onion_rr]
            else:
                candidates = []
        for relay in candidates:
            assert relay.conn is not None
            if relay.conn.send_onion_request(payload):
                self._mark_writable(relay)
                return True
        return False

    def next_event(self) -> PoolEvent | None:
        """The next event for the layers above, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ driver side

    def connect_requests(self) -> list[RelayInfo]:
        """Relays the driver should open a stream to now (each reported once)."""
        out, self._connect = self._connect, []
        return out

    def connection_made(self, relay_public_key: bytes, now: float) -> None:
        """The driver's stream (direct or through the proxy) to this relay is open."""
        relay = self._relays.get(relay_public_key)
        if relay is None or relay.state is not _RelayState.CONNECTING:
            self._to_close.append(relay_public_key)
            return
        relay.state = _RelayState.CONNECTED
        relay.conn = RelayClientConnection(
            self.self_keys,
            relay_public_key,
            self._rng,
            relay.connect_deadline - TCP_CONNECTION_TIMEOUT_S,
        )
        self._mark_writable(relay)

    def connection_failed(self, relay_public_key: bytes, now: float, reason: str) -> None:
        """The driver could not open the stream."""
        relay = self._relays.get(relay_public_key)
        if relay is not None and relay.state is _RelayState.CONNECTING:
            self._schedule_retry(relay, now)

    def connection_lost(self, relay_public_key: bytes, now: float) -> None:
        """The stream ended (by the peer, an error, or because we asked to close it)."""
        relay = self._relays.get(relay_public_key)
        if relay is None or relay.state is not _RelayState.CONNECTED:
            return
        assert relay.conn is not None
        relay.conn.connection_lost("stream closed")
        self._pump_events(relay, now)

    def receive_data(self, relay_public_key: bytes, data: bytes, now: float) -> None:
        """Bytes read from the stream of this relay."""
        relay = self._relays.get(relay_public_key)
        if relay is None or relay.conn is None:
            return
        relay.conn.receive_data(data, now)
        self._pump_events(relay, now)
        if relay.conn is not None and relay.conn.wants_write():
            self._mark_writable(relay)

    def data_to_send(self, relay_public_key: bytes, max_bytes: int | None = None) -> bytes:
        """Bytes to write to this relay's stream."""
        relay = self._relays.get(relay_public_key)
        if relay is None or relay.conn is None:
            return b""
        return relay.conn.data_to_send(max_bytes)

    def wants_write(self, relay_public_key: bytes) -> bool:
        """True while this relay's stream has output queued (:meth:`data_to_send` not empty)."""
        relay = self._relays.get(relay_public_key)
        return relay is not None and relay.conn is not None and relay.conn.wants_write()

    def pop_writable(self) -> list[bytes]:
        """Relays with new output since the last call."""
        out = list(self._writable)
        self._writable.clear()
        return out

    def pop_to_close(self) -> list[bytes]:
        """Relays whose stream the driver must close."""
        out, self._to_close = self._to_close, []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run."""
        deadlines: list[float] = []
        for relay in self._relays.values():
            if relay.state is _RelayState.WAITING:
                deadlines.append(relay.retry_at)
            elif relay.state is _RelayState.CONNECTING:
                deadlines.append(relay.connect_deadline)
            elif relay.conn is not None:
                if (d := relay.conn.next_deadline()) is not None:
                    deadlines.append(d)
                retry = min((at for at, _ in relay.refused.values()), default=math.inf)
                if retry < math.inf:
                    deadlines.append(retry)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Start due (re)connections, run connection timers."""
        for relay in list(self._relays.values()):
            if relay.state is _RelayState.WAITING and now >= relay.retry_at:
                relay.state = _RelayState.CONNECTING
                relay.connect_deadline = now + TCP_CONNECTION_TIMEOUT_S
                self._connect.append(relay.info)
            elif relay.state is _RelayState.CONNECTING and now >= relay.connect_deadline:
                self._to_close.append(relay.info.public_key)
                self._schedule_retry(relay, now)
            elif relay.state is _RelayState.CONNECTED and relay.conn is not None:
                relay.conn.handle_timer(now)
                self._pump_events(relay, now)
                self._retry_refused_routes(relay, now)
                if relay.conn is not None and relay.conn.wants_write():
                    self._mark_writable(relay)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _confirmed(relay: _Relay) -> bool:
        return relay.conn is not None and relay.conn.status is ClientStatus.CONFIRMED

    def _peer_slot(self, relay: _Relay, peer: bytes, status: RouteStatus) -> int | None:
        conn = relay.conn
        if conn is None or conn.status is not ClientStatus.CONFIRMED:
            return None
        cid = conn.connection_id_for(peer)
        if cid is None or conn.route_status(cid) is not status:
            return None
        return cid

    def _mark_writable(self, relay: _Relay) -> None:
        self._writable[relay.info.public_key] = None

    def _schedule_retry(self, relay: _Relay, now: float) -> None:
        delay = min(self._backoff_max_s, self._backoff_initial_s * (2**relay.failures))
        jitter = 0.5 + int.from_bytes(self._rng(2), "big") / 65536 / 2
        relay.failures = min(relay.failures + 1, 30)
        relay.state = _RelayState.WAITING
        relay.retry_at = now + delay * jitter
        relay.conn = None

    def _retry_refused_routes(self, relay: _Relay, now: float) -> None:
        conn = relay.conn
        if conn is None or conn.status is not ClientStatus.CONFIRMED or not relay.refused:
            return
        for peer, (at, _) in list(relay.refused.items()):
            if at > now:
                continue
            if peer not in self._peers or conn.connection_id_for(peer) is not None:
                del relay.refused[peer]
                continue
            conn.send_routing_request(peer)
            self._mark_writable(relay)
            relay.refused[peer] = (math.inf, relay.refused[peer][1])  # until the answer

    def _route_refused(self, relay: _Relay, peer: bytes, now: float) -> None:
        if peer not in self._peers:
            return
        refusals = relay.refused.get(peer, (0.0, 0))[1]
        delay = min(ROUTE_RETRY_MAX_S, ROUTE_RETRY_INITIAL_S * 2 ** min(refusals, 10))
        relay.refused[peer] = (now + delay, refusals + 1)

    def _pump_events(self, relay: _Relay, now: float) -> None:
        conn = relay.conn
        if conn is None:
            return
        rpk = relay.info.public_key
        while (ev := conn.next_event()) is not None:
            match ev:
                case Confirmed():
                    relay.failures = 0
                    relay.refused.clear()
                    for peer in self._peers:
                        conn.send_routing_request(peer)
                    self._mark_writable(relay)
                    self._events.append(RelayConnected(relay.info))
                case RouteOnline(public_key=pk):
                    if pk in self._peers:
                        relay.online[pk] = None
                        self._events.append(PeerOnline(pk, rpk))
                case RouteOffline(public_key=pk):
                    if relay.online.pop(pk, "absent") != "absent":
                        self._events.append(PeerOffline(pk, rpk))
                case RoutedData(public_key=pk, data=data):
                    self._events.append(PeerData(pk, rpk, data))
                case OobReceived(public_key=pk, data=data):
                    if pk in self._peers:
                        self._events.append(PeerData(pk, rpk, data))
                    else:
                        self._events.append(OobData(pk, rpk, data))
                case OnionResponseReceived(data=data):
                    self._events.append(OnionData(rpk, data))
                case PongReceived(rtt_s=rtt):
                    relay.last_rtt_s = rtt
                    self._events.append(RelayPong(rpk, rtt))
                case RouteRegistered(public_key=pk):
                    relay.refused.pop(pk, None)
                case RouteRefused(public_key=pk):
                    self._route_refused(relay, pk, now)
                case ConnectionClosed(reason=reason):
                    self._to_close.append(rpk)
                    for peer in relay.online:
                        self._events.append(PeerOffline(peer, rpk))
                    relay.online.clear()
                    self._events.append(RelayDisconnected(relay.info, reason))
                    self._schedule_retry(relay, now)
                    return
