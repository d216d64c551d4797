"""The onion client's once-a-second work (tox-protocol.md 5.5, 5.10): announcing ourselves,
the connection status, searching for friends, sending friend requests and DHT-PK data.

c-toxcore 0.2.18 ``do_onion_client``: ``do_announce`` keeps our 12 announce nodes answering
(re-announced every 3 s, 15 s once stored, 120 s once stable) and fills the list from path
nodes; ``onion_isconnected`` decides when friends can find us; ``do_friend`` asks up to 8
nodes close to each offline friend with exponential back-off, and onion data goes out
through the nodes that store the friend. The numbered steps are in :mod:`tunnel.onion.client`.

A mixin of :class:`tunnel.onion.client.OnionClient`, which owns the state it reads (node
lists, paths, friends, timers) and builds the requests.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from tunnel.crypto import Rng
from tunnel.onion.announce import (
    MAX_ONION_CLIENTS,
    MAX_ONION_CLIENTS_ANNOUNCE,
    ONION_NODE_MAX_PINGS,
    ONION_NODE_PING_INTERVAL_S,
    ONION_NODE_TIMEOUT_S,
    OnionFriend,
    OnionNode,
)
from tunnel.onion.dhtpk import DhtPkAnnouncements
from tunnel.onion.events import OnionEvent, OnionHooks, OnionStatusChanged
from tunnel.onion.friend_requests import FriendRequests
from tunnel.onion.paths import (
    NEVER,
    ONION_PATH_TIMEOUT_S,
    PathPool,
    is_timeout,
    random_below,
)
from tunnel.wire.packed_node import PackedNode

if TYPE_CHECKING:
    from tunnel.onion.client import _Sendback

ONION_OFFLINE_TIMEOUT_S = ONION_NODE_PING_INTERVAL_S * (ONION_NODE_MAX_PINGS + 2)  # 75
MAX_PATH_NODES = 32
ANNOUNCE_INTERVAL_NOT_ANNOUNCED_S = 3
ANNOUNCE_INTERVAL_ANNOUNCED_S = ONION_NODE_PING_INTERVAL_S
TIME_TO_STABLE_S = ONION_NODE_PING_INTERVAL_S * 6  # 90
ANNOUNCE_INTERVAL_STABLE_S = ONION_NODE_PING_INTERVAL_S * 8  # 120
ANNOUNCE_FRIEND_NEW_INTERVAL_S = 3
ANNOUNCE_FRIEND_RUN_COUNT_BEGINNING = 5
ANNOUNCE_POPULATE_TIMEOUT_S = 60 * 10
ANNOUNCE_FRIEND_MAX_INTERVAL_S = 60 * 60
MAX_RUN_COUNT_EXPONENT = 12
ONION_CONNECTION_SECONDS = 3
ONION_CONNECTED_TIMEOUT_S = 10
MAX_FRIEND_CLIENTS = 8


class OnionClientPeriodic:
    """The periodic work of an :class:`~tunnel.onion.client.OnionClient`."""

    # the client's own state, used here
    friends: dict[bytes, OnionFriend]
    self_nodes: list[OnionNode]
    self_paths: PathPool
    path_nodes: list[PackedNode]
    bootstrap_nodes: list[PackedNode]
    hooks: OnionHooks
    dhtpk: DhtPkAnnouncements
    requests: FriendRequests
    _rng: Rng
    _sendbacks: dict[bytes, _Sendback]
    _path_nodes_added: int
    _first_run: float
    _last_announce: float
    _last_populated: float
    _last_packet_recv: float
    _last_time_connected: float
    _onion_connected: int
    _status: tuple[bool, bool]
    _events: deque[OnionEvent]

    if TYPE_CHECKING:

        def add_path_node(self, node: PackedNode) -> None: ...

        def send_onion_data(self, public_key: bytes, payload: bytes, now: float) -> int: ...

        def _send_announce(
            self,
            friend: OnionFriend | None,
            node: PackedNode,
            ping_id: bytes | None,
            path_num: int | None,
            now: float,
        ) -> bool: ...

    # ======================================================================================
    # Connection status
    # ======================================================================================

    @property
    def connected(self) -> bool:
        """toxcore ``onion_connection_status != NONE``."""
        return self._onion_connected >= ONION_CONNECTION_SECONDS

    # ======================================================================================
    # Periodic work
    # ======================================================================================

    def _tick(self, now: float) -> None:
        self.dhtpk.tick(now)
        for key in [k for k, s in self._sendbacks.items() if s.expires < now]:
            del self._sendbacks[key]
        # Fast start (deviation from toxcore, which waits ONION_CONNECTION_SECONDS after the
        # first run and then ONION_CONNECTION_SECONDS connected ticks, ~10 s in all): announce
        # as soon as a bootstrap or path node is known, and count as connected at the first
        # tick our announcements are stored. Nothing on the wire changes, only when.
        if (
            self.bootstrap_nodes
            or self.path_nodes
            or is_timeout(self._first_run, ONION_CONNECTION_SECONDS, now)
        ):
            for node in self.hooks.random_dht_nodes(MAX_FRIEND_CLIENTS):
                self.add_path_node(node)
            self._do_announce(now)
        if self._is_connected(now):
            if is_timeout(self._last_time_connected, ONION_CONNECTED_TIMEOUT_S, now):
                for friend in self.friends.values():
                    friend.run_count = 0
            self._last_time_connected = now
            self._onion_connected = min(
                max(self._onion_connected + 1, ONION_CONNECTION_SECONDS),
                ONION_CONNECTION_SECONDS * 2,
            )
        elif self._onion_connected:
            self._onion_connected -= 1
        udp_status = self.hooks.dht_non_lan_connected or self.hooks.dht_connected
        status = (self.connected, self.connected and not udp_status())
        if status != self._status:
            self._status = status
            self._events.append(OnionStatusChanged(*status))
        if self.connected or self.path_nodes:
            # Searching for friends needs paths, not our own announcement (toxcore waits for
            # the latter): with both ends starting at once this saves a whole warm-up.
            for friend in list(self.friends.values()):
                self._do_friend(friend, now)
            for request in self.requests.due(now):
                target = self.friends.get(request.public_key)
                if target is None or target.is_online:
                    continue
                if self.send_onion_data(request.public_key, request.payload(), now) > 0:
                    self.requests.mark_sent(request, now)

    def _is_connected(self, now: float) -> bool:
        if is_timeout(self._last_packet_recv, ONION_OFFLINE_TIMEOUT_S, now):
            self._last_populated = NEVER
            return False
        if self._path_nodes_added == 0:
            self._last_populated = NEVER
            return False
        live = [n for n in self.self_nodes if not n.timed_out(now)]
        announced = sum(1 for n in live if n.is_stored != 0)
        pnodes = min(self._path_nodes_added, MAX_ONION_CLIENTS_ANNOUNCE)
        if live and announced and len(live) // 2 <= announced and pnodes // 2 <= len(live):
            return True
        self._last_populated = NEVER
        return False

    def _do_announce(self, now: float) -> None:
        count = 0
        for node in self.self_nodes:
            if node.timed_out(now):
                continue
            count += 1
            if not node.skipped_first_round and self.connected:
                # (while starting up, a new node's ping id is used at once: it stores us)
                node.skipped_first_round = True
                continue
            if node.pings_since_last_response >= ONION_NODE_MAX_PINGS:
                continue
            interval: float = ANNOUNCE_INTERVAL_NOT_ANNOUNCED_S
            if node.is_stored != 0 and self.self_paths.exists(node.path_used, now):
                interval = ANNOUNCE_INTERVAL_ANNOUNCED_S
                path = self.self_paths.path(node.path_used)
                if (
                    path is not None
                    and is_timeout(node.added_time, TIME_TO_STABLE_S, now)
                    and not (
                        node.pings_since_last_response > 0
                        and is_timeout(node.last_pinged, ONION_NODE_TIMEOUT_S, now)
                    )
                    and is_timeout(path.created, TIME_TO_STABLE_S, now)
                    and not (
                        path.used_times > 0
                        and is_timeout(path.last_used, ONION_PATH_TIMEOUT_S, now)
                    )
                ):
                    interval = ANNOUNCE_INTERVAL_STABLE_S
            if is_timeout(node.last_pinged, interval, now) or is_timeout(
                self._last_announce, ONION_NODE_PING_INTERVAL_S, now
            ):
                path_num: int | None = node.path_used if node.path_used >= 0 else None
                if node.pings_since_last_response == ONION_NODE_MAX_PINGS - 1 and is_timeout(
                    node.added_time, TIME_TO_STABLE_S, now
                ):
                    path_num = None  # last chance for a long-lived node: a random path
                if self._send_announce(None, node.node, node.ping_id, path_num, now):
                    node.last_pinged = now
                    node.pings_since_last_response += 1
                    self._last_announce = now
        if count == MAX_ONION_CLIENTS_ANNOUNCE:
            self._last_populated = now
            return
        if count <= MAX_ONION_CLIENTS_ANNOUNCE // 2 or is_timeout(
            self._last_populated, ANNOUNCE_POPULATE_TIMEOUT_S, now
        ):
            pool = self.path_nodes or self.bootstrap_nodes
            if not pool:
                return
            if count > MAX_ONION_CLIENTS_ANNOUNCE // 2:
                # Deviation from toxcore (which repeats this every second while the list is
                # not full, i.e. forever on a network of fewer than 13 nodes): once per 600 s.
                self._last_populated = now
            for _ in range(MAX_ONION_CLIENTS_ANNOUNCE // 2):
                target = pool[random_below(self._rng, len(pool))]
                self._send_announce(None, target, None, None, now)

    def _do_friend(self, friend: OnionFriend, now: float) -> None:
        if friend.is_online:
            return
        is_new = friend.run_count <= ANNOUNCE_FRIEND_RUN_COUNT_BEGINNING
        if is_new:
            interval = ANNOUNCE_FRIEND_NEW_INTERVAL_S
        else:
            exponent = min(MAX_RUN_COUNT_EXPONENT, friend.run_count - 2)
            interval = min(1 << exponent, ANNOUNCE_FRIEND_MAX_INTERVAL_S)
        self.dhtpk.send_due(friend, now, self.send_onion_data)
        count = 0
        for node in friend.nodes:
            if node.timed_out(now):
                continue
            count += 1
            if node.last_pinged == NEVER:
                node.last_pinged = now
                continue
            if node.pings_since_last_response >= ONION_NODE_MAX_PINGS:
                continue
            if not is_timeout(friend.time_last_pinged, interval / (MAX_ONION_CLIENTS / 2), now):
                continue
            if not is_timeout(node.last_pinged, interval, now):
                continue
            if self._send_announce(friend, node.node, None, None, now):
                node.last_pinged = now
                friend.time_last_pinged = now
                node.pings_since_last_response += 1
                friend.pings += 1
                if friend.pings % (MAX_ONION_CLIENTS // 2) == 0:
                    friend.run_count += 1
        if count == MAX_ONION_CLIENTS:
            if not is_new:
                friend.last_populated = now
            return
        if count <= MAX_ONION_CLIENTS // 2 or is_timeout(
            friend.last_populated, ANNOUNCE_POPULATE_TIMEOUT_S, now
        ):
            n = min(len(self.path_nodes), MAX_PATH_NODES // 4)
            if n == 0:
                return
            friend.last_populated = now
            for _ in range(n):
                target = self.path_nodes[random_below(self._rng, len(self.path_nodes))]
                self._send_announce(friend, target, None, None, now)
