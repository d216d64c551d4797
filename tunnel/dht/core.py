"""DhtCore: the Tox DHT of c-toxcore 0.2.18 as a sans-IO :class:`tunnel.core.DatagramCore`.

tox-protocol.md section 4. Theory of operation:

* Every node answers well-formed ping (0x00) and nodes (0x02) requests, then considers the
  requester for its close list (``ping_add``: queue it, ping the queue every 2 s).
* Requests we send carry ids from a :class:`PingArray` bound to ``(pk, ip_port)``; a response is
  accepted once, within 5 s, only from exactly that key and address. Only accepted responses
  put nodes into lists (``addto_lists``).
* Once a second (``do_dht``): for the close list (base = our key) and every DHT friend's list
  (base = friend key): query queued candidates, re-query every live node every 60 s, and query
  one random good node every 20 s (every second for the first 5 times). Nodes returned by a
  nodes response that could enter a list are queued ("to_bootstrap"): the iterative lookup.
* Bootstrap nodes given by the user are queried until we have a good node, retried every 5 s.
  (The list upkeep, the lookups and these retries are :mod:`tunnel.dht.maintenance`.)
* DHT requests (0x20) for us are decrypted (NAT pings handled in
  :mod:`tunnel.dht.friend_routing`, others become events);
  those for a node in our close list are forwarded unchanged.
* Malformed, forged, unsolicited packets are dropped and counted in :class:`DhtStats`.

``now`` is seconds on the driver clock.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import nacl.exceptions

from tunnel.crypto import KeyPair, SharedKeyCache, random_nonce
from tunnel.dht.close_list import (
    BAD_NODE_TIMEOUT_S,
    Assoc,
    ClientEntry,
    CloseList,
    FriendClientList,
)
from tunnel.dht.distance import key_int
from tunnel.dht.events import DhtEvent, DhtRequestReceived, DhtStatistics, DhtStats
from tunnel.dht.friend_routing import FriendRouting
from tunnel.dht.hole_punch import NatState
from tunnel.dht.maintenance import TICK_INTERVAL_S, ListMaintenance, _Candidate, _ListWork
from tunnel.dht.ping_ids import PingArray
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.dht import (
    KIND_BOOTSTRAP_INFO,
    KIND_DHT_REQUEST,
    KIND_LAN_DISCOVERY,
    KIND_NODES_REQUEST,
    KIND_NODES_RESPONSE,
    KIND_PING_REQUEST,
    KIND_PING_RESPONSE,
    MAX_SENT_NODES,
    NODES_RESPONSE_MIN_SIZE,
    REQUEST_ID_NAT_PING,
    BootstrapInfo,
    DhtPacket,
    DhtRequest,
    LanDiscovery,
    NatPing,
    NodesRequestPayload,
    NodesResponsePayload,
    PingPayload,
    is_bootstrap_info_request,
    seal_dht_packet,
)
from tunnel.wire.ip_port import Addr, IPPort, ip_is_lan
from tunnel.wire.packed_node import PackedNode

DHT_FAKE_FRIEND_NUMBER = 2
LAN_DISCOVERY_INTERVAL_S = 10.0
LAN_DISCOVERY_PORT = 33445
LAN_DISCOVERY_PORT_RANGE = 100  # 33446..33545, 10 per round
LAN_DISCOVERY_PORTS_PER_ROUND = 10
LAN_DISCOVERY_BROADCASTS: tuple[str, ...] = ("255.255.255.255",)
LAN_DISCOVERY_BROADCASTS_V6: tuple[str, ...] = ("ff02::1",)
BOOTSTRAP_INFO_VERSION = 1_000_002_018
"""Version in 0xf0 replies: tox-bootstrapd 0.2.18 sends 1000000000 + 2018 (measured)."""

PACKET_KINDS = frozenset(
    {
        KIND_PING_REQUEST,
        KIND_PING_RESPONSE,
        KIND_NODES_REQUEST,
        KIND_NODES_RESPONSE,
        KIND_DHT_REQUEST,
        KIND_LAN_DISCOVERY,
        KIND_BOOTSTRAP_INFO,
    }
)
"""First bytes :class:`DhtCore` handles (for a dispatcher)."""


@dataclass(slots=True)
class DhtFriend:
    """A tracked DHT key: its own client list, lookup queue and NAT state."""

    public_key: bytes
    clients: FriendClientList
    work: _ListWork = field(default_factory=_ListWork)
    nat: NatState = field(default_factory=NatState)
    lock_count: int = 0
    fake: bool = False


@functools.lru_cache(maxsize=65536)
def _is_lan(ip_port: IPPort) -> bool:
    return ip_is_lan(ip_port.ip)


class DhtCore(FriendRouting, ListMaintenance):
    """A DHT node. Implements :class:`tunnel.core.DatagramCore`."""

    def __init__(
        self,
        keypair: KeyPair,
        rng: Callable[[int], bytes],
        *,
        lan_discovery: bool = False,
        lan_discovery_ipv6: bool = False,
        lan_discovery_ports: tuple[int, int] = (LAN_DISCOVERY_PORT, LAN_DISCOVERY_PORT_RANGE),
        hole_punching: bool = True,
        bootstrap_info: bytes | None = None,
        bootstrap_info_version: int = BOOTSTRAP_INFO_VERSION,
        fake_friends: int = DHT_FAKE_FRIEND_NUMBER,
        now: float = 0.0,
    ) -> None:
        self.keypair = keypair
        self.public_key = keypair.public_key
        self._rng = rng
        self._keys = SharedKeyCache(keypair.secret_key)
        self.close = CloseList(self.public_key)
        self._close_work = _ListWork()
        self.friends: dict[bytes, DhtFriend] = {}
        self._ping_ids: PingArray[tuple[bytes, IPPort]] = PingArray(rng)
        self._nodes_ids: PingArray[tuple[bytes, IPPort]] = PingArray(rng)
        self._to_ping: list[_Candidate] = []
        self._last_to_ping = float("-inf")
        self._bootstrap_nodes: list[tuple[bytes, IPPort]] = []
        self._bootstrap_index = 0
        self._last_bootstrap = float("-inf")
        self._lan_discovery = lan_discovery
        self._lan_ipv6 = lan_discovery_ipv6
        self._lan_port, self._lan_range = lan_discovery_ports
        self._lan_window = 0
        self._last_lan = float("-inf")
        self._hole_punching = hole_punching
        self._bootstrap_info = (
            BootstrapInfo(bootstrap_info_version, bootstrap_info).encode()
            if bootstrap_info is not None
            else None
        )
        self._out: list[tuple[Addr, bytes]] = []
        self._events: deque[DhtEvent] = deque()
        self.stats = DhtStats()
        self._last_tick = float("-inf")
        self._start = now
        self._handlers: dict[int, Callable[[bytes, IPPort, float], None]] = {
            KIND_PING_REQUEST: self._handle_ping_request,
            KIND_PING_RESPONSE: self._handle_ping_response,
            KIND_NODES_REQUEST: self._handle_nodes_request,
            KIND_NODES_RESPONSE: self._handle_nodes_response,
            KIND_DHT_REQUEST: self._handle_dht_request,
            KIND_LAN_DISCOVERY: self._handle_lan_discovery,
            KIND_BOOTSTRAP_INFO: self._handle_bootstrap_info,
        }
        for _ in range(fake_friends):
            fake = self.add_friend(self._rng(32), now=now)
            fake.fake = True

    # ------------------------------------------------------------------ DatagramCore

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one datagram from ``addr``; bad input is dropped and counted."""
        self.stats.packets_received += 1
        handler = self._handlers.get(data[0]) if data else None
        if handler is None:
            self.stats.dropped_unknown_kind += 1
            return
        try:
            source = IPPort.from_addr(addr)
        except (ValueError, TypeError, IndexError):
            self.stats.dropped_malformed += 1
            return
        try:
            handler(data, source, now)
        except DecryptError:
            self.stats.dropped_decrypt += 1
        except BadPacket:
            self.stats.dropped_malformed += 1

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain the datagrams to send."""
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """toxcore runs ``do_dht`` once per second."""
        return self._last_tick + TICK_INTERVAL_S if self._last_tick > float("-inf") else 0.0

    def handle_timer(self, now: float) -> None:
        """Run the periodic DHT work if a second has passed since the last run."""
        if now < self._last_tick + TICK_INTERVAL_S:
            return
        self._last_tick = now
        if self._close_work.to_bootstrap or self._close_work.next_due <= now:
            self._do_close(now)
        for friend in list(self.friends.values()):
            if friend.work.to_bootstrap or friend.work.next_due <= now:
                self._do_friend(friend, now)
        if self._hole_punching:
            for friend in list(self.friends.values()):
                if not friend.fake:
                    self._do_nat(friend, now)
        self._ping_iterate(now)
        self._bootstrap_retry(now)
        self._lan_discovery_send(now)

    def next_event(self) -> DhtEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ public API

    def statistics(self) -> DhtStatistics:
        """A frozen snapshot of the counters and list sizes."""
        s = self.stats
        computed = {"dropped", "close_nodes", "good_close_nodes", "friends"}
        values = {
            f.name: getattr(s, f.name) for f in fields(DhtStatistics) if f.name not in computed
        }
        return DhtStatistics(
            **values,
            dropped=s.dropped,
            close_nodes=len(self.close),
            good_close_nodes=self.close.good_count(self._last_tick),
            friends=sum(1 for f in self.friends.values() if not f.fake),
        )

    def bootstrap(self, public_key: bytes, addr: Addr | IPPort, now: float) -> None:
        """Add a bootstrap node (retried until the DHT is connected) and query it now."""
        ip_port = addr if isinstance(addr, IPPort) else IPPort.from_addr(addr)
        if (public_key, ip_port) not in self._bootstrap_nodes:
            self._bootstrap_nodes.append((public_key, ip_port))
        self._last_bootstrap = now
        self._send_nodes_request(ip_port, public_key, self.public_key, now)

    def is_connected(self, now: float) -> bool:
        """At least one good close-list node (toxcore ``dht_isconnected``)."""
        return any(not entry.is_bad(now) for entry in self.close)

    def is_non_lan_connected(self, now: float) -> bool:
        """At least one good close-list node on a non-LAN address."""
        for entry in self.close:
            for assoc in entry.assocs():
                if assoc.ip_port and not assoc.is_bad(now) and not ip_is_lan(assoc.ip_port.ip):
                    return True
        return False

    def get_close_nodes(
        self,
        public_key: bytes,
        count: int = MAX_SENT_NODES,
        for_lan: bool = False,
        now: float | None = None,
    ) -> list[PackedNode]:
        """Up to ``count`` good nodes closest to ``public_key`` from the close list and every
        friend list (LAN addresses only if ``for_lan``). toxcore ``get_close_nodes``."""
        if now is None:
            now = self._last_tick
        target = key_int(public_key)
        seen: dict[bytes, tuple[int, Assoc]] = {}
        bad_before = now - BAD_NODE_TIMEOUT_S
        for entry in self._all_entries():
            if entry.public_key in seen:
                continue
            assoc = entry.newest_assoc()
            if assoc.ip_port is None or assoc.timestamp <= bad_before:
                continue
            seen[entry.public_key] = (entry.pk_int ^ target, assoc)
        ranked = sorted(seen.items(), key=lambda item: item[1][0])
        nodes: list[PackedNode] = []
        for pk, (_, assoc) in ranked:
            ip_port = assoc.ip_port
            if ip_port is None or (not for_lan and _is_lan(ip_port)):
                continue
            nodes.append(PackedNode(ip_port, pk))
            if len(nodes) >= count:
                break
        return nodes

    def random_good_nodes(self, count: int, now: float) -> list[PackedNode]:
        """Up to ``count`` distinct random good nodes (onion path material)."""
        pool: list[PackedNode] = []
        seen: set[bytes] = set()
        for entry in self._all_entries():
            assoc = entry.newest_assoc()
            if entry.public_key in seen or assoc.ip_port is None or assoc.is_bad(now):
                continue
            seen.add(entry.public_key)
            pool.append(PackedNode(assoc.ip_port, entry.public_key))
        chosen: list[PackedNode] = []
        while pool and len(chosen) < count:
            index = int.from_bytes(self._rng(4), "big") % len(pool)
            chosen.append(pool.pop(index))
        return chosen

    def add_friend(self, dht_pk: bytes, now: float = 0.0) -> DhtFriend:
        """Track ``dht_pk`` (lock counted). Seeds its lookup with our closest known nodes."""
        friend = self.friends.get(dht_pk)
        if friend is None:
            friend = DhtFriend(dht_pk, FriendClientList(dht_pk))
            friend.nat.nat_ping_id = self._rng(8)
            base = key_int(dht_pk)
            for node in self.get_close_nodes(dht_pk, MAX_SENT_NODES, True, now):
                friend.work.to_bootstrap.append(
                    (key_int(node.public_key) ^ base, node.public_key, node.ip_port)
                )
            self.friends[dht_pk] = friend
        friend.lock_count += 1
        return friend

    def remove_friend(self, dht_pk: bytes) -> None:
        """Drop one lock on ``dht_pk``; forget it when no lock is left."""
        friend = self.friends.get(dht_pk)
        if friend is None:
            return
        friend.lock_count -= 1
        if friend.lock_count <= 0:
            del self.friends[dht_pk]

    def _send(self, ip_port: IPPort, data: bytes) -> None:
        self.stats.packets_sent += 1
        self._out.append((ip_port.to_addr(), data))

    def _shared_key(self, peer_pk: bytes) -> bytes:
        """The precomputed key with ``peer_pk``.

        Raises:
            DecryptError: libsodium refuses the key (low-order point, as toxcore's
                ``encrypt_precompute`` failing).
        """
        try:
            return self._keys.get(peer_pk)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise DecryptError("unusable public key") from exc

    def _usable(self, peer_pk: bytes) -> bool:
        try:
            self._shared_key(peer_pk)
        except DecryptError:
            self.stats.unusable_keys += 1
            return False
        return True

    def _seal(self, kind: int, peer_pk: bytes, plain: bytes) -> bytes:
        return seal_dht_packet(
            kind, self.public_key, self._shared_key(peer_pk), random_nonce(self._rng), plain
        )

    def _send_ping_request(self, ip_port: IPPort, peer_pk: bytes, now: float) -> None:
        if peer_pk == self.public_key or not self._usable(peer_pk):
            return
        ping_id = self._ping_ids.add((peer_pk, ip_port), now).to_bytes(8, "big")
        plain = PingPayload(KIND_PING_REQUEST, ping_id).encode()
        self.stats.pings_sent += 1
        self._send(ip_port, self._seal(KIND_PING_REQUEST, peer_pk, plain))

    def _send_nodes_request(
        self, ip_port: IPPort, peer_pk: bytes, wanted_pk: bytes, now: float
    ) -> None:
        if peer_pk == self.public_key or not self._usable(peer_pk):
            return
        ping_id = self._nodes_ids.add((peer_pk, ip_port), now).to_bytes(8, "big")
        plain = NodesRequestPayload(wanted_pk, ping_id).encode()
        self.stats.nodes_requests_sent += 1
        self._send(ip_port, self._seal(KIND_NODES_REQUEST, peer_pk, plain))

    # ------------------------------------------------------------------ handlers

    def _open(self, data: bytes, kind: int) -> tuple[DhtPacket, bytes] | None:
        packet = DhtPacket.decode_kind(data, kind)
        if packet.sender_pk == self.public_key:
            self.stats.dropped_from_self += 1
            return None
        return packet, packet.open_untrusted(self._shared_key(packet.sender_pk))

    def _handle_ping_request(self, data: bytes, source: IPPort, now: float) -> None:
        opened = self._open(data, KIND_PING_REQUEST)
        if opened is None:
            return
        packet, plain = opened
        ping = PingPayload.decode(plain, KIND_PING_REQUEST)
        reply = PingPayload(KIND_PING_RESPONSE, ping.ping_id).encode()
        self.stats.pings_answered += 1
        self._send(source, self._seal(KIND_PING_RESPONSE, packet.sender_pk, reply))
        self._ping_add(packet.sender_pk, source, now)

    def _handle_ping_response(self, data: bytes, source: IPPort, now: float) -> None:
        opened = self._open(data, KIND_PING_RESPONSE)
        if opened is None:
            return
        packet, plain = opened
        ping = PingPayload.decode(plain, KIND_PING_RESPONSE)
        sent = self._ping_ids.check(int.from_bytes(ping.ping_id, "big"), now)
        if sent is None or sent != (packet.sender_pk, source):
            self.stats.dropped_unsolicited += 1
            return
        self.stats.responses_accepted += 1
        self._addto_lists(packet.sender_pk, source, now)

    def _handle_nodes_request(self, data: bytes, source: IPPort, now: float) -> None:
        opened = self._open(data, KIND_NODES_REQUEST)
        if opened is None:
            return
        packet, plain = opened
        request = NodesRequestPayload.decode(plain)
        nodes = self.get_close_nodes(
            request.requested_pk, MAX_SENT_NODES, ip_is_lan(source.ip), now
        )
        if nodes:
            reply = NodesResponsePayload(tuple(nodes), request.ping_id).encode()
            self.stats.nodes_answered += 1
            self._send(source, self._seal(KIND_NODES_RESPONSE, packet.sender_pk, reply))
        else:
            # toxcore sends a 0-node response, which toxcore receivers reject: send nothing.
            self.stats.nodes_requests_without_answer += 1
        self._ping_add(packet.sender_pk, source, now)

    def _handle_nodes_response(self, data: bytes, source: IPPort, now: float) -> None:
        if len(data) == NODES_RESPONSE_MIN_SIZE:
            # toxcore answers with 0 nodes when it knows none; toxcore receivers drop those.
            self.stats.dropped_empty_nodes_response += 1
            return
        opened = self._open(data, KIND_NODES_RESPONSE)
        if opened is None:
            return
        packet, plain = opened
        response = NodesResponsePayload.decode(plain)
        sent = self._nodes_ids.check(int.from_bytes(response.ping_id, "big"), now)
        if sent is None or sent != (packet.sender_pk, source):
            self.stats.dropped_unsolicited += 1
            return
        self.stats.responses_accepted += 1
        self._addto_lists(packet.sender_pk, source, now)
        for node in response.nodes:
            self._consider_returned_node(node.public_key, node.ip_port, now)
            self._returned_ip_port(node.public_key, node.ip_port, packet.sender_pk, now)

    def _handle_dht_request(self, data: bytes, source: IPPort, now: float) -> None:
        request = DhtRequest.decode(data)
        if request.receiver_pk != self.public_key:
            entry = self.close.get(request.receiver_pk)
            target = None
            if entry is not None:
                target = entry.assoc6.ip_port or entry.assoc4.ip_port
            if target is None:
                self.stats.dropped_unroutable += 1
                return
            self.stats.dht_requests_forwarded += 1
            self._send(target, data)
            return
        if request.sender_pk == self.public_key:
            self.stats.dropped_from_self += 1
            return
        request_id, body = request.open_untrusted(self._shared_key(request.sender_pk))
        if request_id == REQUEST_ID_NAT_PING:
            self._handle_nat_ping(request.sender_pk, NatPing.decode(body), now)
            return
        self._events.append(DhtRequestReceived(request.sender_pk, request_id, body, source))

    def _handle_lan_discovery(self, data: bytes, source: IPPort, now: float) -> None:
        packet = LanDiscovery.decode(data)
        if not self._lan_discovery or not ip_is_lan(source.ip):
            self.stats.dropped_lan_discovery += 1
            return
        if packet.public_key == self.public_key:
            self.stats.dropped_from_self += 1
            return
        self._send_nodes_request(source, packet.public_key, self.public_key, now)

    def _handle_bootstrap_info(self, data: bytes, source: IPPort, now: float) -> None:
        if self._bootstrap_info is None or not is_bootstrap_info_request(data):
            raise BadPacket("unexpected bootstrap info packet")
        self.stats.bootstrap_info_answered += 1
        self._send(source, self._bootstrap_info)

    # ------------------------------------------------------------------ lists, LAN discovery

    def _all_entries(self) -> list[ClientEntry]:
        entries = self.close.entries()
        for friend in self.friends.values():
            entries.extend(friend.clients)
        return entries

    def _lan_discovery_send(self, now: float) -> None:
        if not self._lan_discovery or now <= self._last_lan + LAN_DISCOVERY_INTERVAL_S:
            return
        self._last_lan = now
        packet = LanDiscovery(self.public_key).encode()
        ports = [self._lan_port]
        if self._lan_range > 0:
            start = self._lan_window % self._lan_range
            ports += [
                self._lan_port + 1 + (start + i) % self._lan_range
                for i in range(min(LAN_DISCOVERY_PORTS_PER_ROUND, self._lan_range))
            ]
            self._lan_window += LAN_DISCOVERY_PORTS_PER_ROUND
        hosts = list(LAN_DISCOVERY_BROADCASTS)
        if self._lan_ipv6:
            hosts += LAN_DISCOVERY_BROADCASTS_V6
        for host in hosts:
            for port in ports:
                self.stats.packets_sent += 1
                self._out.append(((host, port), packet))
