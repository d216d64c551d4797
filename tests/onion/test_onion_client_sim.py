"""OnionClient end to end on the simulator (tox-protocol.md 5.5-5.10): every node runs a relay,
an announce store and a client; an oracle stands in for the DHT. Nodes get onion-connected,
friends find each other's DHT keys, friend requests go both ways."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tunnel.crypto import KeyPair
from tunnel.onion.announce_store import OnionAnnounceStore
from tunnel.onion.client import (
    FriendDhtKeyLearned,
    FriendRequestReceived,
    OnionClient,
    OnionEvent,
    OnionHooks,
    OnionStatusChanged,
)
from tunnel.onion.relay import OnionRelay
from tunnel.onion.stack import OnionStack
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import LinkParams, SimNetwork
from tunnel.toxid import ToxId
from tunnel.wire.ip_port import IPPort
from tunnel.wire.packed_node import PackedNode

PORT = 44200


def _xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


class OracleDht:
    """Knows every node: close nodes by brute force, random nodes from a seeded rng."""

    def __init__(self, rng: SeededRng) -> None:
        self.nodes: list[PackedNode] = []
        self.rng = rng

    def close_nodes(self, self_pk: bytes) -> OnionHooks:
        raise NotImplementedError

    def get_close_nodes(self, exclude: bytes, pk: bytes, count: int) -> Sequence[PackedNode]:
        others = [n for n in self.nodes if n.public_key != exclude]
        return sorted(others, key=lambda n: _xor(n.public_key, pk))[:count]

    def random_nodes(self, exclude: bytes, count: int) -> Sequence[PackedNode]:
        others = [n for n in self.nodes if n.public_key != exclude]
        return [others[self.rng.randrange(len(others))] for _ in range(min(count, len(others)))]


class Node:
    def __init__(self, net: SimNetwork, dht: OracleDht, index: int, rng: SeededRng) -> None:
        ip = f"11.0.{index // 250}.{index % 250 + 1}"
        self.real = KeyPair.generate(rng)
        self.dht_keys = KeyPair.generate(rng)
        self.node = PackedNode(IPPort.parse(ip, PORT), self.dht_keys.public_key)
        dht.nodes.append(self.node)
        pk = self.dht_keys.public_key
        hooks = OnionHooks(
            random_dht_nodes=lambda n: dht.random_nodes(pk, n),
            dhtpk_nodes=lambda: dht.get_close_nodes(pk, pk, 4),
        )
        self.client = OnionClient(
            self.real, self.dht_keys, rng.fork("c"), net.now, hooks=hooks,
            nospam=rng(4),
        )  # fmt: skip
        relay = OnionRelay(self.dht_keys, rng.fork("r"), net.now)
        store = OnionAnnounceStore(
            self.dht_keys, rng.fork("s"), lambda key, n: dht.get_close_nodes(pk, key, n)
        )
        self.stack = OnionStack(relay, store, self.client)
        net.attach(self.stack, net.add_host(ip), PORT)
        self.events: list[OnionEvent] = []

    def drain(self) -> None:
        while (event := self.client.next_event()) is not None:
            self.events.append(event)

    def learned(self, other: Node) -> bool:
        return any(
            isinstance(e, FriendDhtKeyLearned)
            and e.public_key == other.real.public_key
            and e.dht_public_key == other.dht_keys.public_key
            for e in self.events
        )


def _network(count: int, seed: int, loss: float = 0.0) -> tuple[SimNetwork, list[Node]]:
    net = SimNetwork(seed)
    rng = SeededRng(seed)
    dht = OracleDht(rng.fork("dht"))
    nodes = [Node(net, dht, i, rng.fork(i)) for i in range(count)]
    if loss:
        for a in nodes:
            for b in nodes:
                if a is not b:
                    net.set_link(
                        str(a.node.ip_port.ip),
                        str(b.node.ip_port.ip),
                        LinkParams(loss=loss),
                        both_ways=False,
                    )
    return net, nodes


def _run_until(net: SimNetwork, nodes: list[Node], cond: object, limit_s: float) -> float:
    start = net.now
    while net.now - start < limit_s:
        net.run_for(1.0)
        for n in nodes:
            n.drain()
        if callable(cond) and cond():
            return net.now - start
    raise AssertionError(f"condition not met within {limit_s} s")


def test_nodes_get_onion_connected() -> None:
    net, nodes = _network(12, seed=1)
    took = _run_until(net, nodes, lambda: all(n.client.connected for n in nodes), 60.0)
    assert took < 30
    for n in nodes:
        assert any(isinstance(e, OnionStatusChanged) and e.connected for e in n.events)
        stored = [x for x in n.client.self_nodes if x.is_stored]
        assert stored
    total_entries = sum(len(n.stack.store) for n in nodes if n.stack.store)
    assert total_entries >= len(nodes)


def test_friends_learn_dht_keys_and_friend_requests_both_ways() -> None:
    net, nodes = _network(16, seed=2)
    alice, bob, carol = nodes[0], nodes[1], nodes[2]
    alice.client.send_friend_request(bob.client.tox_id, b"hi bob, it's alice")
    # Carol uses an out-of-date Tox ID of Bob: wrong nospam, never reported.
    stale = ToxId(bob.real.public_key, bytes(4))
    carol.client.send_friend_request(stale, b"hello?")
    took = _run_until(
        net,
        nodes,
        lambda: any(isinstance(e, FriendRequestReceived) for e in bob.events),
        120.0,
    )
    assert took < 60
    requests = [e for e in bob.events if isinstance(e, FriendRequestReceived)]
    assert requests == [FriendRequestReceived(alice.real.public_key, b"hi bob, it's alice")]
    bob.client.accept_friend_request(alice.real.public_key)
    _run_until(net, nodes, lambda: alice.learned(bob) and bob.learned(alice), 120.0)
    alice.client.set_friend_online(bob.real.public_key, True)
    bob.client.set_friend_online(alice.real.public_key, True)
    assert bob.client.requests.dropped_nospam >= 1
    assert not any(
        isinstance(e, FriendRequestReceived) and e.public_key == carol.real.public_key
        for e in bob.events
    )
    # Bob asks Dave; a request from someone we already added (Carol added Bob) is filtered.
    dave = nodes[3]
    bob.client.send_friend_request(dave.client.tox_id, b"dave?")
    bob.client.send_friend_request(carol.client.tox_id, b"carol?")
    _run_until(
        net,
        nodes,
        lambda: any(
            isinstance(e, FriendRequestReceived) and e.public_key == bob.real.public_key
            for e in dave.events
        ),
        120.0,
    )
    net.run_for(30.0)
    carol.drain()
    assert not any(isinstance(e, FriendRequestReceived) for e in carol.events)


def test_resend_schedule_until_online() -> None:
    net, nodes = _network(12, seed=3)
    alice, bob = nodes[0], nodes[1]
    alice.client.send_friend_request(bob.client.tox_id, b"ping")
    _run_until(net, nodes, lambda: bob.events and any(
        isinstance(e, FriendRequestReceived) for e in bob.events), 120.0)  # fmt: skip
    request = alice.client.requests.outgoing[bob.real.public_key]
    first = request.last_sent
    _run_until(net, nodes, lambda: request.sent_count >= 3, 120.0)
    # Bob reports the request once even though it keeps arriving.
    assert sum(isinstance(e, FriendRequestReceived) for e in bob.events) == 1
    assert request.timeout_s >= 20
    assert request.last_sent - first >= 5 + 10
    alice.client.set_friend_online(bob.real.public_key, True)
    assert bob.real.public_key not in alice.client.requests.outgoing


@pytest.mark.slow
def test_many_friend_pairs_with_loss() -> None:
    count = 60
    net, nodes = _network(count, seed=4, loss=0.1)
    pairs = [(nodes[i], nodes[i + 1]) for i in range(0, count, 2)]
    for a, b in pairs:
        a.client.add_friend(b.real.public_key)
        b.client.add_friend(a.real.public_key)
    took = _run_until(
        net,
        nodes,
        lambda: all(a.learned(b) and b.learned(a) for a, b in pairs),
        300.0,
    )
    assert took < 180
