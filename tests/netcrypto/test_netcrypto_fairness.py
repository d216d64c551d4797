"""Fairness to toxcore peers: our congestion control next to a faithful model of toxcore 0.2.18's
sending policy (:mod:`tunnel.testing.toxcore_cc`) on one shallow simulated bottleneck.

toxcore is loss-averse (any resend within a second makes it send 0.9x what got through, every
50 ms) and ramps slowly; a controller that keeps a shallow queue full starves it. Ours backs
off when the queue delay rises above its base RTT, so a toxcore flow gets a fair share while
our flow alone still fills the link.
"""

from __future__ import annotations

import pytest

from tunnel.crypto import KeyPair
from tunnel.netcrypto.congestion import Congestion
from tunnel.netcrypto.core import ConnectionUp, LosslessPacket, NetCrypto
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import LinkParams, SimNetwork
from tunnel.testing.toxcore_cc import (
    ToxcoreModelReceiver,
    ToxcoreModelSender,
    generate_request,
)
from tunnel.wire.ip_port import Addr

PORT = 45010
PAYLOAD_BYTES = 1373  # a 1400-byte data packet on the wire, the size the model sends
WIRE_BYTES = 1400


class BulkApp:
    """A NetCrypto that pushes lossless packets whenever it may (a DatagramCore)."""

    def __init__(self, nc: NetCrypto) -> None:
        self.nc = nc
        self.peer: bytes | None = None
        self.sending = False
        self.up = False
        self.received = 0
        self.in_order = True
        self._next = 0

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.nc.receive(data, addr, now)
        self._after(now)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        return self.nc.datagrams_to_send()

    def next_deadline(self) -> float | None:
        return self.nc.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.nc.handle_timer(now)
        self._after(now)

    def _after(self, now: float) -> None:
        for event in self.nc.events():
            if isinstance(event, ConnectionUp):
                self.up = True
            elif isinstance(event, LosslessPacket):
                self.in_order &= int.from_bytes(event.payload[1:5], "big") == self.received
                self.received += 1
        if self.sending and self.peer is not None and self.nc.is_established(self.peer):
            while self.nc.send_capacity(self.peer) > 0:
                payload = b"\xa0" + self._next.to_bytes(4, "big") + bytes(PAYLOAD_BYTES - 5)
                self.nc.send_lossless(self.peer, payload, now)
                self._next += 1


class Bottleneck:
    """Two hosts, one bottleneck from 11.0.0.1 to 11.0.0.2; flows are added on demand."""

    def __init__(self, bandwidth: float, latency_s: float, queue_s: float, seed: int = 1) -> None:
        self.bandwidth = bandwidth
        self.net = SimNetwork(seed, trace=False)
        self.rng = SeededRng(seed)
        self.ha = self.net.add_host("11.0.0.1")
        self.hb = self.net.add_host("11.0.0.2")
        link = LinkParams(latency_s=latency_s, bandwidth_bytes_per_s=bandwidth, max_queue_s=queue_s)
        self.net.set_link("11.0.0.1", "11.0.0.2", link)
        self.ours_rx: BulkApp | None = None
        self.ours_tx: BulkApp | None = None
        self.tox_rx: ToxcoreModelReceiver | None = None
        self.tox_tx: ToxcoreModelSender | None = None

    def start_ours(self) -> None:
        rng = self.rng
        a_real, a_dht = KeyPair.generate(rng.fork("ar")), KeyPair.generate(rng.fork("ad"))
        b_real, b_dht = KeyPair.generate(rng.fork("br")), KeyPair.generate(rng.fork("bd"))
        tx = BulkApp(NetCrypto(a_real, a_dht, rng.fork("a")))
        rx = BulkApp(NetCrypto(b_real, b_dht, rng.fork("b"), accept_peer=lambda r, d: True))
        self.net.attach(tx, self.ha, PORT)
        self.net.attach(rx, self.hb, PORT)
        tx.peer = b_real.public_key
        tx.nc.connect(
            b_real.public_key, b_dht.public_key, self.net.now, udp_addr=("11.0.0.2", PORT)
        )
        assert self.net.run_until(lambda: tx.up and rx.up, timeout=10)
        tx.sending = True
        self.ours_tx, self.ours_rx = tx, rx

    def start_toxcore(self) -> None:
        now = self.net.now
        self.tox_tx = ToxcoreModelSender(("11.0.0.2", PORT + 1), now)
        self.tox_rx = ToxcoreModelReceiver(("11.0.0.1", PORT + 1), now)
        self.net.attach(self.tox_tx, self.ha, PORT + 1)
        self.net.attach(self.tox_rx, self.hb, PORT + 1)

    def counts(self) -> tuple[int, int]:
        ours = 0 if self.ours_rx is None else self.ours_rx.received
        tox = 0 if self.tox_rx is None else self.tox_rx.delivered
        return ours, tox

    def shares(self, seconds: float) -> tuple[float, float]:
        """Fractions of the link each flow delivered (in order) during the next ``seconds``."""
        before = self.counts()
        self.net.run_for(seconds)
        after = self.counts()
        link_pkts = self.bandwidth * seconds / WIRE_BYTES
        return (after[0] - before[0]) / link_pkts, (after[1] - before[1]) / link_pkts


