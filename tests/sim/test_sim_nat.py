"""SimNat: RFC 4787 mapping and filtering per kind, hole punching, timeouts, hairpin."""

from __future__ import annotations

import itertools
from functools import partial

import pytest

from tunnel.testing.sim import (
    FilteringBehaviour,
    LinkParams,
    MappingBehaviour,
    NatKind,
    PortAllocation,
    SimHost,
    SimNat,
    SimNetwork,
    SimSocket,
)
from tunnel.wire.ip_port import Addr

NAT_IP = "11.0.0.100"
S1 = "11.0.0.1"
S2 = "11.0.0.2"


def _world(
    kind: NatKind, **nat_kwargs: object
) -> tuple[SimNetwork, SimNat, SimSocket, SimSocket, SimSocket, SimSocket]:
    """A NATed host socket ``h`` and public sockets S1:1000, S1:1001, S2:1000."""
    net = SimNetwork(1)
    nat = SimNat(NAT_IP, kind, **nat_kwargs)  # type: ignore[arg-type]
    h = net.add_host("192.168.0.2", nat=nat).bind(5000)
    s1 = net.add_host(S1)
    s2 = net.add_host(S2)
    return net, nat, h, s1.bind(1000), s1.bind(1001), s2.bind(1000)


def _sources(sock: SimSocket) -> list[Addr]:
    out = [addr for _, addr in sock.inbox]
    sock.inbox.clear()
    return out


# which outside endpoints may answer after the inside host sent to S1:1000
FILTER_TABLE = {
    # kind:                   (S1:1000, S1:1001, S2:1000)
    NatKind.FULL_CONE: (True, True, True),
    NatKind.ADDRESS_RESTRICTED: (True, True, False),
    NatKind.PORT_RESTRICTED: (True, False, False),
    NatKind.SYMMETRIC: (True, False, False),
}


@pytest.mark.parametrize("kind", list(NatKind))
def test_filtering_table(kind: NatKind) -> None:
    net, _nat, h, s1a, s1b, s2 = _world(kind)
    # before any outbound packet nothing gets in, whatever the port
    for sock in (s1a, s1b, s2):
        for port in (5000, 20000):
            sock.sendto(b"unsolicited", (NAT_IP, port))
    net.run_for(1)
    assert h.inbox == []
    assert net.drops == {"nat_filtered": 6}

    h.sendto(b"out", (S1, 1000))
    net.run_for(1)
    [public] = _sources(s1a)
    assert public[0] == NAT_IP
    assert public == (NAT_IP, 20000)  # sequential allocation from its start port
    for sock, expected in zip((s1a, s1b, s2), FILTER_TABLE[kind], strict=True):
        sock.sendto(b"in", public)
        net.run_for(1)
        got = _sources(h)
        assert got == ([sock.addr] if expected else []), (kind, sock.addr)


@pytest.mark.parametrize("kind", list(NatKind))
def test_mapping_per_destination(kind: NatKind) -> None:
    net, nat, h, s1a, s1b, s2 = _world(kind)
    h.sendto(b"a", (S1, 1000))
    h.sendto(b"b", (S1, 1001))
    h.sendto(b"c", (S2, 1000))
    h.sendto(b"a again", (S1, 1000))
    net.run_for(1)
    seen = _sources(s1a) + _sources(s1b) + _sources(s2)
    ports = [port for _, port in seen]
    assert all(ip == NAT_IP for ip, _ in seen)
    if kind is NatKind.SYMMETRIC:
        # a new public port for each destination endpoint, the same one on reuse
        assert ports == [20000, 20000, 20001, 20002]
        assert [m.destination for m in nat.mappings()] == [(S1, 1000), (S1, 1001), (S2, 1000)]
    else:
        assert ports == [20000] * 4
        assert [m.destination for m in nat.mappings()] == [None]
    assert nat.stats.mappings_created == len(set(ports))


