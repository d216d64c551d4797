"""friend_connection, sans-IO: keep one net_crypto session per friend alive (tox-protocol.md 8.1).

Theory of operation. Each friend (keyed by real public key) is CONNECTING or CONNECTED.

* CONNECTING: when the friend's DHT key is known and no session exists, start one as initiator
  (cookie request to the DHT key, over the last known UDP address and/or TCP). A failed attempt
  dies after ~8 s in net_crypto; we retry every ``CONNECT_RETRY_INTERVAL_S``. A friend's
  handshake arriving first is accepted (``accept_peer``) when we have no session with it.
* CONNECTED (net_crypto established): send ALIVE ``[16]`` every ``FRIEND_PING_INTERVAL_S``,
  SHARE_RELAYS ``[17]`` at once and every ``SHARE_RELAYS_INTERVAL_S`` (when we have relays);
  only a received ALIVE refreshes the receive timer, and ``FRIEND_CONNECTION_TIMEOUT_S``
  without one kills the session (back to CONNECTING, reconnect follows).
* SHARE_RELAYS from the friend: up to 3 relays, remembered (24 at most) and reported as
  :class:`RelaysShared` so the node adds them to its relay pool; a LAN relay whose key is the
  friend's DHT key is one the friend hosts, reached at the friend's address.
* FRIEND_REQUESTS ``[18][nospam][message]`` over the connection: reported as
  :class:`FriendRequestPacket` (the node applies the onion request rules).
* Everything else the friend sends goes up as :class:`FriendLossless`/:class:`FriendLossy`.

The object is a :class:`tunnel.core.DatagramCore` over its :class:`NetCrypto` (UDP side);
relay traffic goes through ``netcrypto.receive_tcp`` / ``tcp_packets_to_send``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunnel.errors import BadPacket
from tunnel.netcrypto.core import (
    ConnectionDown,
    ConnectionUp,
    LosslessPacket,
    LossyPacket,
    NetCrypto,
    PeerDhtKey,
)
from tunnel.netcrypto.session import NotConnected, SendQueueFull
from tunnel.wire.ip_port import Addr, IPPort, ip_is_lan
from tunnel.wire.messenger import (
    ALIVE,
    PACKET_ID_ALIVE,
    PACKET_ID_FRIEND_REQUESTS,
    PACKET_ID_SHARE_RELAYS,
    decode_share_relays_untrusted,
    encode_share_relays,
)
from tunnel.wire.onion_data import FriendRequestPayload
from tunnel.wire.packed_node import PackedNode

FRIEND_PING_INTERVAL_S = 8.0
FRIEND_CONNECTION_TIMEOUT_S = 32.0
SHARE_RELAYS_INTERVAL_S = 120.0
CONNECT_RETRY_INTERVAL_S = 1.0
FRIEND_MAX_STORED_TCP_RELAYS = 24
MAX_SHARED_RELAYS = 3


class FriendStatus(enum.Enum):
    """friend_connection status (toxcore FRIENDCONN_STATUS_*)."""

    CONNECTING = 1
    CONNECTED = 2


@dataclass(frozen=True, slots=True)
class FriendUp:
    """The friend's session is established."""

    peer_pk: bytes


@dataclass(frozen=True, slots=True)
class FriendDown:
    """The friend's session is gone (``reason`` for logs)."""

    peer_pk: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class FriendLossless:
    """A lossless packet ``[id][data]`` for the Messenger layer."""

    peer_pk: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class FriendLossy:
    """A lossy packet ``[id][data]`` for the Messenger layer."""

    peer_pk: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class RelaysShared:
    """The friend told us relays it uses (tie them to the friend in the TCP layer)."""

    peer_pk: bytes
    relays: tuple[PackedNode, ...]


@dataclass(frozen=True, slots=True)
class FriendRequestPacket:
    """A friend request ``[0x12][nospam][message]`` that came over the friend's connection.

    Same payload and rules as an onion friend request (c-toxcore hands both to
    ``friendreq_handlepacket``): the receiver checks the nospam, dedupes the sender and
    filters existing friends (:meth:`tunnel.onion.friend_requests.FriendRequests.
    accept_incoming`).
    """

    peer_pk: bytes
    request: FriendRequestPayload


