"""Onion paths of the client: building, use accounting, failure detection (tox-protocol.md 5.7).

Theory of operation
-------------------
A :class:`PathPool` has ``NUMBER_ONION_PATHS = 6`` slots (toxcore keeps one pool for
announcing ourselves and one for friend searches and data). Asking for a path picks a slot
(random, or the one a node was last reached through) and rebuilds it when it timed out:

* a path that was used ``ONION_PATH_MAX_NO_RESPONSE_USES = 4`` times without any response
  and whose last use is older than 4 s (never answered) or 10 s (answered before) is dead;
* every path dies ``ONION_PATH_MAX_LIFETIME = 1200`` s after creation;
* a new path starts with 2 uses counted, so an unconfirmed path gets about two tries.

Each path has a ``path_num`` (random, ``== slot (mod 6)``) recorded in the sendback of every
request sent through it; a response names the path, which :meth:`PathPool.mark_success`
confirms (and whose nodes become path-node candidates).

Node A is either a UDP DHT node (``OnionRequest0`` over UDP, first layer keyed with our DHT
key) or one of our TCP relays (the relay plays node A: TCP 0x08 without the A layer). Nodes B
and C are always UDP DHT nodes. :class:`PathNodeDraw` chooses them for each new path, and
which kind of node A (relays while UDP-first paths go unanswered).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from tunnel.crypto import KeyPair, Rng
from tunnel.errors import DecryptError
from tunnel.onion.events import OnionHooks
from tunnel.wire.ip_port import Addr
from tunnel.wire.onion import seal_onion_request, seal_tcp_onion_request, shared_key_untrusted
from tunnel.wire.packed_node import PackedNode

NUMBER_ONION_PATHS = 6
ONION_PATH_FIRST_TIMEOUT_S = 4
ONION_PATH_TIMEOUT_S = 10
ONION_PATH_MAX_LIFETIME_S = 1200
ONION_PATH_MAX_NO_RESPONSE_USES = 4
NEVER = float("-inf")


def is_timeout(timestamp: float, timeout_s: float, now: float) -> bool:
    """toxcore ``mono_time_is_timeout``: ``timestamp + timeout <= now`` (NEVER is long ago)."""
    return timestamp + timeout_s <= now


def random_below(rng: Rng, n: int) -> int:
    """A random integer in ``[0, n)`` from ``rng`` (n >= 1)."""
    return int.from_bytes(rng(8), "big") % n


@dataclass(frozen=True, slots=True)
class TcpRelayHop:
    """Node A played by one of our TCP relays; ``relay`` is the TCP layer's handle for it."""

    relay: Hashable


FirstHop = PackedNode | TcpRelayHop
DrawNodes = Callable[[], tuple[FirstHop, PackedNode, PackedNode] | None]
"""Returns ``(first hop, B, C)`` for a new path, or None when too few nodes are known."""


@dataclass(slots=True)
class OnionPath:
    """One 3-hop path with its keys and use accounting."""

    first: FirstHop
    second: PackedNode
    third: PackedNode
    key1: bytes | None
    public_key1: bytes | None
    temp2: KeyPair
    key2: bytes
    temp3: KeyPair
    key3: bytes
    path_num: int
    created: float
    last_success: float
    last_used: float
    used_times: int

    def udp_nodes(self) -> list[PackedNode]:
        """The path's UDP nodes (candidates for future paths)."""
        nodes = [self.second, self.third]
        if isinstance(self.first, PackedNode):
            nodes.insert(0, self.first)
        return nodes

    def seal(self, nonce: bytes, destination: PackedNode, payload: bytes) -> tuple[FirstHop, bytes]:
        """The packet that carries ``payload`` to ``destination``, and where to send it.

        UDP first hop: an 0x80 datagram; TCP first hop: a TCP 0x08 packet for that relay.
        """
        hops = [self.second.ip_port, self.third.ip_port]
        k2 = (self.key2, self.temp2.public_key)
        k3 = (self.key3, self.temp3.public_key)
        if isinstance(self.first, TcpRelayHop) or self.key1 is None or self.public_key1 is None:
            packet = seal_tcp_onion_request(nonce, [k2, k3], hops, destination.ip_port, payload)
            return self.first, packet.encode()
        k1 = (self.key1, self.public_key1)
        packet0 = seal_onion_request(nonce, [k1, k2, k3], hops, destination.ip_port, payload)
        return self.first, packet0.encode()

    def first_addr(self) -> Addr | None:
        """Node A's UDP address (None for a TCP relay)."""
        if isinstance(self.first, PackedNode):
            return self.first.ip_port.to_addr()
        return None


