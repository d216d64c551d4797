"""Issue 11 in the simulator: :class:`DirectPathCore` for every pairing of NAT kinds, with the
expected outcome per pair stated here, and the time to a direct path bounded.

Each peer learns its public address from two reflectors on different public hosts (standing
in for the DHT nodes that see it), classifies its NAT, and the two exchange Endpoints over a
"relay" (a delayed in-order channel, like the TCP relay that already carries the friend
connection). Then both probe.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from tunnel.nat.probe import (
    KEEPALIVE_INTERVAL_S,
    PATH_DEAD_AFTER_S,
    DirectPathCore,
    DirectPathDown,
    DirectPathEvent,
    DirectPathMoved,
    DirectPathUp,
    classify_nat,
)
from tunnel.nat.wire import Candidate, CandidateSource, NatBehaviour
from tunnel.testing.nat import NatKind, PortAllocation, SimNat
from tunnel.testing.simhost import SimEndpoint
from tunnel.testing.simnet import LinkParams, SimNetwork
from tunnel.wire.ip_port import Addr, IPPort

RELAY_LATENCY_S = 0.08
DIRECT_WITHIN_S = 3.0
"""Direct path at most this long after the endpoints were first sent over the relay."""
PEER_PORT = 54100
REFLECTORS = (("11.9.0.1", 3478), ("11.9.0.2", 3478))


@dataclass(frozen=True)
class Side:
    label: str
    kind: NatKind
    allocation: PortAllocation = PortAllocation.SEQUENTIAL


FULL = Side("full-cone", NatKind.FULL_CONE)
ADDR = Side("address-restricted", NatKind.ADDRESS_RESTRICTED)
PORT = Side("port-restricted", NatKind.PORT_RESTRICTED)
SYM_SEQ = Side("symmetric-sequential", NatKind.SYMMETRIC)
SYM_RAND = Side("symmetric-random", NatKind.SYMMETRIC, PortAllocation.RANDOM)
SIDES = (FULL, ADDR, PORT, SYM_SEQ, SYM_RAND)


def expected(a: Side, b: Side) -> str:
    """The outcome we promise per pair: "direct", "predicted" (direct by port prediction)
    or "relay"."""
    hard = {PORT, SYM_SEQ, SYM_RAND}  # filter by port, or map per destination
    if SYM_RAND in (a, b) and (b if a is SYM_RAND else a) in hard:
        return "relay"  # random mappings cannot be predicted and the other side filters
    if SYM_SEQ in (a, b) and (b if a is SYM_SEQ else a) in {PORT, SYM_SEQ}:
        return "predicted"
    return "direct"


EXPECTED_TABLE = {
    (a.label, b.label): expected(a, b) for a, b in itertools.combinations_with_replacement(SIDES, 2)
}


@dataclass
class Peer:
    name: str
    core: DirectPathCore
    endpoint: SimEndpoint | None = None
    observed: list[Addr] = field(default_factory=list)
    events: list[tuple[float, DirectPathEvent]] = field(default_factory=list)
    other: Peer | None = None


class _Shim:
    """The DatagramCore attached to the peer's socket: reflector answers + probes."""

    def __init__(self, net: SimNetwork, peer: Peer) -> None:
        self.net = net
        self.peer = peer
        self._out: list[tuple[Addr, bytes]] = []

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        if data.startswith(b"R"):
            host, port = data[1:].decode().split(":")
            self.peer.observed.append((host, int(port)))
            return
        self.peer.core.receive(data, addr, now)
        self._after(now)

    def query(self) -> None:
        self._out += [(r, b"Q") for r in REFLECTORS]

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self._out = self._out, []
        return out + self.peer.core.datagrams_to_send()

    def next_deadline(self) -> float | None:
        return self.peer.core.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.peer.core.handle_timer(now)
        self._after(now)

    def _after(self, now: float) -> None:
        peer = self.peer
        peer.events += [(now, e) for e in peer.core.events()]
        other = peer.other
        assert other is not None
        for message in peer.core.messages_to_friend():
            self.net.call_later(RELAY_LATENCY_S, lambda m=message, o=other: deliver(self.net, o, m))


def deliver(net: SimNetwork, peer: Peer, message: bytes) -> None:
    peer.core.on_friend_message(message, net.now)
    assert peer.endpoint is not None
    shim = peer.endpoint.core
    assert isinstance(shim, _Shim)
    shim._after(net.now)
    peer.endpoint.flush()


def _world(a_side: Side, b_side: Side, seed: int = 7) -> tuple[SimNetwork, Peer, Peer, float]:
    net = SimNetwork(seed, default_link=LinkParams(latency_s=0.03, jitter_s=0.01))
    for ip, port in REFLECTORS:
        sock = net.add_host(ip).bind(port)
        sock.handler = lambda data, addr, s=sock: s.sendto(f"R{addr[0]}:{addr[1]}".encode(), addr)
    peers = []
    for i, side in enumerate((a_side, b_side)):
        nat = SimNat(f"11.0.{i + 1}.1", side.kind, port_allocation=side.allocation)
        host = net.add_host(None, nat=nat)
        peer = Peer("ab"[i], DirectPathCore(net.fork_rng(f"peer{i}"), net.now))
        shim = _Shim(net, peer)
        peer.endpoint = net.attach(shim, host, PEER_PORT)
        peers.append(peer)
    a, b = peers
    a.other, b.other = b, a
    for peer in peers:
        assert peer.endpoint is not None
        shim = peer.endpoint.core
        assert isinstance(shim, _Shim)
        shim.query()
        peer.endpoint.flush()
    net.run_for(1.0)
    start = net.now
    for peer in peers:
        assert peer.endpoint is not None
        local = peer.endpoint.addr
        assert len(peer.observed) == 2
        nat = classify_nat(local, peer.observed)
        candidates = [
            Candidate(CandidateSource.OBSERVED, IPPort.from_addr(peer.observed[-1])),
            Candidate(CandidateSource.LOCAL, IPPort.from_addr(local)),
        ]
        peer.core.set_local(candidates, nat, net.now)
        shim = peer.endpoint.core
        assert isinstance(shim, _Shim)
        shim._after(net.now)
        peer.endpoint.flush()
    return net, a, b, start


