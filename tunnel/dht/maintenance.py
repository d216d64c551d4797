"""Keeping the DHT's node lists full and fresh (tox-protocol.md 4.6.3, 4.6.4, 4.7).

The close list (base = our DHT key) and every DHT friend's list (base = the friend's key):
``addto_lists`` once a node answered, ``ping_add`` for requesters (the ``to_ping`` queue,
pinged every 2 s), the iterative lookup (nodes returned by a response queued "to_bootstrap"
toward each list's base), ``returnedip_ports``, ``do_dht``'s per-list work
(``do_ping_and_sendnode_requests``) and the bootstrap retries until the DHT is connected.

A mixin of :class:`tunnel.dht.core.DhtCore`, which owns the state it reads (lists, queues,
keys, counters) and sends the requests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tunnel.dht.close_list import (
    BAD_NODE_TIMEOUT_S,
    KILL_NODE_TIMEOUT_S,
    PING_INTERVAL_S,
    Assoc,
    ClientEntry,
    CloseList,
)
from tunnel.dht.distance import key_int
from tunnel.dht.events import DhtEvent, FriendIpFound
from tunnel.wire.dht import MAX_SENT_NODES
from tunnel.wire.ip_port import IPPort

if TYPE_CHECKING:
    from tunnel.dht.core import DhtFriend

TICK_INTERVAL_S = 1.0
GET_NODE_INTERVAL_S = 20.0
MAX_BOOTSTRAP_TIMES = 5
MAX_CLOSE_TO_BOOTSTRAP_NODES = 8
MAX_FRIEND_TO_BOOTSTRAP_NODES = MAX_SENT_NODES
MAX_TO_PING = 32
TIME_TO_PING_S = 2.0
BOOTSTRAP_RETRY_INTERVAL_S = 5.0
MAX_BOOTSTRAP_RETRY_NODES = 8

_Candidate = tuple[int, bytes, IPPort]  # (distance, pk, ip_port)


@dataclass(slots=True)
class _ListWork:
    """Per-list periodic state (toxcore keeps it in DHT / DHT_Friend)."""

    last_get_node: float = float("-inf")
    next_due: float = float("-inf")
    """Earliest time the list needs work (re-pings, random lookups, kill timeouts); reset to
    "now" whenever a node enters or comes back to life in it."""
    bootstrap_times: int = 0
    to_bootstrap: list[_Candidate] = field(default_factory=list)


def _add_candidate(queue: list[_Candidate], limit: int, candidate: _Candidate) -> None:
    """Keep the ``limit`` candidates closest to the list base (toxcore ``add_to_list``)."""
    if any(c[1] == candidate[1] for c in queue):
        return
    queue.append(candidate)
    if len(queue) > limit:
        queue.sort(key=lambda c: c[0])
        del queue[limit:]


class ListMaintenance:
    """List upkeep and the iterative lookup, for :class:`~tunnel.dht.core.DhtCore`."""

    public_key: bytes
    close: CloseList
    friends: dict[bytes, DhtFriend]
    _rng: Callable[[int], bytes]
    _close_work: _ListWork
    _to_ping: list[_Candidate]
    _last_to_ping: float
    _bootstrap_nodes: list[tuple[bytes, IPPort]]
    _bootstrap_index: int
    _last_bootstrap: float
    _events: deque[DhtEvent]

    if TYPE_CHECKING:

        def friend_ip_port(self, dht_pk: bytes, now: float | None = None) -> IPPort | None: ...

        def is_connected(self, now: float) -> bool: ...

        def _send_ping_request(self, ip_port: IPPort, peer_pk: bytes, now: float) -> None: ...

        def _send_nodes_request(
            self, ip_port: IPPort, peer_pk: bytes, wanted_pk: bytes, now: float
        ) -> None: ...

    def _addto_lists(self, public_key: bytes, ip_port: IPPort, now: float) -> None:
        """toxcore ``addto_lists``: a node proved alive; store it wherever it fits."""
        if public_key == self.public_key:
            return
        entry = self.close.get(public_key)
        if entry is None or entry.assoc_for(ip_port).is_killed(now):
            self._close_work.next_due = now  # a new or revived node: due for maintenance
        self.close.add_or_update(public_key, ip_port, now)
        for friend in self.friends.values():
            entry = friend.clients.get(public_key)
            if entry is None or entry.assoc_for(ip_port).is_killed(now):
                friend.work.next_due = now
            friend.clients.add_or_update(public_key, ip_port, now)
            if public_key == friend.public_key and not friend.fake:
                self._events.append(FriendIpFound(public_key, ip_port))

    def _ping_add(self, public_key: bytes, ip_port: IPPort, now: float) -> None:
        """toxcore ``ping_add``: a requester may become a close-list node once it answers."""
        if public_key == self.public_key or not self.close.can_add(public_key, now):
            return
        if self.close.has_good(public_key, ip_port, now):
            return
        friend = self.friends.get(public_key)
        if friend is not None and self.friend_ip_port(public_key, now) is None:
            self._send_ping_request(ip_port, public_key, now)
            return
        for i, (_, pk, _) in enumerate(self._to_ping):
            if pk == public_key:
                self._to_ping[i] = (self._to_ping[i][0], pk, ip_port)
                return
        _add_candidate(
            self._to_ping,
            MAX_TO_PING,
            (key_int(public_key) ^ self.close.base_int, public_key, ip_port),
        )

    def _ping_iterate(self, now: float) -> None:
        if not self._to_ping or now < self._last_to_ping + TIME_TO_PING_S:
            return
        for _, pk, ip_port in self._to_ping:
            if self.close.can_add(pk, now):
                self._send_ping_request(ip_port, pk, now)
        self._to_ping = []
        self._last_to_ping = now

    def _consider_returned_node(self, public_key: bytes, ip_port: IPPort, now: float) -> None:
        """toxcore ``ping_node_from_getnodes_ok``: queue lookups toward list bases."""
        if public_key == self.public_key:
            return
        pk_int = key_int(public_key)
        if self.close.get(public_key) is None and self.close.can_add(public_key, now):
            _add_candidate(
                self._close_work.to_bootstrap,
                MAX_CLOSE_TO_BOOTSTRAP_NODES,
                (pk_int ^ self.close.base_int, public_key, ip_port),
            )
        for friend in self.friends.values():
            if friend.clients.can_add(public_key, now):
                _add_candidate(
                    friend.work.to_bootstrap,
                    MAX_FRIEND_TO_BOOTSTRAP_NODES,
                    (pk_int ^ friend.clients.base_int, public_key, ip_port),
                )

    def _returned_ip_port(
        self, public_key: bytes, ip_port: IPPort, responder_pk: bytes, now: float
    ) -> None:
        """toxcore ``returnedip_ports``: remember where a node says we / a friend can be found."""
        if public_key == self.public_key:
            entry = self.close.get(responder_pk)
            if entry is not None:
                assoc = entry.assoc_for(ip_port)
                assoc.ret_ip_port = ip_port
                assoc.ret_timestamp = now
                assoc.ret_ip_self = True
            return
        friend = self.friends.get(public_key)
        if friend is None:
            return
        entry = friend.clients.get(responder_pk)
        if entry is not None:
            assoc = entry.assoc_for(ip_port)
            assoc.ret_ip_port = ip_port
            assoc.ret_timestamp = now
            assoc.ret_ip_self = False

    def _do_list(self, entries: list[ClientEntry], base: bytes, work: _ListWork, now: float) -> int:
        """toxcore ``do_ping_and_sendnode_requests``; returns how many associations live."""
        for _, pk, ip_port in work.to_bootstrap:
            self._send_nodes_request(ip_port, pk, base, now)
        work.to_bootstrap = []
        alive = 0
        due = float("inf")
        good: list[tuple[ClientEntry, Assoc]] = []
        for entry in entries:
            for assoc in entry.assocs():
                if assoc.ip_port is None or assoc.is_killed(now):
                    continue
                alive += 1
                if assoc.last_pinged + PING_INTERVAL_S <= now:
                    self._send_nodes_request(assoc.ip_port, entry.public_key, base, now)
                    assoc.last_pinged = now
                due = min(
                    due, assoc.last_pinged + PING_INTERVAL_S, assoc.timestamp + KILL_NODE_TIMEOUT_S
                )
                if not assoc.is_bad(now):
                    good.append((entry, assoc))
        if good and (
            work.last_get_node + GET_NODE_INTERVAL_S <= now
            or work.bootstrap_times < MAX_BOOTSTRAP_TIMES
        ):
            entry, assoc = good[int.from_bytes(self._rng(4), "big") % len(good)]
            assert assoc.ip_port is not None
            self._send_nodes_request(assoc.ip_port, entry.public_key, base, now)
            work.last_get_node = now
            work.bootstrap_times += 1
        if good:
            if work.bootstrap_times < MAX_BOOTSTRAP_TIMES:
                due = now  # the next tick
            else:
                due = min(due, work.last_get_node + GET_NODE_INTERVAL_S)
        work.next_due = due if due > now else now + TICK_INTERVAL_S
        return alive

    def _do_close(self, now: float) -> None:
        entries = self.close.entries()
        alive = self._do_list(entries, self.public_key, self._close_work, now)
        if alive == 0 and entries:
            # Every node is past the kill timeout: make them "bad but pingable" again.
            for entry in entries:
                for assoc in entry.assocs():
                    if assoc.timestamp != float("-inf"):
                        assoc.timestamp = now - BAD_NODE_TIMEOUT_S
            self._close_work.next_due = now  # recompute the schedule on the next tick

    def _do_friend(self, friend: DhtFriend, now: float) -> None:
        self._do_list(list(friend.clients), friend.public_key, friend.work, now)
        friend.clients.sort(now)

    def _bootstrap_retry(self, now: float) -> None:
        if not self._bootstrap_nodes or self.is_connected(now):
            return
        if now < self._last_bootstrap + BOOTSTRAP_RETRY_INTERVAL_S:
            return
        self._last_bootstrap = now
        count = min(MAX_BOOTSTRAP_RETRY_NODES, len(self._bootstrap_nodes))
        for _ in range(count):
            pk, ip_port = self._bootstrap_nodes[self._bootstrap_index % len(self._bootstrap_nodes)]
            self._bootstrap_index += 1
            self._send_nodes_request(ip_port, pk, self.public_key, now)
