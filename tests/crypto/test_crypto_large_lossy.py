"""Lossy payloads beyond toxcore's 1373 bytes, only once both sessions raised their limits."""

from __future__ import annotations

import pytest

from tunnel.crypto import KeyPair
from tunnel.netcrypto.core import ConnectionUp, LossyPacket, NetCrypto
from tunnel.netcrypto.session import Session
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import SimNetwork
from tunnel.wire.ip_port import Addr

PORT = 49100
LARGE = 9001


class App:
    """A NetCrypto as a DatagramCore that records lossy packets and connection-ups."""

    def __init__(self, nc: NetCrypto) -> None:
        self.nc = nc
        self.lossy: list[bytes] = []
        self.ups = 0

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.nc.receive(data, addr, now)
        self._after()

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        return self.nc.datagrams_to_send()

    def next_deadline(self) -> float | None:
        return self.nc.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.nc.handle_timer(now)
        self._after()

    def _after(self) -> None:
        for event in self.nc.events():
            if isinstance(event, LossyPacket):
                self.lossy.append(event.payload)
            elif isinstance(event, ConnectionUp):
                self.ups += 1


def connected_pair() -> tuple[SimNetwork, App, App, Session, Session]:
    net = SimNetwork(7)
    rng = SeededRng(7)
    a_real, a_dht = KeyPair.generate(rng.fork("ar")), KeyPair.generate(rng.fork("ad"))
    b_real, b_dht = KeyPair.generate(rng.fork("br")), KeyPair.generate(rng.fork("bd"))
    a = App(NetCrypto(a_real, a_dht, rng.fork("a")))
    b = App(
        NetCrypto(
            b_real, b_dht, rng.fork("b"), accept_peer=lambda real, _: real == a_real.public_key
        )
    )
    net.attach(a, net.add_host("11.0.0.1"), PORT)
    net.attach(b, net.add_host("11.0.0.2"), PORT)
    a.nc.connect(b_real.public_key, b_dht.public_key, net.now, udp_addr=("11.0.0.2", PORT))
    assert net.run_until(lambda: a.ups == 1 and b.ups == 1, timeout=10)
    return net, a, b, a.nc.sessions[b_real.public_key], b.nc.sessions[a_real.public_key]


def test_toxcore_limits_by_default() -> None:
    net, a, _, sa, _ = connected_pair()
    assert sa.max_lossy_payload == 1373
    with pytest.raises(ValueError):
        a.nc.send_lossy(sa.peer_real_pk, b"\xe4" + bytes(1373), net.now)


def test_large_lossy_after_both_agree() -> None:
    net, a, b, sa, sb = connected_pair()
    sb.set_lossy_limits(receive_bytes=LARGE, send_bytes=1373)  # b announces, then a may send
    sa.set_lossy_limits(receive_bytes=LARGE, send_bytes=LARGE)
    payload = b"\xe4" + bytes(range(256)) * 35 + bytes(40)
    assert len(payload) == LARGE
    a.nc.send_lossy(sa.peer_real_pk, payload, net.now)
    assert net.run_until(lambda: bool(b.lossy), timeout=2)
    assert b.lossy == [payload]
    with pytest.raises(ValueError):  # b never learned a's limit: it stays at toxcore's
        b.nc.send_lossy(sb.peer_real_pk, payload, net.now)
    with pytest.raises(ValueError):  # lossless packets keep toxcore's limit
        a.nc.send_lossless(sa.peer_real_pk, b"\xa0" + bytes(2000), net.now)


def test_large_packet_to_a_peer_that_did_not_agree_is_dropped_and_counted() -> None:
    net, a, b, sa, sb = connected_pair()
    sa.set_lossy_limits(receive_bytes=LARGE, send_bytes=LARGE)  # a misbehaves
    a.nc.send_lossy(sa.peer_real_pk, b"\xe4" + bytes(5000), net.now)
    a.nc.send_lossy(sa.peer_real_pk, b"\xe4small", net.now)
    assert net.run_until(lambda: bool(b.lossy), timeout=2)
    assert b.lossy == [b"\xe4small"]
    assert sb.counters["data_malformed"] == 1
    assert sb.established
