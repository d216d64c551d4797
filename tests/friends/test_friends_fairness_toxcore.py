"""Fairness against real libtoxcore: our bulk flow and a toxcore bulk flow share one rate-limited
UDP bottleneck (a shim with a drop-tail queue), and the toxcore flow still gets a share (is not
starved, as it was by our earlier controller).

The simulator test (``tests/netcrypto/test_netcrypto_fairness.py``) is the deterministic
proof against a model of toxcore's sending policy; this is the check with the real library.
Flows: our node A -> toxcore R (through the shim), toxcore S -> our node B (through the shim).
Every datagram of both flows, both directions, goes through one FIFO served at
``RATE_BYTES_S`` with at most ``QUEUE_S`` of queue and ``LATENCY_S`` of delay.
"""

from __future__ import annotations

import os
from collections import deque

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.friends.messenger import CustomLossless, FriendOnline, Messenger
from tunnel.io.netcrypto_udp import MessengerNode
from tunnel.io.udp import open_udp_socket
from tunnel.netcrypto.core import NetCrypto
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import Connection, ToxPeer
from tunnel.wire.ip_port import Addr

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

PORTS = PortPool(45600, 45699)
RATE_BYTES_S = 1_000_000.0
QUEUE_S = 0.05
LATENCY_S = 0.02
WIRE_BYTES = 1400
PACKET_BYTES = 1373


class Bottleneck:
    """One FIFO link shared by several UDP relays (``add_pair``)."""

    def __init__(self) -> None:
        self.busy_until = 0.0
        self.dropped = 0
        self.forwarded = 0
        self._queue: deque[tuple[float, trio.socket.SocketType, bytes, Addr]] = deque()
        self._wake = trio.Event()
        self._pairs: list[tuple[trio.socket.SocketType, Addr, Addr]] = []

    async def add_pair(self, port: int, a: Addr, b: Addr) -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", port))
        self._pairs.append((sock, a, b))

    def close(self) -> None:
        for sock, _, _ in self._pairs:
            sock.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for sock, a, b in self._pairs:
                nursery.start_soon(self._reader, sock, a, b)
            nursery.start_soon(self._sender)
            task_status.started()

    def _enqueue(self, sock: trio.socket.SocketType, data: bytes, dest: Addr) -> None:
        now = trio.current_time()
        start = max(self.busy_until, now)
        if start - now > QUEUE_S:
            self.dropped += 1
            return
        self.busy_until = start + len(data) / RATE_BYTES_S
        self._queue.append((self.busy_until + LATENCY_S, sock, data, dest))
        self._wake.set()

    async def _reader(self, sock: trio.socket.SocketType, a: Addr, b: Addr) -> None:
        while True:
            data, addr = await sock.recvfrom(2048)
            self._enqueue(sock, data, b if tuple(addr[:2]) == a else a)

    async def _sender(self) -> None:
        while True:
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            release, sock, data, dest = self._queue[0]
            await trio.sleep_until(release)  # the modelled link's serialisation + delay
            self._queue.popleft()
            self.forwarded += 1
            await sock.sendto(data, dest)


def _packet(i: int) -> bytes:
    return b"\xa0" + i.to_bytes(4, "big") + bytes(PACKET_BYTES - 5)


async def _bulk_ours(node: MessengerNode, friend: int) -> None:
    i = 0
    while True:
        await node.send_custom_lossless(friend, _packet(i))
        i += 1


def _pump_hook(tox: ToxPeer, friend: int) -> object:
    sent = [0]

    def hook() -> bool:
        # A bulk toxcore application: push until SENDQ after every tox_iterate.
        while tox.try_send_lossless(friend, _packet(sent[0])):
            sent[0] += 1
        return True

    return hook


async def test_toxcore_flow_keeps_a_share_next_to_ours() -> None:
    a_port, b_port, shim1, shim2, r_port, s_port = PORTS.allocate(6)
    shim = Bottleneck()
    r = ToxPeer("receiver", start_port=r_port, end_port=r_port)
    s = ToxPeer("sender", start_port=s_port, end_port=s_port, record_packets=False)
    r.record_packets = False
    mes_a = Messenger(
        NetCrypto(KeyPair.generate(os.urandom), KeyPair.generate(os.urandom), os.urandom)
    )
    mes_b = Messenger(
        NetCrypto(KeyPair.generate(os.urandom), KeyPair.generate(os.urandom), os.urandom)
    )
    sock_a = await open_udp_socket("127.0.0.1", a_port, a_port, ipv6=False)
    sock_b = await open_udp_socket("127.0.0.1", b_port, b_port, ipv6=False)
    await shim.add_pair(shim1, ("127.0.0.1", a_port), ("127.0.0.1", r.udp_port))
    await shim.add_pair(shim2, ("127.0.0.1", b_port), ("127.0.0.1", s.udp_port))
    node_a, node_b = MessengerNode(mes_a, sock_a), MessengerNode(mes_b, sock_b)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(shim.run)
            await nursery.start(node_a.run)
            await nursery.start(node_b.run)
            r_friend = r.friend_add_norequest(mes_a.netcrypto.ident.real.public_key)
            s_friend = s.friend_add_norequest(mes_b.netcrypto.ident.real.public_key)
            fa = mes_a.add_friend_norequest(
                r.public_key, node_a.now(), dht_pk=r.dht_id, udp_addr=("127.0.0.1", shim1)
            )
            mes_b.add_friend_norequest(
                s.public_key, node_b.now(), dht_pk=s.dht_id, udp_addr=("127.0.0.1", shim2)
            )
            node_a.kick()
            node_b.kick()
            with trio.fail_after(30):
                await node_a.wait_for(lambda: node_a.take(FriendOnline))
                await node_b.wait_for(lambda: node_b.take(FriendOnline))
            assert await r.await_friend_connected(r_friend, 30) is Connection.UDP
            assert await s.await_friend_connected(s_friend, 30) is Connection.UDP

            def received_b() -> int:
                return sum(isinstance(e, CustomLossless) for e in node_b.take(CustomLossless))

            counts = {"b": 0}

            async def count_b() -> None:
                while True:
                    await node_b.wait_for(lambda: node_b.received)
                    counts["b"] += received_b()

            nursery.start_soon(count_b)
            nursery.start_soon(_bulk_ours, node_a, fa)
            await trio.sleep(3.0)  # ours at full speed first
            s.add_iteration_hook(_pump_hook(s, s_friend))  # type: ignore[arg-type]
            await trio.sleep(20.0)  # toxcore's slow ramp
            window = 15.0
            r0, b0 = r.stats().lossless_bytes, counts["b"]
            await trio.sleep(window)
            ours_pkts = (r.stats().lossless_bytes - r0) / PACKET_BYTES
            ours_share = ours_pkts * WIRE_BYTES / (RATE_BYTES_S * window)
            tox_share = (counts["b"] - b0) * WIRE_BYTES / (RATE_BYTES_S * window)
            print(f"ours {ours_share:.2f} toxcore {tox_share:.2f} dropped {shim.dropped}")
            # Healthy runs give toxcore 0.36-0.54 of the link; the controller before the
            # delay-based component left it 0.02. One full CI run on the loaded 2-core machine
            # gave 0.17 (ours 0.70): toxcore's own ramp after drops is slow under load. 0.12
            # still tells a share from starvation without failing on that spread.
            assert tox_share >= 0.12, (ours_share, tox_share)
            assert ours_share >= 0.2, (ours_share, tox_share)
            nursery.cancel_scope.cancel()
    finally:
        r.kill()
        s.kill()
        shim.close()
        sock_a.close()
        sock_b.close()
