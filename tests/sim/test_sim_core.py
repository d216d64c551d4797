"""SimNetwork basics: clock, sockets, attach() driving a DatagramCore with timers."""

from __future__ import annotations

import pytest

from tunnel.core import DatagramCore
from tunnel.testing.sim import START_TIME_S, LinkParams, NatKind, SimNat, SimNetwork
from tunnel.wire.ip_port import Addr


class EchoCore:
    """Sends every datagram back to where it came from."""

    def __init__(self) -> None:
        self.out: list[tuple[Addr, bytes]] = []
        self.seen: list[tuple[float, Addr, bytes]] = []

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.seen.append((now, addr, data))
        self.out.append((addr, data))

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self.out = self.out, []
        return out

    def next_deadline(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        raise AssertionError("no timers")


class PingCore:
    """Pings ``peer`` every ``interval`` seconds, ``count`` times; records round trips."""

    def __init__(self, peer: Addr, start: float, interval: float, count: int) -> None:
        self.peer = peer
        self.interval = interval
        self.remaining = count
        self.next_ping: float | None = start if count > 0 else None
        self.sent_at: dict[int, float] = {}
        self.rtts: dict[int, float] = {}
        self.timer_calls: list[float] = []
        self.out: list[tuple[Addr, bytes]] = []
        self.seq = 0

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        if data.startswith(b"ping "):
            self.out.append((addr, b"pong " + data[5:]))
        elif data.startswith(b"pong ") and addr == self.peer:
            n = int(data[5:])
            self.rtts.setdefault(n, now - self.sent_at[n])

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self.out = self.out, []
        return out

    def next_deadline(self) -> float | None:
        return self.next_ping

    def handle_timer(self, now: float) -> None:
        self.timer_calls.append(now)
        assert self.next_ping is not None
        assert now >= self.next_ping
        self.seq += 1
        self.sent_at[self.seq] = now
        self.out.append((self.peer, b"ping %d" % self.seq))
        self.remaining -= 1
        self.next_ping = now + self.interval if self.remaining > 0 else None


def test_pingcore_is_a_datagram_core() -> None:
    core: DatagramCore = PingCore(("1.2.3.4", 1), 0.0, 1.0, 1)
    assert core.next_deadline() == 0.0


def test_clock_starts_fixed_and_runs() -> None:
    net = SimNetwork(1)
    assert net.now == START_TIME_S
    fired: list[float] = []
    net.call_at(START_TIME_S + 5, lambda: fired.append(net.now))
    net.call_later(2.0, lambda: fired.append(net.now))
    net.run_for(1.0)
    assert fired == []
    assert net.now == START_TIME_S + 1
    net.run_until(START_TIME_S + 10)
    assert fired == [START_TIME_S + 2, START_TIME_S + 5]
    assert net.now == START_TIME_S + 10
    assert net.run_until_idle()


def test_socket_send_receive_and_counters() -> None:
    net = SimNetwork(1, default_link=LinkParams(latency_s=0.05))
    a = net.add_host("11.0.0.1")
    b = net.add_host()
    assert b.ip == "11.0.0.2"
    sa = a.bind(1000)
    got: list[tuple[bytes, Addr, float]] = []
    b.bind(2000, handler=lambda d, addr: got.append((d, addr, net.now)))
    sa.sendto(b"hello", (b.ip, 2000))
    sa.sendto(b"nobody", (b.ip, 2001))
    sa.sendto(b"nowhere", ("11.9.9.9", 1))
    net.run_for(1.0)
    assert got == [(b"hello", ("11.0.0.1", 1000), START_TIME_S + 0.05)]
    assert a.stats.sent_packets == 3
    assert a.stats.sent_bytes == 5 + 6 + 7
    assert a.stats.dropped_packets == 2
    assert b.stats.received_packets == 1
    assert b.stats.received_bytes == 5
    assert net.drops == {"port_unreachable": 1, "no_route": 1}
    # unhandled sockets queue into inbox; ephemeral ports are allocated
    sock = a.bind()
    assert sock.port >= 49152
    b.sockets[2000].sendto(b"back", sock.addr)
    net.run_for(1.0)
    assert sock.inbox == [(b"back", (b.ip, 2000))]
    with pytest.raises(OSError, match="already bound"):
        a.bind(1000)


def test_ipv6_and_dual_stack() -> None:
    net = SimNetwork(1)
    v6 = net.add_host("2001:db8:0:0::5")
    assert v6.ip == "2001:db8::5"
    dual = net.add_host("11.0.0.1", ip6="2001:db8::6")
    v4 = net.add_host("11.0.0.2")
    s6 = v6.bind(1)
    sd = dual.bind(2)
    s4 = v4.bind(3)
    sd.sendto(b"to6", ("2001:db8::5", 1))
    sd.sendto(b"to4", ("::ffff:11.0.0.2", 3))
    s4.sendto(b"v4 cannot reach v6", ("2001:db8::5", 1))
    s6.sendto(b"6 to dual", ("2001:db8::6", 2))
    net.run_for(1)
    assert s6.inbox == [(b"to6", ("2001:db8::6", 2))]
    assert s4.inbox == [(b"to4", ("11.0.0.1", 2))]
    assert sd.inbox == [(b"6 to dual", ("2001:db8::5", 1))]
    assert net.drops == {"no_ipv6": 1}


def test_attach_drives_receive_send_and_timers() -> None:
    net = SimNetwork(7, default_link=LinkParams(latency_s=0.1))
    server_host = net.add_host("11.0.0.1")
    client_host = net.add_host("11.0.0.2")
    server = PingCore(("0.0.0.0", 1), start=0.0, interval=1.0, count=0)
    net.attach(server, server_host, 7)
    start = net.now + 1.0
    ping = PingCore(("11.0.0.1", 7), start=start, interval=2.0, count=5)
    ep = net.attach(ping, client_host, 5000)
    assert ep.addr == ("11.0.0.2", 5000)
    net.run_for(20.0)
    assert ping.timer_calls == [start + 2.0 * i for i in range(5)]
    assert sorted(ping.rtts) == [1, 2, 3, 4, 5]
    assert all(rtt == pytest.approx(0.2) for rtt in ping.rtts.values())
    assert server.timer_calls == []
    # the core has no deadline any more: the queue drains
    assert net.run_until_idle(10.0)


def test_commands_between_runs_are_flushed() -> None:
    net = SimNetwork(3)
    a, b = net.add_host(), net.add_host()
    echo_a, echo_b = EchoCore(), EchoCore()
    net.attach(echo_a, a, 1)
    net.attach(echo_b, b, 1)
    # a command given to a core from test code: queued output appears on the next run
    echo_a.out.append(((b.ip, 1), b"x"))
    net.run_for(0.015)
    assert [s[2] for s in echo_b.seen] == [b"x"]
    # the echo ping-pongs forever at 10 ms a hop; run_until stops on the predicate
    assert net.run_until(lambda: len(echo_a.seen) >= 10, timeout=5.0)
    assert len(echo_a.seen) == 10
    assert net.now == pytest.approx(START_TIME_S + 0.2)
    assert not net.run_until(lambda: False, timeout=1.0)
    assert net.now == pytest.approx(START_TIME_S + 1.2)


class MovingDeadlineCore(PingCore):
    """Moves its deadline later whenever a datagram arrives (exercises lazy invalidation)."""

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        super().receive(data, addr, now)
        if self.next_ping is not None:
            self.next_ping = now + 0.5


def test_deadline_moving_later_and_earlier() -> None:
    net = SimNetwork(5)
    a, b = net.add_host(), net.add_host()
    core = MovingDeadlineCore(("11.0.0.9", 1), start=net.now + 1.0, interval=1.0, count=3)
    ep = net.attach(core, a, 1)
    sender = b.bind(9)
    net.call_at(net.now + 0.9, lambda: sender.sendto(b"noise", (a.ip, 1)))
    net.run_for(0.95)
    assert core.timer_calls == []
    # deadline is now 1000.91 + 0.5; move it earlier from test code
    core.next_ping = net.now + 0.01
    ep.flush()
    net.run_for(0.02)
    assert core.timer_calls == [pytest.approx(START_TIME_S + 0.96)]
    net.run_for(10.0)
    assert len(core.timer_calls) == 3


class StuckCore(EchoCore):
    def next_deadline(self) -> float | None:
        return 0.0

    def handle_timer(self, now: float) -> None:
        pass


def test_stuck_core_is_reported() -> None:
    net = SimNetwork(1)
    net.attach(StuckCore(), net.add_host(), 1)
    with pytest.raises(RuntimeError, match="stuck"):
        net.run_for(1.0)


def test_detach_stops_delivery() -> None:
    net = SimNetwork(1)
    a, b = net.add_host(), net.add_host()
    echo = EchoCore()
    ep = net.attach(echo, a, 1)
    s = b.bind(1)
    ep.detach()
    s.sendto(b"x", (a.ip, 1))
    net.run_for(1)
    assert echo.seen == []
    assert net.drops == {"port_unreachable": 1}


def test_without_auto_flush_endpoint_call_at_flushes_only_that_endpoint() -> None:
    net = SimNetwork(3, auto_flush=False)
    a, b = net.add_host(), net.add_host()
    echo_a, echo_b = EchoCore(), EchoCore()
    ep_a = net.attach(echo_a, a, 1)
    net.attach(echo_b, b, 1)
    echo_b.out.append(((a.ip, 9), b"stays queued"))
    ep_a.call_later(0.5, lambda: echo_a.out.append(((b.ip, 1), b"go")))
    net.run_until(lambda: bool(echo_b.seen), timeout=1.0)
    assert net.now == pytest.approx(START_TIME_S + 0.51)
    assert [d for _, _, d in echo_b.seen] == [b"go"]
    # echo_b's flush after receiving also sent the command queued by hand
    net.run_for(1.0)
    assert net.drops == {"port_unreachable": 1}


def test_many_nodes_smoke() -> None:
    """500 nodes gossiping for 5 s: everything sent is delivered, the same way twice."""

    def run() -> tuple[str, int]:
        net = SimNetwork(9, default_link=LinkParams(latency_s=0.02, jitter_s=0.01))
        hosts = [net.add_host() for _ in range(500)]
        cores = [
            PingCore((hosts[(i * 7 + 1) % 500].ip, 1), net.now + i / 500, 1.0, 5)
            for i in range(500)
        ]
        for host, core in zip(hosts, cores, strict=True):
            net.attach(core, host, 1)
        net.run_for(10.0)
        assert all(len(core.rtts) == 5 for core in cores)
        return net.trace_hash(), net.delivered_packets

    first = run()
    assert first[1] == 500 * 5 * 2
    assert run() == first


def test_remove_host_and_public_ip() -> None:
    net = SimNetwork(1)
    nat = SimNat("11.0.0.200", NatKind.FULL_CONE)
    inner = net.add_host(None, nat=nat, ip6="2001:db8::7")
    assert inner.public_ip == "11.0.0.200"
    a, b = net.add_host(), net.add_host()
    assert a.public_ip == a.ip
    ping = PingCore((b.ip, 1), net.now + 1, 1.0, 100)
    net.attach(ping, a, 1)
    net.attach(PingCore(("0.0.0.0", 1), 0.0, 1.0, 0), b, 1)
    net.run_for(3.5)
    assert len(ping.rtts) == 3
    net.remove_host(b)
    net.run_for(3.0)
    assert len(ping.rtts) == 3
    assert net.drops == {"no_route": 3}
    net.remove_host(inner)
    assert net.hosts == [a]
    assert net.endpoints[0].core is ping
    # the address can be reused
    assert net.add_host(b.ip).ip == b.ip