def both_direct(a: Peer, b: Peer) -> bool:
    return a.core.addr is not None and b.core.addr is not None


def _ups(peer: Peer) -> list[tuple[float, DirectPathUp]]:
    return [(t, e) for t, e in peer.events if isinstance(e, DirectPathUp)]


def test_nat_sim_classification() -> None:
    assert classify_nat(("10.0.0.2", 5), [("10.0.0.2", 5)]) is NatBehaviour.OPEN
    assert classify_nat(("10.0.0.2", 5), [("1.2.3.4", 9), ("1.2.3.4", 9)]) is (
        NatBehaviour.ENDPOINT_INDEPENDENT
    )
    assert classify_nat(("10.0.0.2", 5), [("1.2.3.4", 9), ("1.2.3.4", 10)]) is (
        NatBehaviour.SYMMETRIC_SEQUENTIAL
    )
    assert classify_nat(("10.0.0.2", 5), [("1.2.3.4", 9), ("1.2.3.4", 4000)]) is (
        NatBehaviour.SYMMETRIC_RANDOM
    )
    assert classify_nat(("10.0.0.2", 5), []) is NatBehaviour.UNKNOWN


@pytest.mark.parametrize(
    ("a_side", "b_side"),
    list(itertools.combinations_with_replacement(SIDES, 2)),
    ids=lambda s: s.label,
)
def test_nat_sim_pairing(a_side: Side, b_side: Side) -> None:
    outcome = EXPECTED_TABLE[(a_side.label, b_side.label)]
    for first, second in ((a_side, b_side), (b_side, a_side)):
        net, a, b, start = _world(first, second)
        net.run_until(lambda a=a, b=b: both_direct(a, b), timeout=10.0)
        if outcome == "relay":
            assert a.core.addr is None
            assert b.core.addr is None
            for peer in (a, b):
                assert "relay" in peer.core.status()
            net.run_for(6.0)  # the probing window ends: status says why
            assert any("symmetric NAT with random ports" in p.core.status() for p in (a, b))
            continue
        for peer, other in ((a, b), (b, a)):
            ups = _ups(peer)
            assert ups, f"{peer.name}: no direct path ({first.label} / {second.label})"
            t_up, up = ups[0]
            assert t_up - start <= DIRECT_WITHIN_S
            # the direct path is the other side's public mapping, through both NATs
            other_nat = other.endpoint.host.nat if other.endpoint is not None else None
            assert other_nat is not None
            assert up.addr[0] == other_nat.public_ip
            assert peer.core.status().startswith("direct udp")
        predicted = any(up.predicted for p in (a, b) for _, up in _ups(p))
        if outcome == "predicted":
            assert predicted  # only port prediction gets through
        elif SYM_SEQ not in (first, second):
            assert not predicted


def test_nat_sim_keepalive_death_and_retry() -> None:
    net, a, b, _ = _world(PORT, PORT)
    assert net.run_until(lambda: a.core.addr is not None and b.core.addr is not None, timeout=5.0)
    # idle for several keepalive periods: still direct (keepalives hold the mappings open)
    net.run_for(4 * KEEPALIVE_INTERVAL_S)
    assert a.core.addr is not None
    assert b.core.addr is not None
    assert not any(isinstance(e, DirectPathDown) for _, e in a.events + b.events)
    # the path breaks (UDP blocked between the NATs): both notice, the relay takes over
    assert a.endpoint is not None
    assert b.endpoint is not None
    a_pub, b_pub = a.endpoint.host.public_ip, b.endpoint.host.public_ip
    net.block(a_pub, b_pub)
    broke = net.now
    assert net.run_until(lambda: a.core.addr is None and b.core.addr is None, timeout=60.0)
    assert net.now - broke <= PATH_DEAD_AFTER_S + KEEPALIVE_INTERVAL_S + 1
    # repaired: a retry finds the direct path again
    net.unblock(a_pub, b_pub)
    assert net.run_until(lambda: a.core.addr is not None and b.core.addr is not None, timeout=60.0)


def test_nat_sim_rebinding_moves_the_path() -> None:
    net, a, b, _ = _world(FULL, PORT)
    assert net.run_until(lambda: a.core.addr is not None and b.core.addr is not None, timeout=5.0)
    assert b.endpoint is not None
    nat = b.endpoint.host.nat
    assert nat is not None
    nat.flush()  # b's NAT forgets its mappings: b's next packet gets a new public port
    old = a.core.addr
    assert net.run_until(lambda: a.core.addr not in (None, old), timeout=2 * KEEPALIVE_INTERVAL_S)
    assert any(isinstance(e, DirectPathMoved) for _, e in a.events)
    assert b.core.addr is not None
