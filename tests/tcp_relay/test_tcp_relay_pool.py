"""RelayPool (client-side pool with backoff) against in-memory RelayServer cores."""

from __future__ import annotations

from tunnel.crypto import KeyPair
from tunnel.tcp_relay.connections import (
    OobData,
    PeerData,
    PeerOffline,
    PeerOnline,
    PoolEvent,
    RelayConnected,
    RelayDisconnected,
    RelayPong,
    RelayPool,
)
from tunnel.tcp_relay.server import OnionRequestReceived, RelayServer
from tunnel.testing.rng import SeededRng
from tunnel.wire.ip_port import IPPort


class Net:
    """Relays (servers) and pools, wired by a fake driver; ``down`` relays refuse connects."""

    def __init__(self, n_relays: int = 1) -> None:
        self.rng = SeededRng("pool")
        self.now = 0.0
        self.servers: dict[bytes, RelayServer] = {}
        for i in range(n_relays):
            keys = KeyPair.generate(self.rng.fork(f"relay{i}"))
            self.servers[keys.public_key] = RelayServer(
                keys, self.rng.fork(f"srv{i}"), onion_enabled=True
            )
        self.addr = {pk: IPPort.parse("127.0.0.1", 43900 + i) for i, pk in enumerate(self.servers)}
        self.pools: list[RelayPool] = []
        self.links: dict[tuple[int, bytes], int] = {}  # (pool index, relay pk) -> server handle
        self.down: set[bytes] = set()

    def pool(self, label: str) -> RelayPool:
        p = RelayPool(KeyPair.generate(self.rng.fork(label)), self.rng.fork("p" + label))
        for pk, addr in self.addr.items():
            p.add_relay(addr, pk, self.now)
        self.pools.append(p)
        return p

    def kill_relay(self, pk: bytes) -> None:
        """The relay's process dies: all its streams drop."""
        self.down.add(pk)
        for (i, rpk), _h in list(self.links.items()):
            if rpk == pk:
                del self.links[(i, rpk)]
                self.pools[i].connection_lost(rpk, self.now)

    def step(self) -> None:
        for _ in range(100):
            moved = False
            for i, p in enumerate(self.pools):
                for info in p.connect_requests():
                    moved = True
                    if info.public_key in self.down:
                        p.connection_failed(info.public_key, self.now, "refused")
                        continue
                    h = self.servers[info.public_key].accept(self.now)
                    self.links[(i, info.public_key)] = h
                    p.connection_made(info.public_key, self.now)
                for rpk in p.pop_to_close():
                    h2 = self.links.pop((i, rpk), None)
                    if h2 is not None:
                        self.servers[rpk].connection_lost(h2)
                        p.connection_lost(rpk, self.now)
                for (j, rpk), h in list(self.links.items()):
                    if j != i:
                        continue
                    srv = self.servers[rpk]
                    out = p.data_to_send(rpk)
                    if out:
                        srv.receive_data(h, out, self.now)
                        moved = True
                    if h in srv.pop_closed():
                        del self.links[(j, rpk)]
                        p.connection_lost(rpk, self.now)
                        continue
                    back = srv.data_to_send(h)
                    if back:
                        p.receive_data(rpk, back, self.now)
                        moved = True
            if not moved:
                return
        raise AssertionError("did not settle")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        self.step()
        while True:
            ds = [d for p in self.pools if (d := p.next_deadline()) is not None]
            ds += [d for s in self.servers.values() if (d := s.next_deadline()) is not None]
            nxt = min(ds, default=None)
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            for p in self.pools:
                p.handle_timer(self.now)
            for s in self.servers.values():
                s.handle_timer(self.now)
            self.step()
        self.now = end


def drain(p: RelayPool) -> list[PoolEvent]:
    """Pending events, without the periodic RelayPong."""
    out = []
    while (e := p.next_event()) is not None:
        if not isinstance(e, RelayPong):
            out.append(e)
    return out