class PathPool:
    """Six path slots with toxcore's timeouts (see the module docstring)."""

    def __init__(self, dht_keys: KeyPair, rng: Rng) -> None:
        self._dht_keys = dht_keys
        self._rng = rng
        self.paths: list[OnionPath | None] = [None] * NUMBER_ONION_PATHS

    def timed_out(self, slot: int, now: float) -> bool:
        """toxcore ``path_timed_out`` for a slot (an empty slot is timed out)."""
        path = self.paths[slot % NUMBER_ONION_PATHS]
        if path is None:
            return True
        is_new = path.last_success == path.created
        timeout = ONION_PATH_FIRST_TIMEOUT_S if is_new else ONION_PATH_TIMEOUT_S
        return (
            path.used_times >= ONION_PATH_MAX_NO_RESPONSE_USES
            and is_timeout(path.last_used, timeout, now)
        ) or is_timeout(path.created, ONION_PATH_MAX_LIFETIME_S, now)

    def exists(self, path_num: int, now: float) -> bool:
        """toxcore ``path_exists``: the path with this number is alive."""
        path = self.paths[path_num % NUMBER_ONION_PATHS]
        return path is not None and path.path_num == path_num and not self.timed_out(path_num, now)

    def path(self, path_num: int) -> OnionPath | None:
        """The path currently in ``path_num``'s slot, if it is that path."""
        path = self.paths[path_num % NUMBER_ONION_PATHS]
        return path if path is not None and path.path_num == path_num else None

    def _reusable(self, third: PackedNode, now: float) -> int | None:
        for slot, path in enumerate(self.paths):
            if path is None or is_timeout(path.last_success, ONION_PATH_TIMEOUT_S, now):
                continue
            if is_timeout(path.created, ONION_PATH_MAX_LIFETIME_S, now):
                continue
            if isinstance(path.first, PackedNode) and path.first.ip_port == third.ip_port:
                return slot
        return None

    def get(self, path_num: int | None, now: float, draw_nodes: DrawNodes) -> OnionPath | None:
        """A usable path (toxcore ``random_path``); builds one in the slot if needed.

        Args:
            path_num: reuse this path's slot (None: a random slot).
            now: current time.
            draw_nodes: returns ``(first hop, B, C)`` for a new path, or None if unknown.
        """
        slot = (
            random_below(self._rng, NUMBER_ONION_PATHS)
            if path_num is None
            else path_num % NUMBER_ONION_PATHS
        )
        if self.timed_out(slot, now):
            nodes = draw_nodes()
            if nodes is None:
                return None
            reuse = self._reusable(nodes[2], now)
            if reuse is None:
                try:
                    self.paths[slot] = self._build(slot, nodes, now)
                except DecryptError:
                    return None  # a node key from the network that libsodium refuses
            else:
                slot = reuse
        path = self.paths[slot]
        if path is None:  # pragma: no cover - built above
            return None
        if path.used_times < ONION_PATH_MAX_NO_RESPONSE_USES:
            path.last_used = now
        path.used_times += 1
        return path

    def _build(
        self, slot: int, nodes: tuple[FirstHop, PackedNode, PackedNode], now: float
    ) -> OnionPath:
        first, second, third = nodes
        if isinstance(first, PackedNode):
            key1: bytes | None = shared_key_untrusted(first.public_key, self._dht_keys.secret_key)
            pk1: bytes | None = self._dht_keys.public_key
        else:
            key1 = pk1 = None
        temp2, temp3 = KeyPair.generate(self._rng), KeyPair.generate(self._rng)
        number = int.from_bytes(self._rng(4), "big")
        path_num = (number // NUMBER_ONION_PATHS) * NUMBER_ONION_PATHS + slot
        if path_num > 0xFFFFFFFF:
            path_num -= NUMBER_ONION_PATHS
        return OnionPath(
            first=first,
            second=second,
            third=third,
            key1=key1,
            public_key1=pk1,
            temp2=temp2,
            key2=shared_key_untrusted(second.public_key, temp2.secret_key),
            temp3=temp3,
            key3=shared_key_untrusted(third.public_key, temp3.secret_key),
            path_num=path_num,
            created=now,
            last_success=now,
            last_used=now,
            used_times=ONION_PATH_MAX_NO_RESPONSE_USES // 2,
        )

    def mark_success(self, path_num: int, now: float) -> OnionPath | None:
        """A response came back through ``path_num``; returns the path if it is current."""
        path = self.path(path_num)
        if path is None:
            return None
        path.last_success = now
        path.used_times = 0
        return path


def pick_distinct(rng: Rng, nodes: Sequence[PackedNode], count: int) -> list[PackedNode]:
    """``count`` random nodes, distinct when there are enough of them (toxcore draws with
    replacement; distinct nodes make better paths and interoperate the same)."""
    pool = list(nodes)
    out: list[PackedNode] = []
    while len(out) < count and pool:
        out.append(pool.pop(random_below(rng, len(pool))))
    while len(out) < count and nodes:
        out.append(nodes[random_below(rng, len(nodes))])
    return out


MIN_DISTINCT_PATH_NODES = 3


def pick_path_nodes(
    rng: Rng, pool: Sequence[PackedNode], reachable: Sequence[PackedNode]
) -> tuple[PackedNode, PackedNode, PackedNode]:
    """Nodes A, B, C for a UDP path: distinct ones from ``pool`` (:func:`pick_distinct`), unless
    the DHT reaches fewer than three nodes directly (``reachable``: its good nodes). Then the
    path is drawn with replacement from those alone (A == B == C possible): on a tiny network,
    or behind a symmetric NAT whose only reachable node is a bootstrap node, the other path
    nodes learnt from announce responses are often unreachable from each other, and every
    path of distinct nodes would cross such a pair. toxcore (``onion_client.c``
    ``random_nodes_path_onion``) always draws with replacement, so it builds such paths too.
    """
    if 0 < len(reachable) < MIN_DISTINCT_PATH_NODES:
        a, b, c = (reachable[random_below(rng, len(reachable))] for _ in range(3))
        return a, b, c
    a, b, c = pick_distinct(rng, pool, 3)
    return a, b, c


UDP_ONION_SILENT_S = ONION_PATH_TIMEOUT_S
"""UDP-first paths unanswered this long while TCP relays are up: new paths start at a relay."""
UDP_ONION_RETRY_S = 30
"""While UDP is silent, one new path in this interval still starts at a UDP node (a probe)."""


class PathNodeDraw:
    """Nodes for new paths (toxcore ``random_nodes_path_onion``): all UDP while the DHT is
    connected, else a TCP relay as node A.

    Deviation: toxcore only switches when the DHT times out; we also switch when UDP-first
    paths stay silent (:meth:`udp_sent` with no :meth:`udp_answered` for
    ``UDP_ONION_SILENT_S``: UDP dropped on the way, while the DHT still looks connected until
    its nodes time out, 122 s later) while relays are up, and keep probing UDP with one path
    every ``UDP_ONION_RETRY_S``.

    Args:
        rng: randomness.
        hooks: the onion client's hooks (``onion_tcp_relays``, ``dht_connected``,
            ``random_dht_nodes``).
    """

    def __init__(self, rng: Rng, hooks: OnionHooks) -> None:
        self._rng = rng
        self._hooks = hooks
        self._udp_unanswered_since: float | None = None  # first UDP-first send not answered
        self._last_udp_probe = NEVER

    def udp_sent(self, now: float) -> None:
        """A request went out on a UDP-first path."""
        if self._udp_unanswered_since is None:
            self._udp_unanswered_since = now

    def udp_answered(self) -> None:
        """A UDP-first path answered: UDP works (again), UDP-first paths are preferred."""
        self._udp_unanswered_since = None

    def udp_silent(self, now: float) -> bool:
        """UDP-first paths have gone unanswered for ``UDP_ONION_SILENT_S``."""
        since = self._udp_unanswered_since
        return since is not None and is_timeout(since, UDP_ONION_SILENT_S, now)

    def draw(
        self, path_nodes: Sequence[PackedNode], bootstrap_nodes: Sequence[PackedNode], now: float
    ) -> tuple[FirstHop, PackedNode, PackedNode] | None:
        """Nodes A, B, C for a new path, or None (nothing to build one from)."""
        pool = path_nodes or bootstrap_nodes
        relays = list(self._hooks.onion_tcp_relays())
        use_udp = self._hooks.dht_connected()
        if use_udp and relays and self.udp_silent(now):
            use_udp = is_timeout(self._last_udp_probe, UDP_ONION_RETRY_S, now)
            if use_udp:
                self._last_udp_probe = now
        if use_udp:
            if not pool:
                return None
            reachable = self._hooks.random_dht_nodes(MIN_DISTINCT_PATH_NODES)
            return pick_path_nodes(self._rng, pool, reachable)
        if not relays:
            return None
        pool = path_nodes if len(path_nodes) >= 2 else bootstrap_nodes
        if not pool:
            return None
        # B and C drawn with replacement, as toxcore does: behind a relay, the nodes reachable
        # over UDP may be very few (the relay's own DHT node alone), so B == C must be possible
        b, c = (pool[random_below(self._rng, len(pool))] for _ in range(2))
        return TcpRelayHop(relays[random_below(self._rng, len(relays))]), b, c
