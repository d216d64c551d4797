"""Link behaviour (loss, duplication, jitter/reordering, bandwidth, blocking) and determinism."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.testing.sim import LinkParams, NatKind, SimNat, SimNetwork, SimSocket
from tunnel.wire.ip_port import Addr

N = 2000


def _sender(sock: SimSocket, data: bytes, addr: Addr) -> Callable[[], None]:
    return lambda: sock.sendto(data, addr)


def _blast(net: SimNetwork, count: int = N, gap_s: float = 0.001) -> list[int]:
    """Send ``count`` numbered datagrams a -> b, ``gap_s`` apart; return arrival order."""
    a = net.add_host("11.0.0.1")
    b = net.add_host("11.0.0.2")
    sa = a.bind(1)
    arrivals: list[int] = []
    b.bind(2, handler=lambda data, addr: arrivals.append(int(data)))
    for i in range(count):
        net.call_at(net.now + i * gap_s, _sender(sa, b"%d" % i, (b.ip, 2)))
    net.run_for(count * gap_s + 10.0)
    return arrivals


def _scenario(seed: int) -> SimNetwork:
    net = SimNetwork(seed, default_link=LinkParams(latency_s=0.02, jitter_s=0.01, loss=0.1))
    nat = SimNat("11.0.0.200", NatKind.SYMMETRIC)
    inside = net.add_host(None, nat=nat)
    sock = inside.bind(7)
    net.call_at(net.now + 0.5, lambda: sock.sendto(b"out", ("11.0.0.1", 1)))
    _blast(net, count=200)
    return net


def test_same_seed_same_trace_different_seed_different() -> None:
    h1 = _scenario(42).trace_hash()
    h2 = _scenario(42).trace_hash()
    h3 = _scenario(43).trace_hash()
    assert h1 == h2
    assert h1 != h3


_HASH_SCRIPT = """
from tunnel.testing.sim import LinkParams, NatKind, SimNat, SimNetwork
net = SimNetwork(5, default_link=LinkParams(latency_s=0.02, jitter_s=0.01, loss=0.1))
nats = [SimNat(f"11.0.9.{i}", kind) for i, kind in enumerate(NatKind, 1)]
socks = [net.add_host(None, nat=nat).bind(1) for nat in nats]
socks += [net.add_host().bind(1) for _ in range(4)]
for i, s in enumerate(socks):
    for j, t in enumerate(socks):
        if t.host.nat is None:
            net.call_at(net.now + (i * j) % 7 / 10, lambda s=s, t=t: s.sendto(b"x", t.addr))