def test_address_dependent_mapping_override() -> None:
    net, nat, h, s1a, s1b, s2 = _world(
        NatKind.PORT_RESTRICTED, mapping=MappingBehaviour.ADDRESS_DEPENDENT
    )
    assert nat.filtering_behaviour is FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT
    for dst in ((S1, 1000), (S1, 1001), (S2, 1000)):
        h.sendto(b"x", dst)
    net.run_for(1)
    ports = [p for _, p in _sources(s1a) + _sources(s1b) + _sources(s2)]
    assert ports == [20000, 20000, 20001]


@pytest.mark.parametrize(
    ("allocation", "expected"),
    [
        (PortAllocation.SEQUENTIAL, [20000, 20001, 20002]),
        (PortAllocation.PRESERVE, [5000, 20000, 20001]),
    ],
)
def test_port_allocation(allocation: PortAllocation, expected: list[int]) -> None:
    net, _nat, h, s1a, s1b, s2 = _world(NatKind.SYMMETRIC, port_allocation=allocation)
    for dst in ((S1, 1000), (S1, 1001), (S2, 1000)):
        h.sendto(b"x", dst)
    net.run_for(1)
    assert [p for _, p in _sources(s1a) + _sources(s1b) + _sources(s2)] == expected


def test_random_port_allocation_is_seeded() -> None:
    def ports(seed: int) -> list[int]:
        net = SimNetwork(seed)
        nat = SimNat(NAT_IP, NatKind.SYMMETRIC, port_allocation=PortAllocation.RANDOM)
        h = net.add_host(None, nat=nat).bind(5000)
        srv = net.add_host(S1)
        socks = [srv.bind(p) for p in range(1000, 1010)]
        for s in socks:
            h.sendto(b"x", s.addr)
        net.run_for(1)
        return [s.inbox[0][1][1] for s in socks]

    first = ports(5)
    assert first == ports(5)
    assert first != ports(6)
    assert len(set(first)) == 10
    assert all(1024 <= p <= 65535 for p in first)
    assert first != sorted(first)


def test_mapping_timeout_and_refresh() -> None:
    net, nat, h, s1a, _, _ = _world(NatKind.PORT_RESTRICTED, mapping_timeout_s=30.0)
    h.sendto(b"out", (S1, 1000))
    net.run_for(1)
    [public] = _sources(s1a)
    # inbound does not refresh (RFC 4787 REQ-6 only requires outbound refresh)
    net.call_at(1000.0 + 20, lambda: s1a.sendto(b"in time", public))
    net.call_at(1000.0 + 31, lambda: s1a.sendto(b"too late", public))
    net.run_until(1000.0 + 40)
    assert [d for d, _ in h.inbox] == [b"in time"]
    assert nat.stats.mappings_expired == 1
    assert nat.mappings(net.now) == []
    # a new outbound packet creates a new mapping on a new port
    h.sendto(b"again", (S1, 1000))
    net.run_for(1)
    [public2] = _sources(s1a)
    assert public2 == (NAT_IP, public[1] + 1)

    # outbound keepalives every 20 s keep the same mapping for minutes
    for i in range(1, 10):
        net.call_later(20.0 * i, lambda: h.sendto(b"keepalive", (S1, 1000)))
    net.run_for(200)
    assert set(_sources(s1a)) == {public2}
    s1a.sendto(b"still open", public2)
    net.run_for(1)
    assert [d for d, _ in h.inbox][-1] == b"still open"


def test_inbound_refresh_option() -> None:
    net, _nat, h, s1a, _, _ = _world(
        NatKind.FULL_CONE, mapping_timeout_s=30.0, inbound_refresh=True
    )
    h.sendto(b"out", (S1, 1000))
    net.run_for(1)
    [public] = _sources(s1a)
    for i in range(1, 6):
        net.call_at(1000.0 + 25 * i, lambda: s1a.sendto(b"in", public))
    net.run_for(200)
    assert len(h.inbox) == 5


