"""DhtCore pair and cluster tests with explicit ``now`` (tox-protocol.md 4.3-4.9)."""

from __future__ import annotations

from tunnel.crypto import KeyPair
from tunnel.dht.close_list import BAD_NODE_TIMEOUT_S, LCLIENT_NODES, CloseList
from tunnel.dht.core import DhtCore
from tunnel.dht.distance import bucket_index
from tunnel.dht.events import DhtRequestReceived, FriendIpFound
from tunnel.dht.ping_ids import PingArray
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import SimNetwork
from tunnel.wire.dht import KIND_NODES_REQUEST, KIND_PING_REQUEST
from tunnel.wire.ip_port import Addr, IPPort

A_ADDR: Addr = ("11.0.0.1", 33445)
B_ADDR: Addr = ("11.0.0.2", 33445)


def make_core(label: str, **kwargs: object) -> DhtCore:
    rng = SeededRng(f"dht-core-{label}")
    return DhtCore(KeyPair.generate(rng), rng, **kwargs)  # type: ignore[arg-type]


def deliver(
    cores: dict[Addr, DhtCore], now: float, rounds: int = 20
) -> list[tuple[Addr, Addr, bytes]]:
    """Move datagrams between cores until quiet; returns what was sent (src, dst, data)."""
    log: list[tuple[Addr, Addr, bytes]] = []
    for _ in range(rounds):
        moved = False
        for src, core in cores.items():
            for dst, data in core.datagrams_to_send():
                log.append((src, dst, data))
                if dst in cores:
                    cores[dst].receive(data, src, now)
                    moved = True
        if not moved:
            break
    return log


def test_ping_array_ids_are_single_use_and_expire() -> None:
    array: PingArray[str] = PingArray(SeededRng(1), size=4, timeout_s=5.0)
    first = array.add("a", 0.0)
    assert first % 4 == 0
    assert first != 0
    assert array.check(first + 4, 1.0) is None  # wrong id in the same slot
    assert array.check(first, 1.0) == "a"
    assert array.check(first, 1.0) is None  # replay
    second = array.add("b", 10.0)
    assert array.check(second, 15.0) is None  # expired exactly at 5 s
    ids = [array.add(str(i), 20.0) for i in range(6)]  # wraps, overwriting the oldest slots
    assert array.check(ids[0], 20.0) is None
    assert array.check(ids[5], 20.0) == "5"


def test_pair_bootstrap_puts_each_in_the_others_close_list() -> None:
    a, b = make_core("a"), make_core("b")
    cores = {A_ADDR: a, B_ADDR: b}
    a.bootstrap(b.public_key, B_ADDR, 0.0)
    now = 0.0
    while now < 10.0:
        for core in cores.values():
            core.handle_timer(now)
        deliver(cores, now)
        now += 0.5
    assert a.close.get(b.public_key) is not None
    assert b.close.get(a.public_key) is not None
    assert a.is_connected(now)
    assert b.is_connected(now)
    assert a.stats.dropped == 0
    assert b.stats.dropped == 0
    assert b.stats.nodes_requests_without_answer >= 1  # b knew nobody: no 0-node response


def _ping_from(sender: DhtCore, receiver: DhtCore, addr: Addr, now: float) -> bytes:
    sender._send_ping_request(IPPort.from_addr(addr), receiver.public_key, now)
    ((dst, data),) = sender.datagrams_to_send()
    assert dst == addr
    assert data[0] == KIND_PING_REQUEST
    assert len(data) == 82
    return data


