"""DHT networks on the simulator, with brute-force oracles (used by tests and ``bench/dht_sim.py``).

* :func:`build_network`: ``n`` :class:`DhtCore` nodes on public simulated hosts, each
  bootstrapping from a few seed nodes (a list, retried until connected).
* :func:`close_list_report`: compares every node's close list with the 0.2.18 bucket oracle
  computed by brute force over all node keys: a bucket whose population is at most 8 must hold
  all of it, a bigger one must be full; and the node's ``k`` XOR-closest peers must be present.
* :func:`iterative_lookup`: a Kademlia-style lookup for a key over the nodes' real
  ``get_close_nodes`` answers (alpha parallel queries per hop), counting hops, checked against
  the true closest node.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from tunnel.crypto import KeyPair
from tunnel.dht.close_list import LCLIENT_NODES
from tunnel.dht.core import DhtCore
from tunnel.dht.distance import bucket_index_int, key_int
from tunnel.testing.sim import SimHost, SimNetwork
from tunnel.wire.ip_port import Addr

DHT_PORT = 33445


@dataclass
class DhtSimNetwork:
    """The simulated network and its DHT nodes (same index in ``cores`` and ``addrs``)."""

    net: SimNetwork
    cores: list[DhtCore]
    addrs: list[Addr]
    by_pk: dict[bytes, DhtCore] = field(default_factory=dict)


def build_network(
    n: int,
    seed: int,
    *,
    seeds: int = 4,
    fake_friends: int = 2,
    join_spread_s: float = 10.0,
    trace: bool = False,
) -> DhtSimNetwork:
    """``n`` nodes; the first ``seeds`` bootstrap from each other, the rest from all seeds.

    Non-seed nodes are started spread over ``join_spread_s`` seconds of virtual time.
    """
    net = SimNetwork(seed, trace=trace)
    sim = DhtSimNetwork(net, [], [])
    for i in range(n):
        rng = net.fork_rng(f"dht{i}")
        core = DhtCore(KeyPair.generate(rng), rng, fake_friends=fake_friends, now=net.now)
        host = net.add_host()
        sim.cores.append(core)
        sim.addrs.append((str(host.ip), DHT_PORT))
        sim.by_pk[core.public_key] = core
        bootstrap = [j for j in range(min(seeds, n)) if j != i]
        start = 0.0 if i < seeds else join_spread_s * i / n

        def join(core: DhtCore = core, host: SimHost = host, nodes: list[int] = bootstrap) -> None:
            net.attach(core, host, DHT_PORT)
            for j in nodes:
                core.bootstrap(sim.cores[j].public_key, sim.addrs[j], net.now)

        net.call_later(start, join)
    return sim


@dataclass(frozen=True)
class CloseListReport:
    """How far close lists are from the oracle."""

    nodes: int
    closest_checked: int
    closest_missing: int
    closest_excluded_full_bucket: int
    small_buckets: int
    small_buckets_complete: int
    big_buckets: int
    big_buckets_full: int

    @property
    def converged(self) -> bool:
        """Every node holds its k XOR-closest peers, except where 0.2.18's rule (no eviction
        from a bucket full of good nodes) keeps one out."""
        return self.closest_missing == 0


def close_list_report(sim: DhtSimNetwork, k: int = 4) -> CloseListReport:
    """Brute-force oracle comparison for every node (see the module docstring)."""
    now = sim.net.now
    keys = [key_int(c.public_key) for c in sim.cores]
    checked = missing = excluded = 0
    small = small_ok = big = big_ok = 0
    for core, me in zip(sim.cores, keys, strict=True):
        population: dict[int, int] = {}
        for other in keys:
            if other != me:
                b = bucket_index_int(me, other)
                population[b] = population.get(b, 0) + 1
        good = {b: sum(1 for e in core.close.bucket(b) if not e.is_bad(now)) for b in population}
        for b, count in population.items():
            if count <= LCLIENT_NODES:
                small += 1
                small_ok += good[b] == count
            else:
                big += 1
                big_ok += good[b] == LCLIENT_NODES
        closest = heapq.nsmallest(k, (o for o in keys if o != me), key=lambda o: o ^ me)
        for other in closest:
            checked += 1
            entry = core.close.get(other.to_bytes(32, "big"))
            if entry is not None and not entry.is_bad(now):
                continue
            if good[bucket_index_int(me, other)] >= LCLIENT_NODES:
                excluded += 1
            else:
                missing += 1
    return CloseListReport(len(sim.cores), checked, missing, excluded, small, small_ok, big, big_ok)


@dataclass(frozen=True)
class LookupResult:
    """One iterative lookup."""

    found: bool
    hops: int
    queries: int


def iterative_lookup(
    sim: DhtSimNetwork, start: DhtCore, target: bytes, *, alpha: int = 3, max_hops: int = 30
) -> LookupResult:
    """Look ``target`` up from ``start`` using each node's answer to a nodes request."""
    target_int = key_int(target)
    true_closest = min((c.public_key for c in sim.cores), key=lambda pk: key_int(pk) ^ target_int)
    now = sim.net.now
    shortlist: dict[bytes, int] = {}
    for node in start.get_close_nodes(target, 4, for_lan=True, now=now):
        shortlist[node.public_key] = key_int(node.public_key) ^ target_int
    if start.public_key == true_closest:
        return LookupResult(True, 0, 0)
    queried: set[bytes] = set()
    hops = queries = 0
    best = min(shortlist.values(), default=None)
    while hops < max_hops:
        candidates = sorted((d, pk) for pk, d in shortlist.items() if pk not in queried)[:alpha]
        if not candidates:
            break
        hops += 1
        for _, pk in candidates:
            queried.add(pk)
            queries += 1
            peer = sim.by_pk.get(pk)
            if peer is None:
                continue
            for node in peer.get_close_nodes(target, 4, for_lan=True, now=now):
                shortlist.setdefault(node.public_key, key_int(node.public_key) ^ target_int)
        new_best = min(shortlist.values())
        if best is not None and new_best >= best and true_closest in queried:
            break
        best = new_best
    found = true_closest in shortlist
    return LookupResult(found, hops, queries)