FriendEvent = (
    FriendUp | FriendDown | FriendLossless | FriendLossy | RelaysShared | FriendRequestPacket
)


@dataclass(slots=True)
class _Friend:
    real_pk: bytes
    dht_pk: bytes | None
    udp_addr: Addr | None
    status: FriendStatus = FriendStatus.CONNECTING
    last_alive_recv: float = 0.0
    last_alive_sent: float = 0.0
    last_share: float = 0.0
    next_attempt: float = 0.0
    relays: list[PackedNode] = field(default_factory=list)


class FriendConnections:
    """All friend connections of one node, on top of a :class:`NetCrypto`."""

    def __init__(self, netcrypto: NetCrypto) -> None:
        self.netcrypto = netcrypto
        netcrypto.accept_peer = self._accept_peer
        self._friends: dict[bytes, _Friend] = {}
        self._events: list[FriendEvent] = []
        self.own_relays: list[PackedNode] = []
        self.counters: Counter[str] = Counter()
        self._now = 0.0

    # ------------------------------------------------------------------ commands

    def add_friend(
        self,
        real_pk: bytes,
        now: float,
        *,
        dht_pk: bytes | None = None,
        udp_addr: Addr | None = None,
    ) -> None:
        """Keep a connection to ``real_pk``; connect as soon as its DHT key is known."""
        friend = self._friends.get(real_pk)
        if friend is None:
            self._friends[real_pk] = _Friend(real_pk, dht_pk, udp_addr, next_attempt=now)
        else:
            friend.dht_pk = dht_pk or friend.dht_pk
            friend.udp_addr = udp_addr or friend.udp_addr
        self._maybe_connect(self._friends[real_pk], now)

    def remove_friend(self, real_pk: bytes, now: float) -> None:
        """Forget the friend and kill its session."""
        if self._friends.pop(real_pk, None) is not None:
            self.netcrypto.kill(real_pk, now)
            self._drain(now)

    def set_dht_pk(self, real_pk: bytes, dht_pk: bytes, now: float) -> None:
        """The friend's DHT key (from the onion/DHT announcement). A change reconnects."""
        friend = self._friends.get(real_pk)
        if friend is None or friend.dht_pk == dht_pk:
            return
        friend.dht_pk = dht_pk
        if real_pk in self.netcrypto.sessions:
            self.netcrypto.kill(real_pk, now)
            self._drain(now)
        self._maybe_connect(friend, now)

    def set_udp_addr(self, real_pk: bytes, addr: Addr, now: float) -> None:
        """The DHT found the friend at ``addr`` (direct UDP)."""
        friend = self._friends.get(real_pk)
        if friend is None:
            return
        friend.udp_addr = addr
        self.netcrypto.set_udp_addr(real_pk, addr, now, direct=True)
        self._maybe_connect(friend, now)

    def send(self, real_pk: bytes, payload: bytes, now: float, *, congestion: bool) -> int:
        """Send a lossless packet to a connected friend; returns its packet number.

        Raises:
            NotConnected: the friend is not connected.
            SendQueueFull: back-pressure (only with ``congestion``).
        """
        number = self.netcrypto.send_lossless(real_pk, payload, now, congestion_control=congestion)
        return number

    def send_many(self, real_pk: bytes, payloads: list[bytes], now: float) -> int:
        """Queue congestion-controlled lossless packets while there is room; how many.

        Raises:
            NotConnected: the friend is not connected.  ValueError: a bad payload.
        """
        return self.netcrypto.send_lossless_many(real_pk, payloads, now)

    def send_lossy(self, real_pk: bytes, payload: bytes, now: float) -> None:
        """Send a lossy packet to a connected friend (raises :class:`NotConnected`)."""
        self.netcrypto.send_lossy(real_pk, payload, now)

    def status(self, real_pk: bytes) -> FriendStatus | None:
        """The friend's connection status, or ``None`` if unknown."""
        friend = self._friends.get(real_pk)
        return None if friend is None else friend.status

    def friend_relays(self, real_pk: bytes) -> list[PackedNode]:
        """Relays the friend shared with us (most recent last)."""
        friend = self._friends.get(real_pk)
        return [] if friend is None else list(friend.relays)

    def set_own_relays(self, relays: Sequence[PackedNode], now: float) -> None:
        """Relays we are connected to (shared with friends, up to 3)."""
        self.own_relays = list(relays)[:MAX_SHARED_RELAYS]
        for friend in self._friends.values():
            friend.last_share = now - SHARE_RELAYS_INTERVAL_S  # share at the next timer

    def events(self) -> list[FriendEvent]:
        """Drain pending events."""
        self._drain(self._now)
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ DatagramCore

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A UDP datagram for net_crypto."""
        self.netcrypto.receive(data, addr, now)
        self._drain(now)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain UDP datagrams."""
        return self.netcrypto.datagrams_to_send()

    def next_deadline(self) -> float | None:
        """Earliest of net_crypto's and our own timers."""
        deadlines: list[float] = []
        nc = self.netcrypto.next_deadline()
        if nc is not None:
            deadlines.append(nc)
        for friend in self._friends.values():
            if friend.status is FriendStatus.CONNECTED:
                deadlines.append(friend.last_alive_sent + FRIEND_PING_INTERVAL_S)
                deadlines.append(friend.last_alive_recv + FRIEND_CONNECTION_TIMEOUT_S)
                if self.own_relays:
                    deadlines.append(friend.last_share + SHARE_RELAYS_INTERVAL_S)
            elif friend.dht_pk is not None and friend.real_pk not in self.netcrypto.sessions:
                deadlines.append(friend.next_attempt)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """ALIVE, timeouts, relay sharing, reconnects, net_crypto timers."""
        self.netcrypto.handle_timer(now)
        self._drain(now)
        for friend in list(self._friends.values()):
            if friend.status is FriendStatus.CONNECTED:
                if now >= friend.last_alive_recv + FRIEND_CONNECTION_TIMEOUT_S:
                    self.counters["alive_timeouts"] += 1
                    self.netcrypto.kill(friend.real_pk, now)
                    self._drain(now)
                    continue
                if now >= friend.last_alive_sent + FRIEND_PING_INTERVAL_S:
                    self._send_control(friend, ALIVE, now)
                    friend.last_alive_sent = now
                if self.own_relays and now >= friend.last_share + SHARE_RELAYS_INTERVAL_S:
                    self._send_control(friend, encode_share_relays(self.own_relays), now)
                    friend.last_share = now
            else:
                self._maybe_connect(friend, now)
        self._drain(now)

    # ------------------------------------------------------------------ internals

    def _hosted_relay(self, friend: _Friend, relay: PackedNode) -> PackedNode | None:
        """A relay on a LAN address whose key is the friend's DHT key is one the friend hosts
        itself: reach it at the friend's address (toxcore ``friend_add_tcp_relay``), or not
        at all while that address is unknown. Other relays are used as shared."""
        if not (ip_is_lan(relay.ip_port.ip) and relay.public_key == friend.dht_pk):
            return relay
        addr = friend.udp_addr or self.netcrypto.udp_addr(friend.real_pk)
        if addr is None:
            return None
        host = IPPort.from_addr(addr).ip
        return PackedNode(IPPort(host, relay.ip_port.port), relay.public_key, relay.tcp)

    def _accept_peer(self, real_pk: bytes, dht_pk: bytes) -> bool:
        friend = self._friends.get(real_pk)
        if friend is None or real_pk in self.netcrypto.sessions:
            return False
        friend.dht_pk = dht_pk
        return True

    def _maybe_connect(self, friend: _Friend, now: float) -> None:
        if (
            friend.status is FriendStatus.CONNECTING
            and friend.dht_pk is not None
            and friend.real_pk not in self.netcrypto.sessions
            and now >= friend.next_attempt
        ):
            friend.next_attempt = now + CONNECT_RETRY_INTERVAL_S
            self.netcrypto.connect(friend.real_pk, friend.dht_pk, now, udp_addr=friend.udp_addr)

    def _send_control(self, friend: _Friend, payload: bytes, now: float) -> None:
        try:
            self.netcrypto.send_lossless(friend.real_pk, payload, now, congestion_control=False)
        except (NotConnected, SendQueueFull):
            self.counters["control_send_failed"] += 1

    def _drain(self, now: float) -> None:
        # events() drains without a clock of its own: the session may have come up on a packet
        # net_crypto got straight from a driver (relay), so take net_crypto's time too. (A stale
        # time here once stamped a fresh connection's last ALIVE at 0 and the next timer
        # killed it as timed out.)
        self._now = max(self._now, now, self.netcrypto.last_now)
        now = self._now
        for event in self.netcrypto.events():
            if isinstance(event, ConnectionUp):
                friend = self._friends.get(event.peer_pk)
                if friend is None:
                    self.netcrypto.kill(event.peer_pk, now)
                    continue
                t = now
                friend.status = FriendStatus.CONNECTED
                friend.last_alive_recv = t
                friend.last_alive_sent = t - FRIEND_PING_INTERVAL_S  # ALIVE at once
                friend.last_share = t - SHARE_RELAYS_INTERVAL_S
                self._events.append(FriendUp(event.peer_pk))
            elif isinstance(event, ConnectionDown):
                friend = self._friends.get(event.peer_pk)
                if friend is not None:
                    was_connected = friend.status is FriendStatus.CONNECTED
                    friend.status = FriendStatus.CONNECTING
                    friend.next_attempt = min(friend.next_attempt, now)
                    if was_connected:
                        self._events.append(FriendDown(event.peer_pk, event.reason))
            elif isinstance(event, PeerDhtKey):
                friend = self._friends.get(event.peer_pk)
                if friend is not None:
                    friend.dht_pk = event.dht_pk
            elif isinstance(event, LosslessPacket):
                self._handle_lossless(event.peer_pk, event.payload, now)
            elif isinstance(event, LossyPacket) and event.peer_pk in self._friends:
                self._events.append(FriendLossy(event.peer_pk, event.payload))

    def _handle_lossless(self, real_pk: bytes, payload: bytes, now: float) -> None:
        friend = self._friends.get(real_pk)
        if friend is None:
            return
        packet_id = payload[0]
        if packet_id == PACKET_ID_ALIVE:
            friend.last_alive_recv = now
            return
        if packet_id == PACKET_ID_SHARE_RELAYS:
            try:
                relays = decode_share_relays_untrusted(payload)
            except BadPacket:
                self.counters["share_relays_bad"] += 1
                return
            for shared in relays:
                relay = self._hosted_relay(friend, shared)
                if relay is None:
                    self.counters["share_relays_unusable"] += 1
                    continue
                if relay in friend.relays:
                    friend.relays.remove(relay)
                friend.relays.append(relay)
            del friend.relays[:-FRIEND_MAX_STORED_TCP_RELAYS]
            usable = tuple(r for s in relays if (r := self._hosted_relay(friend, s)) is not None)
            if usable:
                self._events.append(RelaysShared(real_pk, usable))
            return
        if packet_id == PACKET_ID_FRIEND_REQUESTS:
            try:
                # The onion request's layout and limits with another id byte (toxcore parses
                # both with friendreq_handlepacket, which skips the id).
                request = FriendRequestPayload.decode(b"\x20" + payload[1:])
            except BadPacket:
                self.counters["friend_request_bad"] += 1
                return
            self.counters["friend_requests"] += 1
            self._events.append(FriendRequestPacket(real_pk, request))
            return
        self._events.append(FriendLossless(real_pk, payload))