def test_ping_response_forged_replayed_or_misaddressed_is_dropped() -> None:
    a, b = make_core("a"), make_core("b")
    request = _ping_from(a, b, B_ADDR, 1.0)
    b.receive(request, A_ADDR, 1.0)
    assert b.stats.pings_answered == 1
    ((dst, response),) = b.datagrams_to_send()
    assert dst == A_ADDR
    # From the wrong address: dropped, and the id is consumed only by the right one.
    a.receive(response, ("11.0.0.9", 33445), 1.1)
    assert a.stats.dropped_unsolicited == 1
    request = _ping_from(a, b, B_ADDR, 2.0)
    b.receive(request, A_ADDR, 2.0)
    ((_, response),) = b.datagrams_to_send()
    a.receive(response, B_ADDR, 2.1)
    assert a.stats.responses_accepted == 1
    assert a.close.get(b.public_key) is not None
    a.receive(response, B_ADDR, 2.2)  # replay
    assert a.stats.dropped_unsolicited == 2
    # Late response (ids live 5 s).
    request = _ping_from(a, b, B_ADDR, 3.0)
    b.receive(request, A_ADDR, 3.0)
    ((_, response),) = b.datagrams_to_send()
    a.receive(response, B_ADDR, 8.0)
    assert a.stats.dropped_unsolicited == 3
    # A request relabelled as a response, a corrupted box, a packet claiming our own key.
    b.receive(b"\x01" + request[1:], A_ADDR, 9.0)
    assert b.stats.dropped_malformed == 1  # inner kind byte still says "request"
    bad = bytearray(response)
    bad[-1] ^= 1
    a.receive(bytes(bad), B_ADDR, 9.0)
    a.receive(b"\x00" + a.public_key + request[33:], B_ADDR, 9.0)
    a.receive(b"", B_ADDR, 9.0)
    a.receive(b"\x77junk", B_ADDR, 9.0)
    s = a.stats
    assert s.dropped_decrypt == 1
    assert s.dropped_from_self == 1
    assert s.dropped_unknown_kind == 2


def test_unsolicited_nodes_response_does_not_insert_nodes() -> None:
    a, b, c = make_core("a"), make_core("b"), make_core("c")
    # b learns c so that it has something to return.
    b.close.add_or_update(c.public_key, IPPort.parse("11.0.0.3", 1), 0.0)
    a._send_nodes_request(IPPort.from_addr(B_ADDR), b.public_key, a.public_key, 0.0)
    ((_, request),) = a.datagrams_to_send()
    assert request[0] == KIND_NODES_REQUEST
    assert len(request) == 113
    b.receive(request, A_ADDR, 0.0)
    ((_, response),) = b.datagrams_to_send()
    a.receive(response, B_ADDR, 0.5)
    assert a.close.get(b.public_key) is not None
    assert a.stats.responses_accepted == 1
    a.receive(response, B_ADDR, 0.6)  # replayed
    assert a.stats.dropped_unsolicited == 1
    # c was returned, so it is queued for a lookup, not inserted until it answers.
    assert a.close.get(c.public_key) is None
    a.handle_timer(1.0)
    sent = a.datagrams_to_send()
    assert (("11.0.0.3", 1)) in [dst for dst, _ in sent]


def test_close_list_matches_bucket_oracle() -> None:
    rng = SeededRng("oracle")
    base = rng(32)
    close = CloseList(base)
    keys = [rng(32) for _ in range(3000)]
    # Force many keys into deep buckets too.
    keys += [base[:2] + rng(30) for _ in range(200)]
    for i, key in enumerate(keys):
        close.add_or_update(key, IPPort.parse("11.1.0.1", 1 + i), 0.0)
    expected: dict[int, list[bytes]] = {}
    for key in keys:
        bucket = expected.setdefault(bucket_index(base, key), [])
        if len(bucket) < LCLIENT_NODES:
            bucket.append(key)
    for index in range(128):
        assert [e.public_key for e in close.bucket(index)] == expected.get(index, [])
    # Once a whole bucket is bad, newcomers replace its entries in order.
    later = BAD_NODE_TIMEOUT_S + 1
    key = next(k for k in (rng(32) for _ in range(100)) if bucket_index(base, k) == 0)
    assert close.can_add(key, later)
    assert not close.can_add(key, 1.0)
    close.add_or_update(key, IPPort.parse("11.2.0.1", 1), later)
    assert close.bucket(0)[0].public_key == key


def test_close_list_same_address_new_key_wipes_that_association() -> None:
    close = CloseList(bytes(32))
    old, new = b"\x80" + bytes(31), b"\x81" + bytes(31)
    addr = IPPort.parse("11.0.0.5", 5)
    close.add_or_update(old, addr, 0.0)
    close.add_or_update(new, addr, 1.0)
    assert close.get(old) is None
    entry = close.get(new)
    assert entry is not None
    assert entry.assoc4.ip_port is None


