"""Hundreds of our DHT nodes on the simulator converge to the 0.2.18 close-list oracle, and
lookups (iterative, and the DHT's own friend search) find the true closest node."""

from __future__ import annotations

import pytest

from tunnel.dht.distance import key_int
from tunnel.testing.dht_sim import build_network, close_list_report, iterative_lookup
from tunnel.testing.rng import SeededRng

pytestmark = pytest.mark.slow


def test_two_hundred_nodes_converge_and_lookups_find_closest() -> None:
    sim = build_network(200, seed=2026)
    sim.net.run_for(150.0)
    report = close_list_report(sim)
    assert report.converged, report
    assert report.closest_checked == 800
    assert report.closest_excluded_full_bucket <= 8, report
    assert report.small_buckets_complete >= 0.8 * report.small_buckets, report
    rng = SeededRng("lookups")
    results = [iterative_lookup(sim, sim.cores[rng.randrange(200)], rng(32)) for _ in range(50)]
    assert all(r.found for r in results)
    assert max(r.hops for r in results) <= 8
    # The DHT's own search: track a random key as a DHT friend; its client list converges to
    # the nodes closest to it.
    searcher = sim.cores[17]
    target = rng(32)
    searcher.add_friend(target, sim.net.now)
    sim.net.run_for(30.0)
    friend = searcher.friends[target]
    best = min(sim.cores, key=lambda c: key_int(c.public_key) ^ key_int(target))
    assert friend.clients.get(best.public_key) is not None
    dropped = sum(c.stats.dropped_malformed + c.stats.dropped_decrypt for c in sim.cores)
    assert dropped == 0


def test_same_seed_same_trace() -> None:
    hashes = []
    for _ in range(2):
        sim = build_network(30, seed=5, trace=True)
        sim.net.run_for(20.0)
        hashes.append(sim.net.trace_hash())
    assert hashes[0] == hashes[1]
