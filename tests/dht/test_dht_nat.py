"""NAT traversal through the DHT (tox-protocol.md 4.8-4.9), LAN discovery (4.10), bootstrap
retry (4.7), bad/kill timeouts (4.6.2) and friend lists (4.6.5), with explicit ``now``."""

from __future__ import annotations

import pytest

from tunnel.crypto import KeyPair
from tunnel.dht.close_list import (
    BAD_NODE_TIMEOUT_S,
    KILL_NODE_TIMEOUT_S,
    MAX_FRIEND_CLIENTS,
    FriendClientList,
)
from tunnel.dht.core import DhtCore
from tunnel.dht.distance import key_int
from tunnel.dht.events import FriendIpFound
from tunnel.dht.hole_punch import NatState, guess_ports
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import NatKind, SimNetwork
from tunnel.wire.dht import KIND_LAN_DISCOVERY, KIND_NODES_REQUEST
from tunnel.wire.ip_port import IPPort


def make_core(label: str, **kwargs: object) -> DhtCore:
    rng = SeededRng(f"dht-nat-{label}")
    return DhtCore(KeyPair.generate(rng), rng, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("b_nat", [NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC])
def test_friends_behind_nats_find_each_other(b_nat: NatKind) -> None:
    """Port-restricted on both sides: the friends' direct lookups cross and open both NATs.
    A symmetric NAT on b needs the real thing: NAT pings routed through the DHT (0x20/0xfe)
    and a's port guessing around the ports the DHT reports for b."""
    net = SimNetwork(11, trace=False)
    cores: list[DhtCore] = []
    addrs = []
    for i in range(16):
        rng = net.fork_rng(f"n{i}")
        core = DhtCore(KeyPair.generate(rng), rng, now=net.now)
        if i == 14:
            host = net.add_natted_host(NatKind.PORT_RESTRICTED)
        elif i == 15:
            host = net.add_natted_host(b_nat)
        else:
            host = net.add_host()
        endpoint = net.attach(core, host, 33445)
        addrs.append(endpoint.addr)
        if i:
            core.bootstrap(cores[0].public_key, addrs[0], net.now)
        cores.append(core)
    a, b = cores[14], cores[15]
    net.run_for(40.0)
    assert a.is_connected(net.now)
    assert b.is_connected(net.now)
    a.add_friend(b.public_key, net.now)
    b.add_friend(a.public_key, net.now)
    found = net.run_until(
        lambda: (
            a.friend_ip_port(b.public_key) is not None
            and b.friend_ip_port(a.public_key) is not None
        ),
        timeout=60.0,
    )
    assert found
    events = [e for e in iter(a.next_event, None) if isinstance(e, FriendIpFound)]
    assert events[0].public_key == b.public_key
    assert not events[0].ip_port.ip.is_private  # the NAT's public mapping
    assert all(c.stats.dropped_malformed == 0 and c.stats.dropped_decrypt == 0 for c in cores)
    if b_nat is NatKind.SYMMETRIC:
        assert sum(c.stats.dht_requests_forwarded for c in cores) > 0  # NAT pings routed
        assert a.stats.hole_punch_pings_sent >= 48  # port guessing around b's ports


def test_port_guessing_matches_toxcore() -> None:
    state = NatState()
    assert guess_ports([5000, 5000, 5000, 5000], state, 0.0) == [5000]
    state = NatState()
    guesses = guess_ports([1000, 2000], state, 0.0)
    assert len(guesses) == 48
    assert guesses[:6] == [1000, 1000, 2000, 2000, 1001, 999]  # it=0..5, numports=2
    assert state.punching_index == 48
    state = NatState(tries=6, punching_timestamp=0.0)
    guesses = guess_ports([7, 7], state, 1.0)
    assert guesses == [7, *range(1024, 1024 + 48)]
    assert state.punching_index2 == 24


def test_lan_discovery_off_by_default_and_on_by_config() -> None:
    off = make_core("off")
    on = make_core("on", lan_discovery=True, lan_discovery_ipv6=True)
    peer = make_core("peer")
    packet = bytes((KIND_LAN_DISCOVERY,)) + peer.public_key
    off.receive(packet, ("192.168.1.7", 33445), 0.0)
    assert off.datagrams_to_send() == []
    assert off.stats.dropped_lan_discovery == 1
    on.receive(packet, ("11.0.0.7", 33445), 0.0)  # not a LAN source
    assert on.stats.dropped_lan_discovery == 1
    on.receive(packet, ("192.168.1.7", 33445), 0.0)
    ((dst, data),) = on.datagrams_to_send()
    assert dst == ("192.168.1.7", 33445)
    assert data[0] == KIND_NODES_REQUEST
    assert on.close.get(peer.public_key) is None  # not added until it answers
    off.handle_timer(0.0)
    assert not [d for _, d in off.datagrams_to_send() if d[0] == KIND_LAN_DISCOVERY]
    on.handle_timer(1.0)
    sent = [dst for dst, d in on.datagrams_to_send() if d[0] == KIND_LAN_DISCOVERY]
    ports = sorted({port for _, port in sent})
    assert ports == [33445, *range(33446, 33456)]
    assert {host for host, _ in sent} == {"255.255.255.255", "ff02::1"}
    on.handle_timer(11.5)  # strictly more than 10 s later: next window of ports
    sent = [dst for dst, d in on.datagrams_to_send() if d[0] == KIND_LAN_DISCOVERY]
    assert sorted({port for _, port in sent}) == [33445, *range(33456, 33466)]


def test_bootstrap_is_retried_until_connected() -> None:
    a, b = make_core("retry-a", fake_friends=0), make_core("retry-b", fake_friends=0)
    b_addr = ("11.0.0.2", 33445)
    a.bootstrap(b.public_key, b_addr, 0.0)
    assert len(a.datagrams_to_send()) == 1  # lost: b is not up yet
    requests = 0
    now = 0.0
    while now < 12.0:
        a.handle_timer(now)
        requests += sum(1 for dst, d in a.datagrams_to_send() if dst == b_addr)
        now += 1.0
    assert requests == 2  # every 5 s
    # b comes up; the next retry is answered, b pings a back, and both connect.
    a_addr = ("11.0.0.1", 33445)
    now = 15.0
    while now < 20.0:
        for core in (a, b):
            core.handle_timer(now)
        for _ in range(4):
            for dst, data in a.datagrams_to_send():
                if dst == b_addr:
                    b.receive(data, a_addr, now)
            for dst, data in b.datagrams_to_send():
                if dst == a_addr:
                    a.receive(data, b_addr, now)
        now += 0.5
    assert a.is_connected(now)
    assert b.close.get(a.public_key) is not None
    # Connected: no more bootstrap retries (only the regular list maintenance).
    sent_before = a.stats.nodes_requests_sent
    a.handle_timer(25.0)
    a.datagrams_to_send()
    assert a.stats.nodes_requests_sent - sent_before <= 1


def test_bad_and_kill_timeouts() -> None:
    a = make_core("timeouts", fake_friends=0)
    pk = KeyPair.generate(SeededRng("silent")).public_key
    addr = IPPort.parse("11.0.0.9", 9)
    a.close.add_or_update(pk, addr, 0.0)
    assert [n.public_key for n in a.get_close_nodes(pk, now=1.0)] == [pk]
    pinged = []

    def run(start: int, end: int) -> None:
        for t in range(start, end):
            a.handle_timer(float(t))
            if any(dst == addr.to_addr() for dst, _ in a.datagrams_to_send()):
                pinged.append(t)

    run(0, int(BAD_NODE_TIMEOUT_S))
    assert a.is_connected(BAD_NODE_TIMEOUT_S - 1)
    # Re-queried every 60 s while alive (plus the random lookups of the first seconds).
    assert {0, 60, 120} <= set(pinged)
    assert a.get_close_nodes(pk, now=BAD_NODE_TIMEOUT_S) == []  # bad: not handed out
    assert not a.is_connected(BAD_NODE_TIMEOUT_S)
    assert a.close.get(pk) is not None  # but still stored
    run(int(BAD_NODE_TIMEOUT_S), int(KILL_NODE_TIMEOUT_S))
    assert max(pinged) == 180  # bad but not yet dead (182 s): still pinged every 60 s
    # At the kill timeout every node is dead, so 0.2.18 marks them "bad but pingable" again
    # (timestamp = now - 122) instead of abandoning them: the next ping is at 240.
    run(int(KILL_NODE_TIMEOUT_S), 241)
    entry = a.close.get(pk)
    assert entry is not None
    assert entry.assoc4.timestamp == KILL_NODE_TIMEOUT_S - BAD_NODE_TIMEOUT_S
    assert max(pinged) == 240


def test_friend_client_list_keeps_the_closest() -> None:
    rng = SeededRng("friend-list")
    base = rng(32)
    flist = FriendClientList(base)
    keys = [rng(32) for _ in range(100)]
    for i, key in enumerate(keys):
        flist.add_or_update(key, IPPort.parse("11.3.0.1", 1 + i), 1.0)
    best = sorted(keys, key=lambda k: key_int(k) ^ key_int(base))[:MAX_FRIEND_CLIENTS]
    assert sorted(e.public_key for e in flist) == sorted(best)
    # A bad entry is replaced by anyone.
    far = max(keys, key=lambda k: key_int(k) ^ key_int(base))
    assert not flist.can_add(far, 2.0)
    assert flist.can_add(far, 1.0 + BAD_NODE_TIMEOUT_S)
