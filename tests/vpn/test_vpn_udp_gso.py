"""UdpDriver's batched sends (UDP GSO where the kernel takes it) and GRO receives on loopback:
every datagram arrives once, whole and in order, whatever the kernel coalesced."""

from __future__ import annotations

import trio

from tunnel.io.udp import UdpDriver, open_udp_socket
from tunnel.wire.ip_port import Addr

PORTS = (52470, 52479)


class Sink:
    """A DatagramCore that records what it receives."""

    def __init__(self, expect: int = 0) -> None:
        self.got: list[bytes] = []
        self.expect = expect
        self.done = trio.Event()

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.got.append(data)
        if len(self.got) >= self.expect:
            self.done.set()

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        return []

    def next_deadline(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


async def test_batched_sends_arrive_whole_and_in_order() -> None:
    a = await open_udp_socket("127.0.0.1", *PORTS, ipv6=False)
    b = await open_udp_socket("127.0.0.1", a.port + 1, PORTS[1], ipv6=False)
    # runs of equal sizes with a shorter last one, a lone odd size, and a run past 64
    packets = [bytes([i % 251]) * 1400 for i in range(70)] + [b"\x01short"]
    packets += [bytes([7]) * 900, bytes([8]) * 1400, bytes([9]) * 1400, bytes([10]) * 100]
    sink = Sink(len(packets))
    sender = UdpDriver(Sink(), a)
    receiver = UdpDriver(sink, b)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sender.run)
            await nursery.start(receiver.run)
            assert sender.send_batch_now(("127.0.0.1", b.port), packets) == len(packets)
            with trio.fail_after(5):
                await sink.done.wait()
            nursery.cancel_scope.cancel()
    finally:
        a.close()
        b.close()
    assert sink.got == packets
    assert sender.sent == len(packets)
    if sender.gso:  # the kernel took GSO: runs went out as one sendmsg each ...
        assert sender.gso_sends >= 2
        if b.gro:  # ... and loopback hands them over coalesced
            assert receiver.gro_receives >= 1