def test_lan_address_does_not_overwrite_wan() -> None:
    close = CloseList(bytes(32))
    pk = b"\x80" + bytes(31)
    close.add_or_update(pk, IPPort.parse("11.0.0.5", 5), 0.0)
    close.add_or_update(pk, IPPort.parse("192.168.1.5", 5), 1.0)
    entry = close.get(pk)
    assert entry is not None
    assert str(entry.assoc4.ip_port) == "11.0.0.5:5"


def _cluster(n: int, seed: int, **kwargs: object) -> tuple[SimNetwork, list[DhtCore]]:
    net = SimNetwork(seed, trace=False)
    cores: list[DhtCore] = []
    first_addr: Addr | None = None
    for i in range(n):
        rng = net.fork_rng(f"dht{i}")
        core = DhtCore(KeyPair.generate(rng), rng, now=net.now, **kwargs)  # type: ignore[arg-type]
        host = net.add_host()
        endpoint = net.attach(core, host, 33445)
        if first_addr is None:
            first_addr = endpoint.addr
        else:
            core.bootstrap(cores[0].public_key, first_addr, net.now)
        cores.append(core)
    return net, cores


def test_cluster_friend_found_and_dht_request_routed() -> None:
    net, cores = _cluster(20, seed=7)
    net.run_for(60.0)
    assert all(c.is_connected(net.now) for c in cores)
    a, b = cores[3], cores[11]
    a.add_friend(b.public_key, net.now)
    ok = net.run_until(lambda: a.friend_ip_port(b.public_key) is not None, timeout=30.0)
    assert ok
    events = []
    while (event := a.next_event()) is not None:
        events.append(event)
    assert any(isinstance(e, FriendIpFound) and e.public_key == b.public_key for e in events)
    # A DHT request to b, sent to a node that has b in its close list, is forwarded unchanged.
    relay = next(c for c in cores if c is not a and c is not b and c.close.get(b.public_key))
    packet = a.send_dht_request(b.public_key, 0x9C, b"hello dht-pk")
    relay_ep = next(ep for ep in net.endpoints if ep.core is relay)
    a_ep = next(ep for ep in net.endpoints if ep.core is a)
    a_ep.socket.sendto(packet, relay_ep.addr)
    net.run_for(1.0)
    assert relay.stats.dht_requests_forwarded == 1
    received = []
    while (event := b.next_event()) is not None:
        received.append(event)
    assert DhtRequestReceived(a.public_key, 0x9C, b"hello dht-pk", received[-1].source) in received
    assert all(c.stats.dropped_malformed == 0 and c.stats.dropped_decrypt == 0 for c in cores)


def test_low_order_public_keys_are_dropped_not_raised() -> None:
    """Found by the fuzz test: libsodium refuses an all-zero (low-order) key."""
    a, b = make_core("lo-a"), make_core("lo-b")
    a.receive(b"\x00" + bytes(81), B_ADDR, 0.0)  # ping request "from" the zero key
    assert a.stats.dropped_decrypt == 1
    # A genuine nodes response that lists a node with the zero key: a must not query it.
    b.close.add_or_update(bytes(32), IPPort.parse("11.0.0.3", 1), 0.0)
    a._send_nodes_request(IPPort.from_addr(B_ADDR), b.public_key, bytes(32), 0.0)
    ((_, request),) = a.datagrams_to_send()
    b.receive(request, A_ADDR, 0.0)
    ((_, response),) = b.datagrams_to_send()
    a.receive(response, B_ADDR, 0.1)
    a.handle_timer(1.0)
    assert all(dst != ("11.0.0.3", 1) for dst, _ in a.datagrams_to_send())
    assert a.stats.unusable_keys >= 1


def test_send_to_friend_with_unusable_key_is_counted() -> None:
    a = make_core("stf")
    assert a.send_to_friend(bytes(32), 0x9C, b"x", 0.0) == 0
    assert a.stats.unusable_keys == 1