def test_two_pools_meet_on_a_relay_and_exchange_data() -> None:
    net = Net(1)
    a, b = net.pool("a"), net.pool("b")
    net.advance(0.5)
    (rpk,) = net.servers
    assert [type(e) for e in drain(a)] == [RelayConnected]
    drain(b)
    # OOB works before any routing (cookie request / handshake path)
    assert a.send_to_peer(b.self_keys.public_key, b"\x18cookie-request")
    net.step()
    assert drain(b) == [OobData(a.self_keys.public_key, rpk, b"\x18cookie-request")]
    a.add_peer(b.self_keys.public_key)
    b.add_peer(a.self_keys.public_key)
    net.step()
    assert drain(a) == [PeerOnline(b.self_keys.public_key, rpk)]
    assert drain(b) == [PeerOnline(a.self_keys.public_key, rpk)]
    assert a.peer_online(b.self_keys.public_key)
    big = b"\x1b" + bytes(1399)  # > 1024: only possible on the routed connection
    assert a.send_to_peer(b.self_keys.public_key, big)
    net.step()
    assert drain(b) == [PeerData(a.self_keys.public_key, rpk, big)]
    assert next(iter(net.servers.values())).statistics().routed_bytes == 1400


def test_relay_loss_reports_offline_and_reconnects_with_backoff() -> None:
    net = Net(1)
    (rpk,) = net.servers
    a, b = net.pool("a"), net.pool("b")
    a.add_peer(b.self_keys.public_key)
    b.add_peer(a.self_keys.public_key)
    net.advance(0.5)
    drain(a)
    drain(b)
    net.kill_relay(rpk)
    evs = drain(a)
    assert PeerOffline(b.self_keys.public_key, rpk) in evs
    assert any(isinstance(e, RelayDisconnected) for e in evs)
    assert not a.peer_online(b.self_keys.public_key)
    # while it is down, connects fail and the retry interval grows (with jitter)
    retries = []
    for _ in range(5):
        before = net.now
        deadline = a.next_deadline()
        assert deadline is not None
        retries.append(deadline - before)
        net.advance(deadline - before + 0.001)
    assert retries[-1] > retries[1] * 2
    assert max(retries) <= 60.0
    # the relay comes back: the next retry connects and routing comes back by itself
    net.down.clear()
    net.advance(61.0)
    assert a.peer_online(b.self_keys.public_key)
    assert PeerOnline(b.self_keys.public_key, rpk) in drain(a)
    status = a.relays()[0]
    assert status.confirmed
    assert status.failures == 0


def test_send_prefers_online_relay_and_falls_back_to_oob() -> None:
    net = Net(2)
    r1, r2 = list(net.servers)
    a, b = net.pool("a"), net.pool("b")
    net.advance(0.5)
    a.add_peer(b.self_keys.public_key)  # b does not add a: registered, never online
    net.step()
    drain(b)
    assert not a.peer_online(b.self_keys.public_key)
    assert a.send_to_peer(b.self_keys.public_key, b"\x1ahandshake")
    assert not a.send_to_peer(b.self_keys.public_key, bytes(1025))  # too big for OOB
    net.step()
    got = drain(b)
    # OOB on every relay where b is registered: both relays deliver a copy
    assert sorted(e.relay for e in got if isinstance(e, OobData)) == sorted([r1, r2])


def test_peer_has_room_follows_the_send_queue_of_the_peers_relay() -> None:
    net = Net(1)
    a, b = net.pool("a"), net.pool("b")
    b_pk = b.self_keys.public_key
    a.add_peer(b_pk)
    net.advance(0.5)
    big = b"\x1b" + bytes(1399)
    assert not a.peer_has_room(b_pk, len(big))  # registered, not online: nothing to route on
    assert not a.send_to_peer(b_pk, big)
    b.add_peer(a.self_keys.public_key)
    net.step()
    assert a.peer_online(b_pk)
    assert a.peer_has_room(b_pk, len(big))
    sent = 0
    while a.peer_has_room(b_pk, len(big)):
        assert a.send_to_peer(b_pk, big)  # room said yes: the send is taken
        sent += 1
    assert sent > 100  # the whole send queue (256 KiB) filled up
    assert not a.send_to_peer(b_pk, big)  # full, and too big for the OOB fallback
    assert a.peer_has_room(b_pk, 10)  # a smaller packet still fits
    assert not a.peer_has_room(KeyPair.generate(net.rng.fork("x")).public_key, 10)
    (rpk,) = net.servers
    assert len(a.data_to_send(rpk, 16 * 1024)) >= 16 * 1024  # the driver's writer takes some
    assert a.peer_has_room(b_pk, len(big))
    assert a.send_to_peer(b_pk, big)