# Bottlenecks where toxcore alone can use the link: 20 ms one way, a 30-50 ms drop-tail queue
# (about one bandwidth-delay product: shallow).
LINKS = [(1_000_000, 0.02, 0.05), (2_000_000, 0.02, 0.05), (4_000_000, 0.02, 0.03)]


def test_model_request_packet_encoding_is_toxcores() -> None:
    # holes at 0 and 3 of [0, 5): distances 1 (from start - 1) and 3
    assert generate_request({1: True, 2: True, 4: True}, 0, 5) == bytes([1, 3])
    # 300 received then one hole: a 0 byte per 255 positions passed
    got = {i: True for i in range(300)}
    assert generate_request(got, 0, 301) == bytes([0, 46])


def test_model_starts_like_toxcore() -> None:
    tox = ToxcoreModelSender(("11.0.0.2", 1), 1000.0)
    tox.handle_timer(1000.0)
    # 64 packets at once (CRYPTO_MIN_QUEUE_LENGTH), then the 4 pkt/s minimum rate
    assert len(tox.datagrams_to_send()) == 64
    assert tox.packet_send_rate == 4.0
    tox.handle_timer(1000.06)
    assert tox.datagrams_to_send() == []


def test_toxcore_model_alone_uses_the_link() -> None:
    link = Bottleneck(*LINKS[0])
    link.start_toxcore()
    link.net.run_for(15.0)
    _, tox = link.shares(10.0)
    assert tox > 0.8, tox


def test_ours_alone_ramps_fast_and_fills_a_shallow_link() -> None:
    for bandwidth, latency, queue in LINKS:
        link = Bottleneck(bandwidth, latency, queue)
        link.start_ours()
        ours, _ = link.shares(1.0)
        assert ours > 0.6, (bandwidth, ours)  # within the first second
        ours, _ = link.shares(5.0)
        assert ours > 0.9, (bandwidth, ours)
        assert link.ours_rx is not None
        assert link.ours_rx.in_order


@pytest.mark.slow
@pytest.mark.parametrize(("bandwidth", "latency", "queue"), LINKS[:2])
def test_toxcore_flow_gets_a_fair_share(bandwidth: float, latency: float, queue: float) -> None:
    """Our flow runs at full speed; a toxcore flow joins. After its (slow, ~x1.5/s) ramp the
    toxcore flow holds at least 30 % of the link, ours at least 25 %, the link stays busy."""
    link = Bottleneck(bandwidth, latency, queue)
    link.start_ours()
    link.net.run_for(3.0)
    link.start_toxcore()
    link.net.run_for(20.0)
    ours, tox = link.shares(20.0)
    assert tox >= 0.3, (ours, tox)
    assert ours >= 0.25, (ours, tox)
    assert ours + tox > 0.85, (ours, tox)
    assert link.ours_rx is not None
    assert link.ours_rx.in_order


def test_queue_delay_above_target_backs_off_and_idle_capacity_is_probed() -> None:
    """Unit view of the delay component on a synthetic feed (no simulator)."""
    cc = Congestion(0.0)
    now = 0.0
    # 10 steps of a 40 ms path delivering 1000 pkt/s with no queue: the rate probes upwards.
    for _ in range(10):
        for _ in range(10):
            now += 0.02
            cc.on_rtt_sample(0.040, now)
            cc.on_delivered(20)
            cc.available(now)
    assert cc.mode == "probe"
    assert cc.rate > 1000
    # Now a competitor keeps a 30 ms queue standing and our deliveries halve: we follow them
    # down below what we get, instead of holding the old estimate.
    for _ in range(5):
        for _ in range(10):
            now += 0.02
            cc.on_rtt_sample(0.070, now)
            cc.on_delivered(10)
            cc.available(now)
    assert cc.queue_delay == pytest.approx(0.030, abs=0.002)
    assert cc.rate < 500