def test_flush_and_change_public_ip() -> None:
    net, nat, h, s1a, _, _ = _world(NatKind.FULL_CONE)
    h.sendto(b"out", (S1, 1000))
    net.run_for(1)
    [public] = _sources(s1a)
    nat.flush()
    s1a.sendto(b"after restart", public)
    net.run_for(1)
    assert h.inbox == []
    assert net.drops == {"nat_filtered": 1}

    nat.change_public_ip("11.0.0.101")
    h.sendto(b"renumbered", (S1, 1000))
    net.run_for(1)
    [(ip, _)] = _sources(s1a)
    assert ip == "11.0.0.101"
    s1a.sendto(b"old address", public)
    net.run_for(1)
    assert net.drops == {"nat_filtered": 1, "no_route": 1}
    with pytest.raises(ValueError, match="in use"):
        nat.change_public_ip(S1)


def test_lan_and_hairpinning() -> None:
    for hairpin in (False, True):
        net = SimNetwork(1)
        nat = SimNat(NAT_IP, NatKind.FULL_CONE, hairpinning=hairpin)
        a = net.add_host(None, nat=nat).bind(1)
        b = net.add_host(None, nat=nat).bind(2)
        server = net.add_host(S1).bind(1000)
        a.sendto(b"lan", b.addr)  # private to private: stays on the LAN
        b.sendto(b"register", server.addr)
        net.run_for(1)
        assert _sources(b) == [a.addr]
        [b_public] = _sources(server)
        a.sendto(b"hairpin", b_public)
        net.run_for(1)
        if hairpin:
            [(ip, _)] = _sources(b)
            assert ip == NAT_IP
            assert nat.stats.hairpinned == 1
        else:
            assert b.inbox == []
            assert net.drops == {"hairpin": 1}


def test_nested_nat() -> None:
    net = SimNetwork(1)
    cgn = SimNat("11.0.0.250", NatKind.PORT_RESTRICTED, private_prefix="100.64.0.0/10")
    home = SimNat("100.64.0.2", NatKind.FULL_CONE, outer=cgn)
    h = net.add_host(None, nat=home).bind(7)
    server = net.add_host(S1).bind(1000)
    h.sendto(b"deep", server.addr)
    net.run_for(1)
    [public] = _sources(server)
    assert public[0] == "11.0.0.250"
    server.sendto(b"reply", public)
    net.run_for(1)
    assert _sources(h) == [server.addr]
    # the CGN filters others even though the home router is a full cone
    other = net.add_host(S2).bind(1000)
    other.sendto(b"x", public)
    net.run_for(1)
    assert h.inbox == []


# -- hole punching --------------------------------------------------------------------------


def _punch(
    kind_a: NatKind,
    kind_b: NatKind,
    seed: int = 3,
    allocation: PortAllocation = PortAllocation.RANDOM,
    guesses: int = 0,
) -> tuple[bool, bool]:
    """Rendezvous through a public server, then both sides punch at the same instant.

    Each side sends 3 punches 0.2 s apart to the other's address as the server saw it and
    answers every punch it receives with an ack to its source. With ``guesses`` it first
    tries the ``guesses`` ports above the observed one, in order (toxcore's DHT guesses ports
    around the reported ones, tox-protocol.md 4.9). Returns whether A and B heard from the other.
    """
    net = SimNetwork(seed, default_link=LinkParams(latency_s=0.03, jitter_s=0.01))
    nat_a = SimNat("11.0.1.1", kind_a, port_allocation=allocation)
    nat_b = SimNat("11.0.2.1", kind_b, port_allocation=allocation)
    observed: dict[str, Addr] = {}
    rendezvous = net.add_host(S1).bind(3478)
    heard: dict[str, list[Addr]] = {"a": [], "b": []}

    def peer(name: str, nat: SimNat) -> tuple[SimHost, SimSocket]:
        host = net.add_host(None, nat=nat)

        def on_packet(data: bytes, addr: Addr) -> None:
            if addr == rendezvous.addr:
                return
            heard[name].append(addr)
            if data == b"punch":
                sock.sendto(b"ack", addr)

        sock = host.bind(4000, handler=on_packet)
        return host, sock

    _, sa = peer("a", nat_a)
    _, sb = peer("b", nat_b)
    sa.sendto(b"hello a", rendezvous.addr)
    sb.sendto(b"hello b", rendezvous.addr)
    net.run_for(1)
    for data, addr in rendezvous.inbox:
        observed[data.decode()[-1]] = addr
    t0 = net.now + 1.0
    for g in range(1, guesses + 1):
        ip_a, port_a = observed["a"]
        ip_b, port_b = observed["b"]
        net.call_at(t0, partial(sa.sendto, b"punch", (ip_b, port_b + g)))
        net.call_at(t0, partial(sb.sendto, b"punch", (ip_a, port_a + g)))
    for i in range(3):
        net.call_at(t0 + 0.2 * i, lambda: sa.sendto(b"punch", observed["b"]))
        net.call_at(t0 + 0.2 * i, lambda: sb.sendto(b"punch", observed["a"]))
    net.run_for(5)
    return bool(heard["a"]), bool(heard["b"])