net.run_for(5)
print(net.trace_hash())
"""


def test_trace_independent_of_pythonhashseed() -> None:
    hashes = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        hashes.add(proc.stdout.strip())
    [digest] = hashes
    assert len(digest) == 32


def test_trace_list_is_bounded_and_matches_hash_mode() -> None:
    net = SimNetwork(1, trace_limit=5)
    _blast(net, count=20)
    assert len(net.trace) == 5
    assert net.trace[-1].kind == "deliver"
    assert net.trace[-1].dst == ("11.0.0.2", 2)
    plain = SimNetwork(1)
    _blast(plain, count=20)
    assert plain.trace_hash() == net.trace_hash()
    assert len(plain.trace) == 0


def test_loss_rate_roughly_as_configured() -> None:
    net = SimNetwork(11, default_link=LinkParams(loss=0.2))
    arrivals = _blast(net)
    lost = N - len(arrivals)
    assert 0.15 * N < lost < 0.25 * N
    assert net.drops == {"loss": lost}
    assert net.hosts[0].stats.dropped_packets == lost
    assert arrivals == sorted(arrivals)  # no jitter: no reordering


def test_duplication_rate_roughly_as_configured() -> None:
    net = SimNetwork(12, default_link=LinkParams(duplicate=0.1))
    arrivals = _blast(net)
    dups = len(arrivals) - N
    assert 0.07 * N < dups < 0.13 * N
    assert sorted(set(arrivals)) == list(range(N))
    assert net.hosts[1].stats.received_packets == N + dups


def test_jitter_reorders_and_bounds_delay() -> None:
    net = SimNetwork(13, default_link=LinkParams(latency_s=0.05, jitter_s=0.02))
    a, b = net.add_host(), net.add_host()
    sa = a.bind(1)
    arrivals: list[tuple[int, float]] = []
    b.bind(2, handler=lambda data, addr: arrivals.append((int(data), net.now)))
    start = net.now
    for i in range(N):
        net.call_at(start + i * 0.005, _sender(sa, b"%d" % i, (b.ip, 2)))
    net.run_for(N * 0.005 + 1)
    order = [i for i, _ in arrivals]
    assert sorted(order) == list(range(N))
    inversions = sum(1 for x, y in itertools.pairwise(order) if x > y)
    assert 0.05 * N < inversions < 0.5 * N
    delays = [t - (start + i * 0.005) for i, t in arrivals]
    assert min(delays) >= 0.05 - 1e-9
    assert max(delays) < 0.07
    assert 0.055 < sum(delays) / N < 0.065


def test_no_jitter_is_fifo_even_at_same_instant() -> None:
    net = SimNetwork(1)
    arrivals = _blast(net, count=100, gap_s=0.0)
    assert arrivals == list(range(100))


def test_bandwidth_serialises_and_queue_drops() -> None:
    link = LinkParams(latency_s=0.01, bandwidth_bytes_per_s=1000.0, max_queue_s=0.45)
    net = SimNetwork(1, default_link=link)
    a, b = net.add_host(), net.add_host()
    sa = a.bind(1)
    times: list[float] = []
    b.bind(2, handler=lambda d, addr: times.append(net.now))
    for _ in range(10):
        sa.sendto(bytes(100), (b.ip, 2))  # 0.1 s each on the wire
    net.run_for(5)
    # 0.1 s per packet; packets that would queue for more than 0.45 s are dropped
    assert times == pytest.approx([1000.0 + 0.1 * (i + 1) + 0.01 for i in range(5)])
    assert net.drops == {"queue": 5}


def test_per_pair_link_and_block() -> None:
    net = SimNetwork(1, default_link=LinkParams(latency_s=0.01))
    a, b, c = net.add_host(), net.add_host(), net.add_host()
    net.set_link(a.ip, b.ip, LinkParams(latency_s=0.3))
    assert net.link(b.ip, a.ip).latency_s == 0.3
    assert net.link(a.ip, c.ip).latency_s == 0.01
    sa = a.bind(1)
    got: list[tuple[str, float]] = []
    b.bind(1, handler=lambda d, addr: got.append(("b", net.now)))
    c.bind(1, handler=lambda d, addr: got.append(("c", net.now)))
    sa.sendto(b"x", (b.ip, 1))
    sa.sendto(b"x", (c.ip, 1))
    net.run_for(1)
    assert [g[0] for g in got] == ["c", "b"]
    assert [g[1] for g in got] == pytest.approx([1000.01, 1000.3])
    net.clear_link(b.ip, a.ip)
    assert net.link(a.ip, b.ip).latency_s == 0.01

    got.clear()
    net.block(a.ip, b.ip)
    sa.sendto(b"x", (b.ip, 1))
    sa.sendto(b"x", (c.ip, 1))
    net.run_for(1)
    assert [g[0] for g in got] == ["c"]
    net.unblock(b.ip, a.ip)
    net.block(c.ip)  # "UDP blocked" for c
    sa.sendto(b"x", (b.ip, 1))
    sa.sendto(b"x", (c.ip, 1))
    c.sockets[1].sendto(b"x", (b.ip, 1))
    net.run_for(1)
    assert [g[0] for g in got] == ["c", "b"]
    assert net.drops == {"blocked": 3}
    net.unblock(c.ip)
    sa.sendto(b"x", (c.ip, 1))
    net.run_for(1)
    assert [g[0] for g in got] == ["c", "b", "c"]


def test_block_private_host_behind_nat() -> None:
    net = SimNetwork(1)
    nat = SimNat("11.0.0.100", NatKind.FULL_CONE)
    h = net.add_host(None, nat=nat)
    other = net.add_host(None, nat=nat)
    assert (h.ip, other.ip) == ("192.168.0.2", "192.168.0.3")
    server = net.add_host()
    srv = server.bind(1)
    net.block(h.ip)
    h.bind(5).sendto(b"x", (server.ip, 1))
    other.bind(5).sendto(b"y", (server.ip, 1))
    net.run_for(1)
    assert [d for d, _ in srv.inbox] == [b"y"]


def test_link_params_validation() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        LinkParams(loss=1.5)
    with pytest.raises(ValueError, match="negative"):
        LinkParams(latency_s=-1)
    with pytest.raises(ValueError, match="bandwidth"):
        LinkParams(bandwidth_bytes_per_s=0)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.sampled_from([0.0, 0.1, 0.5]),
    duplicate=st.sampled_from([0.0, 0.2]),
    jitter=st.sampled_from([0.0, 0.05]),
    kinds=st.lists(st.sampled_from([None, *NatKind]), min_size=2, max_size=6),
    sends=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 30)), max_size=40
    ),
)
def test_every_packet_is_delivered_or_dropped(
    seed: int,
    loss: float,
    duplicate: float,
    jitter: float,
    kinds: list[NatKind | None],
    sends: list[tuple[int, int, int]],
) -> None:
    """Conservation: sent + duplicated == delivered + dropped, per host and network-wide."""
    link = LinkParams(latency_s=0.01, jitter_s=jitter, loss=loss, duplicate=duplicate)
    net = SimNetwork(seed, default_link=link)
    socks = []
    for i, kind in enumerate(kinds):
        nat = None if kind is None else SimNat(f"11.0.1.{i + 1}", kind)
        socks.append(net.add_host(None, nat=nat).bind(1))
    for src, dst, tenth in sends:
        s, d = socks[src % len(socks)], socks[dst % len(socks)]
        target = d.addr if d.host.nat is None else (d.host.public_ip, 20000)
        net.call_at(net.now + tenth / 10, _sender(s, b"p", target))
    assert net.run_until_idle(100.0)
    sent = sum(h.stats.sent_packets for h in net.hosts)
    received = sum(h.stats.received_packets for h in net.hosts)
    dropped = sum(h.stats.dropped_packets for h in net.hosts)
    assert sent == len(sends)
    assert sent + net.duplicated_packets == received + dropped
    assert received == net.delivered_packets
    assert dropped == sum(net.drops.values())
