"""Onion path nodes with few reachable DHT nodes (issue 11: a peer behind a random-port NAT
whose only reachable node is the bootstrap node): tunnel.onion.paths.pick_path_nodes."""

from __future__ import annotations

from tunnel.onion.paths import pick_path_nodes
from tunnel.testing.rng import SeededRng
from tunnel.wire.ip_port import IPPort
from tunnel.wire.packed_node import PackedNode


def _node(i: int) -> PackedNode:
    return PackedNode(IPPort.parse(f"198.18.0.{i}", 54000 + i), bytes([i]) * 32)


def test_nat_onion_paths_one_reachable_node_makes_the_whole_path() -> None:
    rng = SeededRng(5)
    srv = _node(1)
    pool = [srv, _node(2), _node(3)]  # 2 and 3 learnt from announce responses, unreachable
    for _ in range(20):
        assert pick_path_nodes(rng, pool, [srv]) == (srv, srv, srv)


def test_nat_onion_paths_two_reachable_nodes_with_replacement() -> None:
    rng = SeededRng(6)
    reachable = [_node(1), _node(2)]
    seen = set()
    for _ in range(50):
        path = pick_path_nodes(rng, [*reachable, _node(3)], reachable)
        assert set(path) <= set(reachable)
        seen.add(path)
    assert len(seen) > 2


def test_nat_onion_paths_enough_nodes_stay_distinct() -> None:
    rng = SeededRng(7)
    pool = [_node(i) for i in range(1, 9)]
    for _ in range(20):
        path = pick_path_nodes(rng, pool, pool[:3])
        assert len(set(path)) == 3
    # the DHT knows nothing yet (bootstrap nodes only): the pool decides
    assert len(set(pick_path_nodes(rng, pool, []))) == 3