def _should_punch(a: NatKind, b: NatKind) -> bool:
    hard = {NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC}
    return not (NatKind.SYMMETRIC in (a, b) and a in hard and b in hard)


@pytest.mark.parametrize(
    ("kind_a", "kind_b"), list(itertools.combinations_with_replacement(list(NatKind), 2))
)
def test_hole_punching(kind_a: NatKind, kind_b: NatKind) -> None:
    expected = _should_punch(kind_a, kind_b)
    assert _punch(kind_a, kind_b) == (expected, expected)
    assert _punch(kind_b, kind_a) == (expected, expected)


def test_hole_punching_expectations_cover_the_classic_cases() -> None:
    eim = [NatKind.FULL_CONE, NatKind.ADDRESS_RESTRICTED, NatKind.PORT_RESTRICTED]
    assert all(_should_punch(a, b) for a in eim for b in eim)
    assert not _should_punch(NatKind.SYMMETRIC, NatKind.SYMMETRIC)
    assert not _should_punch(NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC)
    assert _should_punch(NatKind.FULL_CONE, NatKind.SYMMETRIC)


def test_nat_validation() -> None:
    with pytest.raises(ValueError, match="timeout"):
        SimNat(NAT_IP, mapping_timeout_s=0)
    net = SimNetwork(1)
    nat = SimNat(NAT_IP)
    net.add_host(None, nat=nat)
    with pytest.raises(ValueError, match="another network"):
        SimNetwork(2).add_host(None, nat=nat)
    with pytest.raises(ValueError, match="in use"):
        net.add_host(NAT_IP)
    with pytest.raises(ValueError, match="not NATed"):
        net.add_host("2001:db8::1", nat=nat)


@pytest.mark.parametrize(
    ("allocation", "guesses", "expected"),
    [
        (PortAllocation.SEQUENTIAL, 0, False),
        (PortAllocation.SEQUENTIAL, 3, True),
        (PortAllocation.RANDOM, 3, False),
    ],
)
def test_symmetric_port_prediction(
    allocation: PortAllocation, guesses: int, expected: bool
) -> None:
    """Two sequential symmetric NATs can be punched by guessing the next ports; random cannot."""
    result = _punch(NatKind.SYMMETRIC, NatKind.SYMMETRIC, allocation=allocation, guesses=guesses)
    assert result == (expected, expected)


def test_add_natted_host() -> None:
    net = SimNetwork(1)
    server = net.add_host().bind(1)
    hosts = [net.add_natted_host(kind) for kind in NatKind]
    assert [h.nat.kind for h in hosts if h.nat is not None] == list(NatKind)
    assert len({h.public_ip for h in hosts}) == len(hosts)
    assert all(h.ip == "192.168.0.2" for h in hosts)
    for h in hosts:
        h.bind(7).sendto(b"x", server.addr)
    net.run_for(1)
    assert sorted(ip for _, (ip, _) in server.inbox) == sorted(h.public_ip for h in hosts)
