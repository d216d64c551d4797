"""The onion client: announce ourselves, search for friends, onion data (tox-protocol.md 5.5-5.10).

c-toxcore 0.2.18 ``onion_client.c`` behaviour on a sans-IO core.

Theory of operation
-------------------
Once a second (:meth:`OnionClient.handle_timer`; this periodic work is
:mod:`tunnel.onion.client_periodic`, a mixin):

1. *Path nodes* are refreshed from the DHT (injected ``random_dht_nodes``). Paths are built
   from them (:mod:`tunnel.onion.paths`); without UDP connectivity node A is one of our TCP
   relays (onion over TCP) and B, C are path nodes (or bootstrap nodes).
2. *Announce* (``do_announce``): we keep the 12 nodes closest to our real pk that answered an
   0x83 signed with our real key. Each is re-announced every 3 s while not stored, 15 s once
   stored, 120 s once stable (node and path older than 90 s), reusing the ping id it gave us
   and the same path (so node C, which the ping id is bound to, stays the same). With 6 or
   fewer live nodes we send 6 zero-ping-id requests to random path nodes.
3. *Connected* when an announce response arrived in the last 75 s and at least half of the live
   announce nodes store us; the status flips after 3 consecutive connected seconds.
4. While connected, each offline *friend* is searched (``do_friend``): up to 8 nodes closest to
   the friend's real pk are asked with the friend's temporary key every 3 s while the friend is
   new, then with exponential back-off (``2 ** min(12, run_count - 2)`` s, at most 3600 s).
   Nodes answering ``is_stored == 1`` carry the friend's data pk; with enough of them we send
   onion data (0x85) through them: our DHT-PK announcement every 30 s and pending friend
   requests on their 5, 10, 20 ... s schedule.

Responses (0x84) are matched to requests by an 8-byte random sendback remembered 10 s; every
response confirms the path it came through. Onion data (0x86) is opened with our data key and
our real key; DHT-PK announcements from friends yield :class:`FriendDhtKeyLearned` (sent and
taken by :mod:`tunnel.onion.dhtpk`), friend requests with our nospam yield
:class:`FriendRequestReceived`.

Outputs: UDP datagrams (:meth:`datagrams_to_send`), TCP 0x08 packets for relays
(:meth:`tcp_onion_requests_to_send`), DHT-routed DHT-PK data for the DHT layer
(:meth:`dht_dhtpk_to_send`) and events (:meth:`next_event`). Bad input is dropped and counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from tunnel.crypto import KeyPair, Rng, random_nonce
from tunnel.errors import BadPacket, DecryptError
from tunnel.onion.announce import (
    MAX_ONION_CLIENTS,
    MAX_ONION_CLIENTS_ANNOUNCE,
    LastPinged,
    OnionFriend,
    OnionNode,
    add_to_list,
    would_enter,
)
from tunnel.onion.client_periodic import MAX_PATH_NODES, OnionClientPeriodic
from tunnel.onion.dhtpk import DhtPkAnnouncements
from tunnel.onion.events import (
    FriendDhtKeyLearned,
    FriendRequestReceived,
    OnionClientStats,
    OnionEvent,
    OnionHooks,
    OnionStatusChanged,
)
from tunnel.onion.friend_requests import FriendRequests
from tunnel.onion.paths import (
    NEVER,
    FirstHop,
    OnionPath,
    PathNodeDraw,
    PathPool,
    TcpRelayHop,
)
from tunnel.toxid import ToxId
from tunnel.wire.ip_port import Addr, IPPort, ip_is_lan
from tunnel.wire.onion import (
    ANNOUNCE_IS_STORED_OTHER,
    ONION_SENDBACK_SIZE,
    PACKET_ANNOUNCE_RESPONSE,
    PACKET_ONION_DATA_RESPONSE,
    AnnounceRequest,
    AnnounceRequestPayload,
    AnnounceResponse,
    DataResponse,
    DhtPkPayload,
    FriendRequestPayload,
    decode_onion_data_payload_untrusted,
    open_data_response,
    seal_data_request,
    seal_onion_data_inner,
    shared_key_untrusted,
)
from tunnel.wire.packed_node import PackedNode

__all__ = [  # the events and hooks live in tunnel.onion.events; re-exported for callers
    "FriendDhtKeyLearned",
    "FriendRequestReceived",
    "OnionClient",
    "OnionClientStats",
    "OnionEvent",
    "OnionHooks",
    "OnionStatusChanged",
]

ANNOUNCE_TIMEOUT_S = 10  # sendback lifetime
ANNOUNCE_ARRAY_SIZE = 256
TICK_INTERVAL_S = 1.0
STARTUP_TICK_INTERVAL_S = 0.25
"""Until onion-connected (with nodes to talk to): each announce round trip costs a tick, so
short ticks bring the first announcement (and friend search) from ~3 s to under 1 s."""
ONION_CLIENT_PACKET_KINDS = frozenset({PACKET_ANNOUNCE_RESPONSE, PACKET_ONION_DATA_RESPONSE})


@dataclass(frozen=True, slots=True)
class _Sendback:
    friend: bytes | None  # None: announcing ourselves
    node: PackedNode
    path_num: int
    expires: float


class OnionClient(OnionClientPeriodic):
    """Sans-IO onion client core (a :class:`tunnel.core.DatagramCore` for 0x84 and 0x86).

    Args:
        real_keys: our long-term key pair (Tox ID).
        dht_keys: our DHT key pair (first onion layer, DHT-PK announcement).
        rng: randomness.
        now: current time (seconds on the driver's clock).
        hooks: the DHT/TCP environment (see :class:`OnionHooks`).
        nospam: our nospam (4 bytes).
        unix_time_offset: added to ``now`` for the DHT-PK ``no_replay`` counter, which toxcore
            peers expect to grow across our restarts (toxcore uses Unix seconds).
    """

    def __init__(
        self,
        real_keys: KeyPair,
        dht_keys: KeyPair,
        rng: Rng,
        now: float,
        *,
        hooks: OnionHooks | None = None,
        nospam: bytes = bytes(4),
        unix_time_offset: float = 0.0,
    ) -> None:
        self.real_keys = real_keys
        self.dht_keys = dht_keys
        self.data_keys = KeyPair.generate(rng)
        self._rng = rng
        self.hooks = hooks or OnionHooks()
        self.requests = FriendRequests(nospam)
        self.stats = OnionClientStats()
        self.self_nodes: list[OnionNode] = []
        self.friends: dict[bytes, OnionFriend] = {}
        self.self_paths = PathPool(dht_keys, rng)
        self.friend_paths = PathPool(dht_keys, rng)
        self.path_nodes: list[PackedNode] = []
        self._path_node_keys: set[bytes] = set()  # membership only, never iterated
        self._path_nodes_added = 0
        self.bootstrap_nodes: list[PackedNode] = []
        self._last_pinged = LastPinged()
        self._sendbacks: dict[bytes, _Sendback] = {}
        self._last_announce = NEVER
        self._last_populated = NEVER
        self._last_packet_recv = NEVER
        self._last_time_connected = NEVER
        self._onion_connected = 0
        self._status: tuple[bool, bool] = (False, False)
        self._first_run = now
        self._next_tick = now
        self.path_draw = PathNodeDraw(rng, self.hooks)
        self._out: list[tuple[Addr, bytes]] = []
        self._tcp_out: list[tuple[Hashable, bytes]] = []
        self._events: deque[OnionEvent] = deque()
        self.dhtpk = DhtPkAnnouncements(
            real_keys, dht_keys, rng, self.hooks, self.friends, self.stats, self._events,
            unix_time_offset,
        )  # fmt: skip

    # ======================================================================================
    # DatagramCore
    # ======================================================================================

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle a raw 0x84 or 0x86 that node A delivered to us over UDP."""
        try:
            lan = ip_is_lan(IPPort.from_addr(addr).ip)
        except ValueError:
            lan = False
        self._receive(data, lan, now)

    def receive_tcp_onion_response(self, data: bytes, now: float) -> None:
        """Handle the payload of a TCP 0x09 packet (a raw 0x84 or 0x86)."""
        self._receive(data, False, now)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain UDP datagrams (0x80 onion requests)."""
        out, self._out = self._out, []
        return out

    def tcp_onion_requests_to_send(self) -> list[tuple[Hashable, bytes]]:
        """Drain TCP onion requests: ``(relay handle, packet starting with 0x08)``."""
        out, self._tcp_out = self._tcp_out, []
        return out

    def dht_dhtpk_to_send(self) -> list[tuple[bytes, bytes]]:
        """Drain DHT-routed DHT-PK announcements: ``(friend DHT pk, data after id 0x9c)``.

        The DHT layer sends each as a DHT request (0x20) with request id 0x9c to that key.
        """
        return self.dhtpk.drain_dht()

    def next_event(self) -> OnionEvent | None:
        """The next event for the layers above, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """The next once-a-second tick."""
        return self._next_tick

    def handle_timer(self, now: float) -> None:
        """Run the periodic work if the tick is due."""
        if now < self._next_tick:
            return
        self._tick(now)
        starting = not self.connected and bool(self.bootstrap_nodes or self.path_nodes)
        self._next_tick = now + (STARTUP_TICK_INTERVAL_S if starting else TICK_INTERVAL_S)

    # ======================================================================================
    # Commands
    # ======================================================================================

    def add_bootstrap_node(self, node: PackedNode) -> None:
        """A known DHT node to start from (toxcore ``onion_add_bs_path_node``)."""
        if node.tcp or any(n.public_key == node.public_key for n in self.bootstrap_nodes):
            return
        self.bootstrap_nodes.append(node)
        del self.bootstrap_nodes[:-MAX_PATH_NODES]

    def add_path_node(self, node: PackedNode) -> None:
        """A DHT node usable in paths (toxcore ``onion_add_path_node``)."""
        if node.tcp or node.public_key in self._path_node_keys:
            return
        self.path_nodes.append(node)
        self._path_node_keys.add(node.public_key)
        for old in self.path_nodes[:-MAX_PATH_NODES]:
            self._path_node_keys.discard(old.public_key)
        del self.path_nodes[:-MAX_PATH_NODES]
        self._path_nodes_added += 1

    def add_friend(self, public_key: bytes) -> OnionFriend:
        """Start searching for a friend (idempotent).

        Raises:
            ValueError: not a 32-byte key libsodium accepts (e.g. a low-order point).
        """
        friend = self.friends.get(public_key)
        if friend is None:
            try:
                shared_key_untrusted(public_key, self.real_keys.secret_key)
            except DecryptError as exc:
                raise ValueError("unusable public key") from exc
            friend = OnionFriend(public_key, KeyPair.generate(self._rng))
            self.friends[public_key] = friend
            self.dhtpk.adopt(public_key)  # a kept stranger's DHT-PK, used at the next tick
            self._next_tick = NEVER  # search at once (the next timer call ticks)
        return friend

    def remove_friend(self, public_key: bytes) -> None:
        """Stop searching for a friend and sending it anything."""
        self.friends.pop(public_key, None)
        self.dhtpk.forget(public_key)
        self.requests.stop(public_key)
        self.requests.forget_received(public_key)

    def set_friend_online(self, public_key: bytes, online: bool) -> None:
        """The friend connection came up (stop searching) or went down (search again)."""
        friend = self.friends.get(public_key)
        if friend is None:
            return
        friend.is_online = online
        if online:
            self.requests.stop(public_key)
        else:
            friend.last_no_replay = 0
            friend.run_count = 0

    def send_friend_request(self, tox_id: ToxId, message: bytes) -> None:
        """Add a friend by Tox ID and keep sending it ``message`` until it comes online.

        Raises:
            ValueError: message empty or over 1016 bytes, or our own Tox ID.
        """
        if tox_id.public_key == self.real_keys.public_key:
            raise ValueError("that is our own Tox ID")
        self.add_friend(tox_id.public_key)
        self.requests.add_outgoing(tox_id.public_key, tox_id.nospam, message)

    def accept_friend_request(self, public_key: bytes) -> None:
        """Accept an incoming request: add the sender as a friend (no request is sent back)."""
        self.add_friend(public_key)

    def refuse_friend_request(self, public_key: bytes) -> None:
        """Refuse an incoming request: nothing is sent; resends from the same key are not
        reported again while it is among the last 32 requesters."""

    def set_nospam(self, nospam: bytes) -> None:
        """Change our nospam (and so our Tox ID)."""
        self.requests.set_nospam(nospam)

    @property
    def tox_id(self) -> ToxId:
        """Our Tox ID with the current nospam."""
        return ToxId(self.real_keys.public_key, self.requests.nospam)

    # ======================================================================================
    # Queries
    # ======================================================================================

    def friend_dht_public_key(self, public_key: bytes) -> bytes | None:
        """A friend's DHT pk if it told us."""
        friend = self.friends.get(public_key)
        return friend.dht_public_key if friend else None

    def send_onion_data(self, public_key: bytes, payload: bytes, now: float) -> int:
        """Send an onion data payload to a friend through its announce nodes.

        Returns the number of 0x85 packets sent (0: not enough nodes store the friend yet).
        """
        friend = self.friends.get(public_key)
        if friend is None or not payload:
            return 0
        live = [n for n in friend.nodes if not n.timed_out(now)]
        good = [n for n in live if n.is_stored != 0]
        if not good or len(good) < (len(live) - 1) // 4 + 1:
            return 0
        nonce = random_nonce(self._rng)
        inner = seal_onion_data_inner(self.real_keys, public_key, nonce, payload)
        sent = 0
        for node in good:
            path = self.friend_paths.get(None, now, lambda: self._draw_path_nodes(now))
            if path is None:
                continue
            try:
                request = seal_data_request(
                    self._rng, nonce, public_key, node.data_public_key, inner
                )
            except DecryptError:
                continue
            self._emit(path, node.node, request.encode(), now)
            sent += 1
        self.stats.data_packets_sent += sent
        return sent

    def handle_dht_dhtpk(self, source_dht_public_key: bytes, data: bytes, now: float) -> None:
        """A DHT request 0x20 with id 0x9c addressed to us (``data`` after the id byte)."""
        self.dhtpk.handle_via_dht(source_dht_public_key, data, now)

    # ======================================================================================
    # Receiving
    # ======================================================================================

    def _receive(self, data: bytes, source_is_lan: bool, now: float) -> None:
        try:
            if data and data[0] == PACKET_ANNOUNCE_RESPONSE:
                self._handle_announce_response(data, source_is_lan, now)
            elif data and data[0] == PACKET_ONION_DATA_RESPONSE:
                self._handle_data_response(data, now)
            else:
                raise BadPacket("not an onion client packet")
        except DecryptError:
            self.stats.dropped_decrypt += 1
        except BadPacket:
            self.stats.dropped_malformed += 1

    def _handle_announce_response(self, data: bytes, source_is_lan: bool, now: float) -> None:
        response = AnnounceResponse.decode(data)
        sendback = self._sendbacks.pop(response.sendback, None)
        if sendback is None or sendback.expires < now:
            self.stats.dropped_unknown_sendback += 1
            return
        if sendback.friend is None:
            secret = self.real_keys.secret_key
            pool = self.self_paths
            friend = None
        else:
            friend = self.friends.get(sendback.friend)
            if friend is None:
                self.stats.dropped_unknown_sendback += 1
                return
            secret = friend.temp_keys.secret_key
            pool = self.friend_paths
        payload = response.open(shared_key_untrusted(sendback.node.public_key, secret))
        self.stats.announce_responses += 1
        path = pool.mark_success(sendback.path_num, now)
        if path is not None and path.first_addr() is not None:
            self.path_draw.udp_answered()  # UDP works (again): UDP-first paths preferred
        if path is not None:
            for node in path.udp_nodes():
                self.add_path_node(node)
        path_used = sendback.path_num if path is not None else -1
        if friend is None:
            is_stored = payload.is_stored
            if is_stored == ANNOUNCE_IS_STORED_OTHER and (
                payload.ping_id_or_data_public_key != self.data_keys.public_key
            ):
                is_stored = 0
            entered = add_to_list(
                self.self_nodes, MAX_ONION_CLIENTS_ANNOUNCE, self.real_keys.public_key,
                sendback.node, is_stored, payload.ping_id_or_data_public_key, path_used, now,
            )  # fmt: skip
        else:
            if payload.is_stored >= 2:
                raise BadPacket("is_stored 2 in a friend search")
            if payload.is_stored and not any(n.is_stored for n in friend.nodes):
                # the friend's first announcement found: a pending friend request and our
                # DHT-PK go out now rather than at the next once-a-second tick
                self._next_tick = min(self._next_tick, now)
            entered = add_to_list(
                friend.nodes, MAX_ONION_CLIENTS, friend.public_key,
                sendback.node, payload.is_stored, payload.ping_id_or_data_public_key,
                path_used, now,
            )  # fmt: skip
        if entered:
            self.add_path_node(sendback.node)
        self._ping_nodes(friend, payload.nodes, source_is_lan, now)
        self._last_packet_recv = now

    def _handle_data_response(self, data: bytes, now: float) -> None:
        response = DataResponse.decode(data)
        sender, plain = open_data_response(
            response, self.data_keys.secret_key, self.real_keys.secret_key
        )
        payload = decode_onion_data_payload_untrusted(plain)
        self.stats.data_packets_received += 1
        if isinstance(payload, DhtPkPayload):
            self.dhtpk.handle(sender, payload, now)
        else:
            self._handle_friend_request(sender, payload)

    def _handle_friend_request(self, sender: bytes, payload: FriendRequestPayload) -> None:
        if self.requests.accept_incoming(sender, payload, sender in self.friends):
            self._events.append(FriendRequestReceived(sender, payload.message))

    # ======================================================================================
    # Node lists
    # ======================================================================================

    def _ping_nodes(
        self,
        friend: OnionFriend | None,
        nodes: Sequence[PackedNode],
        source_is_lan: bool,
        now: float,
    ) -> None:
        if friend is None:
            lst, cap, ref = self.self_nodes, MAX_ONION_CLIENTS_ANNOUNCE, self.real_keys.public_key
            last_pinged = self._last_pinged
        else:
            lst, cap, ref = friend.nodes, MAX_ONION_CLIENTS, friend.public_key
            last_pinged = friend.last_pinged
        for node in nodes:
            if not source_is_lan and ip_is_lan(node.ip_port.ip):
                continue
            if not would_enter(lst, cap, ref, node.public_key, now):
                continue
            if any(n.node.public_key == node.public_key for n in lst):
                continue
            if last_pinged.good_to_ping(node.public_key, now):
                self._send_announce(friend, node, None, None, now)

    # ======================================================================================
    # Sending
    # ======================================================================================

    def _draw_path_nodes(self, now: float) -> tuple[FirstHop, PackedNode, PackedNode] | None:
        return self.path_draw.draw(self.path_nodes, self.bootstrap_nodes, now)

    def _new_sendback(
        self, friend: bytes | None, node: PackedNode, path_num: int, now: float
    ) -> bytes:
        if len(self._sendbacks) >= ANNOUNCE_ARRAY_SIZE:
            del self._sendbacks[next(iter(self._sendbacks))]
        sendback = self._rng(ONION_SENDBACK_SIZE)
        self._sendbacks[sendback] = _Sendback(friend, node, path_num, now + ANNOUNCE_TIMEOUT_S)
        return sendback

    def _send_announce(
        self,
        friend: OnionFriend | None,
        node: PackedNode,
        ping_id: bytes | None,
        path_num: int | None,
        now: float,
    ) -> bool:
        pool = self.self_paths if friend is None else self.friend_paths
        path = pool.get(path_num, now, lambda: self._draw_path_nodes(now))
        if path is None:
            return False
        sendback = self._new_sendback(
            None if friend is None else friend.public_key, node, path.path_num, now
        )
        if friend is None:
            keys = self.real_keys
            payload = AnnounceRequestPayload(
                ping_id or bytes(32), keys.public_key, self.data_keys.public_key, sendback
            )
        else:
            keys = friend.temp_keys
            payload = AnnounceRequestPayload(
                ping_id or bytes(32), friend.public_key, bytes(32), sendback
            )
        try:
            request = AnnounceRequest.seal(self._rng, keys, node.public_key, payload)
        except DecryptError:
            return False
        self._emit(path, node, request.encode(), now)
        self.stats.announce_requests_sent += 1
        return True

    def _emit(self, path: OnionPath, destination: PackedNode, payload: bytes, now: float) -> None:
        first, packet = path.seal(random_nonce(self._rng), destination, payload)
        if isinstance(first, TcpRelayHop):
            self._tcp_out.append((first.relay, packet))
        else:
            self.path_draw.udp_sent(now)
            self._out.append((first.ip_port.to_addr(), packet))
