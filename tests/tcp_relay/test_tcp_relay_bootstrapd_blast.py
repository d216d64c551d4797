"""A hard blast of data frames through a real tox-bootstrapd TCP relay (issue #8).

tox-bootstrapd's relay reads slowly (it polls every 30 ms); fed with large writes as fast as our
client can produce them, its receive window used to stay shut with a frame half read and the
connection stalled for good. The relay client's paced writer (``WriteBudget``,
``TCP_NOTSENT_LOWAT``) keeps it reading: every frame must arrive, in order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.io.tcp_relay import RelayPoolDriver, WriteBudget
from tunnel.tcp_relay.connections import PeerData, PeerOnline, RelayConnected
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool

from .pool_events import wait_event

BLAST_PORTS = (43700, 43799)
FRAME_BYTES = 1400
BLAST_BYTES = 20_000_000
BLAST_LIMIT_S = 120.0


@pytest.fixture(scope="module")
def blast_ports() -> PortPool:
    """This module's own loopback ports."""
    return PortPool(*BLAST_PORTS)


@pytest.fixture
def bsd_relay(blast_ports: PortPool, tmp_path: Path) -> Iterator[Bootstrapd]:
    udp_port, tcp_port = blast_ports.allocate(2)
    with Bootstrapd(tmp_path, udp_port, (tcp_port,), name="bsd-blast") as bsd:
        yield bsd


def frame(seq: int) -> bytes:
    """A net_crypto-looking data packet carrying its sequence number."""
    head = b"\x1b" + seq.to_bytes(4, "big")
    return head + bytes([seq % 251]) * (FRAME_BYTES - len(head))


def test_write_budget_refills_caps_and_goes_into_debt() -> None:
    budget = WriteBudget(10.0, rate_bytes_s=1000.0, burst_bytes=100)
    assert budget.available(10.0) == 100
    assert budget.wait_s(10.0, 50) == 0.0
    budget.spend(300, 10.0)  # one frame bigger than the whole bucket: debt, never split
    assert budget.available(10.0) == 0
    assert budget.wait_s(10.0, 50) == pytest.approx(0.25)
    assert budget.wait_s(10.0, 10_000) == pytest.approx(0.3)  # capped at the burst
    assert budget.available(10.2) == 0
    assert budget.available(10.25) == 50
    assert budget.available(99.0) == 100  # refills up to the burst only
    assert budget.wait_s(98.0, 1) == 0.0  # a clock going back changes nothing
    with pytest.raises(ValueError):
        WriteBudget(0.0, rate_bytes_s=0.0)


@pytest.mark.toxcore
async def test_blast_through_tox_bootstrapd_relay_arrives_whole_and_in_order(
    bsd_relay: Bootstrapd,
) -> None:
    """Two of our clients on one tox-bootstrapd relay blast ~20 MB at each other at once.

    Both ways at once is what stalled the unpaced writer (one way alone did not, on loopback):
    tox-bootstrapd's socket had its receive memory full with a part of one frame unread.
    """
    bsd = bsd_relay
    count = BLAST_BYTES // FRAME_BYTES
    async with trio.open_nursery() as nursery:
        a = RelayPoolDriver(KeyPair.generate(os.urandom))
        b = RelayPoolDriver(KeyPair.generate(os.urandom))
        for d in (a, b):
            await nursery.start(d.run)
            d.add_relay(bsd.host, bsd.tcp_ports[0], bsd.public_key)
        for d in (a, b):
            await wait_event(d, lambda e: isinstance(e, RelayConnected))
        a_pk, b_pk = a.pool.self_keys.public_key, b.pool.self_keys.public_key
        a.add_peer(b_pk)
        b.add_peer(a_pk)
        await wait_event(a, lambda e: isinstance(e, PeerOnline))
        await wait_event(b, lambda e: isinstance(e, PeerOnline))

        async def blast(sender: RelayPoolDriver, to: bytes) -> None:
            for seq in range(count):
                packet = frame(seq)
                while not sender.send_to_peer(to, packet):  # outbox full
                    await sender.wait_writable(to, len(packet))
                if seq % 64 == 0:
                    await trio.lowlevel.checkpoint()

        received: dict[bytes, int] = {a_pk: 0, b_pk: 0}

        async def receive(receiver: RelayPoolDriver, sender_pk: bytes) -> None:
            me = receiver.pool.self_keys.public_key
            while received[me] < count:
                ev = await receiver.next_event()
                if not isinstance(ev, PeerData):
                    continue
                assert ev.peer == sender_pk
                seq = received[me]
                assert ev.data == frame(seq), f"frame {seq} missing or out of order"
                received[me] = seq + 1

        with trio.fail_after(BLAST_LIMIT_S):
            nursery.start_soon(blast, a, b_pk)
            nursery.start_soon(blast, b, a_pk)
            async with trio.open_nursery() as receivers:
                receivers.start_soon(receive, b, a_pk)
                receivers.start_soon(receive, a, b_pk)
        assert received == {a_pk: count, b_pk: count}
        assert all(r.confirmed for r in a.pool.relays() + b.pool.relays())
        nursery.cancel_scope.cancel()