def test_remove_peer_frees_slots_and_peer_sees_offline() -> None:
    net = Net(1)
    (rpk,) = net.servers
    a, b = net.pool("a"), net.pool("b")
    a.add_peer(b.self_keys.public_key)
    b.add_peer(a.self_keys.public_key)
    net.advance(0.5)
    drain(b)
    a.remove_peer(b.self_keys.public_key)
    net.step()
    assert drain(b) == [PeerOffline(a.self_keys.public_key, rpk)]


def test_onion_requests_rotate_over_connected_relays() -> None:
    net = Net(2)
    a = net.pool("a")
    net.advance(0.5)
    for _ in range(4):
        assert a.send_onion_request(bytes(24) + bytes(200))
    net.step()
    counts = []
    for srv in net.servers.values():
        n = 0
        while isinstance(srv.next_event(), OnionRequestReceived):
            n += 1
        counts.append(n)
    assert counts == [2, 2]


def test_ping_keeps_connections_alive_for_minutes() -> None:
    net = Net(1)
    a, b = net.pool("a"), net.pool("b")
    a.add_peer(b.self_keys.public_key)
    b.add_peer(a.self_keys.public_key)
    net.advance(300.0)
    assert a.peer_online(b.self_keys.public_key)
    assert not any(isinstance(e, RelayDisconnected) for e in drain(a))
    assert a.relays()[0].last_rtt_s is not None


def test_refused_route_is_asked_again_with_backoff_until_the_relay_admits_us() -> None:
    """A friends-only relay (issue 10) refuses a friend whose DHT key it has not learnt yet;
    the pool asks again (2, 4, 8 s...), so the route comes up once the relay knows the key."""
    net = Net(1)
    ((rpk, server),) = net.servers.items()
    a, b = net.pool("a"), net.pool("b")
    admitted = {b.self_keys.public_key}
    server.admit = admitted.__contains__
    a.add_peer(b.self_keys.public_key)
    b.add_peer(a.self_keys.public_key)
    net.advance(0.5)
    assert not a.peer_online(b.self_keys.public_key)
    refused_first = server.statistics().refused_not_admitted
    assert refused_first >= 2  # a's request (a unknown) and b's (target a unknown)
    # still unknown: the requests come again, further and further apart
    net.advance(2.0)
    refused_after_2s = server.statistics().refused_not_admitted
    assert refused_after_2s > refused_first
    net.advance(4.0)
    refused_after_6s = server.statistics().refused_not_admitted
    assert refused_after_6s > refused_after_2s
    net.advance(3.0)  # the next ask is 8 s after the last: none in these 3 s
    assert server.statistics().refused_not_admitted == refused_after_6s
    # the relay learns a's key: the next round of requests links the two
    admitted.add(a.self_keys.public_key)
    net.advance(20.0)
    assert a.peer_online(b.self_keys.public_key)
    assert b.peer_online(a.self_keys.public_key)
    assert PeerOnline(b.self_keys.public_key, rpk) in drain(a)
    # once linked, nothing is asked again
    refused = server.statistics().refused_not_admitted
    net.advance(60.0)
    assert server.statistics().refused_not_admitted == refused


def test_refused_route_of_a_removed_peer_is_not_asked_again() -> None:
    net = Net(1)
    ((_rpk, server),) = net.servers.items()
    a, b = net.pool("a"), net.pool("b")
    server.admit = {b.self_keys.public_key}.__contains__
    a.add_peer(b.self_keys.public_key)
    net.advance(0.5)
    refused = server.statistics().refused_not_admitted
    assert refused == 1
    a.remove_peer(b.self_keys.public_key)
    net.advance(60.0)
    assert server.statistics().refused_not_admitted == refused
