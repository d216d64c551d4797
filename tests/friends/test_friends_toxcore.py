"""Our Messenger/net_crypto against REAL libtoxcore 0.2.18 over UDP on 127.0.0.1.

Test shortcut of toxcore-test-peers.md 7(b): the toxcore peer adds our real key with
``tox_friend_add_norequest``; we take its DHT key and UDP port and start the net_crypto
handshake directly (no DHT, no onion). Then: both online, a message each way with read
receipts, custom lossless and lossy packets both ways, and a bulk lossless transfer each way
(numbered packets, checked complete, in order and by hash).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.friends.messenger import (
    CustomLossless,
    CustomLossy,
    FriendOffline,
    FriendOnline,
    FriendState,
    MessageReceived,
    Messenger,
    ReadReceipt,
)
from tunnel.io.netcrypto_udp import MessengerNode
from tunnel.io.udp import open_udp_socket
from tunnel.netcrypto.core import NetCrypto
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import (
    Connection,
    FriendLosslessPacket,
    FriendLossyPacket,
    FriendMessage,
    FriendName,
    FriendReadReceipt,
    ToxError,
    ToxPeer,
)
from tunnel.wire.ip_port import Addr

pytestmark = [pytest.mark.toxcore]

PORTS = PortPool(45000, 45499)
CONNECT_TIMEOUT_S = 20.0
DELIVERY_TIMEOUT_S = 10.0
BULK_PACKETS = 15_000  # x 1373 bytes = 20.6 MB
PACKET_SIZE = 1373


def _our_keys() -> KeyPair:
    while True:  # toxcore refuses keys with the top bit of the last byte set
        keys = KeyPair.generate(os.urandom)
        if keys.public_key[31] < 128:
            return keys


@pytest.fixture
def tox() -> Iterator[ToxPeer]:
    start = PORTS.allocate(3)[0]
    peer = ToxPeer("toxcore", start_port=start, end_port=start + 2)
    try:
        yield peer
    finally:
        peer.kill()


@pytest.fixture
async def linked(tox: ToxPeer) -> AsyncIterator[tuple[MessengerNode, int, int]]:
    """Our node online with the toxcore peer: (node, our friend number, its friend number)."""
    real = _our_keys()
    tox_friend = tox.friend_add_norequest(real.public_key)
    messenger = Messenger(
        NetCrypto(real, KeyPair.generate(os.urandom), os.urandom), name=b"tunnel-py"
    )
    port = PORTS.allocate_one()
    bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
    node = MessengerNode(messenger, bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        friend = messenger.add_friend_norequest(
            tox.public_key,
            node.now(),
            dht_pk=tox.dht_id,
            udp_addr=("127.0.0.1", tox.udp_port),
        )
        node.kick()
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await node.wait_for(lambda: node.take(FriendOnline))
        assert await tox.await_friend_connected(tox_friend, CONNECT_TIMEOUT_S) is Connection.UDP
        yield node, friend, tox_friend
        nursery.cancel_scope.cancel()
    bound.close()


async def test_online_messages_and_custom_packets(
    tox: ToxPeer, linked: tuple[MessengerNode, int, int]
) -> None:
    node, friend, tox_friend = linked
    messenger = node.messenger
    assert messenger.friend_state(friend) is FriendState.ONLINE
    # toxcore learnt our name; we stored its (empty) name gracefully.
    name = await tox.await_event(FriendName, DELIVERY_TIMEOUT_S)
    assert name.name == b"tunnel-py"

    # Text message, ours -> toxcore, with our read receipt.
    message_id = node.send_message(friend, "hello from python ✓".encode())
    got = await tox.await_event(FriendMessage, DELIVERY_TIMEOUT_S)
    assert got.message == "hello from python ✓".encode()
    with trio.fail_after(DELIVERY_TIMEOUT_S):
        receipts = await node.wait_for(lambda: node.take(ReadReceipt))
    assert receipts == [ReadReceipt(friend, message_id)]

    # toxcore -> ours, and toxcore's receipt (our net_crypto acked it).
    tox_message_id = tox.send_message(tox_friend, "hello from toxcore")
    with trio.fail_after(DELIVERY_TIMEOUT_S):
        messages = await node.wait_for(lambda: node.take(MessageReceived))
    assert messages == [MessageReceived(friend, b"hello from toxcore", False)]
    receipt = await tox.await_event(FriendReadReceipt, DELIVERY_TIMEOUT_S)
    assert receipt.message_id == tox_message_id

    # Custom lossless and lossy both ways, full size included.
    big = bytes([160]) + bytes(range(256)) * 5 + bytes(1373 - 1281)
    await node.send_custom_lossless(friend, big)
    await node.send_custom_lossless(friend, b"\xbfsmall")
    node.send_custom_lossy(friend, b"\xc8" + b"L" * 1372)
    lossless = await tox.await_for(
        lambda: (p := tox.events(FriendLosslessPacket)) and len(p) >= 2 and p, DELIVERY_TIMEOUT_S
    )
    assert [p.data for p in lossless] == [big, b"\xbfsmall"]
    lossy = await tox.await_event(FriendLossyPacket, DELIVERY_TIMEOUT_S)
    assert lossy.data == b"\xc8" + b"L" * 1372

    tox.send_lossless(tox_friend, b"\xa5" + b"x" * 1372)
    tox.send_lossy(tox_friend, b"\xfe" + b"y" * 100)
    with trio.fail_after(DELIVERY_TIMEOUT_S):
        got_lossless = await node.wait_for(lambda: node.take(CustomLossless))
        got_lossy = await node.wait_for(lambda: node.take(CustomLossy))
    assert got_lossless == [CustomLossless(friend, b"\xa5" + b"x" * 1372)]
    assert got_lossy == [CustomLossy(friend, b"\xfe" + b"y" * 100)]

    stats = messenger.statistics(friend)
    assert stats.messages_sent == 1
    assert stats.messages_received == 1
    assert stats.custom_lossless_sent == 2
    assert stats.custom_lossy_received == 1
    assert stats.session is not None
    assert stats.session.state == "Established"


def _numbered(i: int, packet_id: int = 160) -> bytes:
    return bytes([packet_id]) + i.to_bytes(4, "big") + bytes(PACKET_SIZE - 5)


def _pump_from_toxcore(tox: ToxPeer, friend: int, count: int) -> None:
    """Send numbered packets from toxcore as fast as it accepts them (SENDQ: next iteration)."""
    i = 0
    while i < count:
        try:
            tox.send_lossless(friend, _numbered(i))
        except ToxError as exc:
            if not exc.code_name.endswith("SENDQ"):
                raise
            seen = tox.stats().iterations
            tox.wait_for(lambda s=seen: tox.stats().iterations > s, 10, "next tox_iterate")
            continue
        i += 1


@pytest.mark.slow
async def test_bulk_lossless_both_ways(
    tox: ToxPeer, linked: tuple[MessengerNode, int, int]
) -> None:
    node, friend, tox_friend = linked
    expected = hashlib.sha256(b"".join(_numbered(i) for i in range(BULK_PACKETS))).hexdigest()

    # Ours -> toxcore.
    start = trio.current_time()
    with trio.fail_after(120):
        for i in range(BULK_PACKETS):
            await node.send_custom_lossless(friend, _numbered(i))
        packets = await tox.await_for(
            lambda: (p := tox.events(FriendLosslessPacket)) and len(p) >= BULK_PACKETS and p,
            120,
        )
    elapsed_out = trio.current_time() - start
    data = [p.data for p in packets]
    assert [int.from_bytes(d[1:5], "big") for d in data] == list(range(BULK_PACKETS))
    assert hashlib.sha256(b"".join(data)).hexdigest() == expected

    # toxcore -> ours.
    start = trio.current_time()
    await trio.to_thread.run_sync(_pump_from_toxcore, tox, tox_friend, BULK_PACKETS)
    with trio.fail_after(120):
        await node.wait_for(
            lambda: sum(isinstance(e, CustomLossless) for e in node.received) >= BULK_PACKETS
        )
    elapsed_in = trio.current_time() - start
    got = [e.data for e in node.take(CustomLossless)]
    assert [int.from_bytes(d[1:5], "big") for d in got] == list(range(BULK_PACKETS))
    assert hashlib.sha256(b"".join(got)).hexdigest() == expected
    mb = BULK_PACKETS * PACKET_SIZE / 1e6
    print(f"ours->toxcore {mb / elapsed_out:.1f} MB/s, toxcore->ours {mb / elapsed_in:.1f} MB/s")
    assert node.messenger.friend_state(friend) is FriendState.ONLINE


class LossyProxy:
    """A UDP relay between our node and toxcore that drops and reorders (seeded)."""

    def __init__(self, sock: trio.socket.SocketType, ours: Addr, theirs: Addr, seed: int) -> None:
        self.sock = sock
        self.ours = ours
        self.theirs = theirs
        self.rng = random.Random(seed)
        self.loss = 0.05
        self.reorder = 0.05
        self.dropped = 0
        self.delayed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                data, addr = await self.sock.recvfrom(2048)
                dest = self.theirs if tuple(addr[:2]) == self.ours else self.ours
                if self.rng.random() < self.loss:
                    self.dropped += 1
                elif self.rng.random() < self.reorder:
                    self.delayed += 1
                    nursery.start_soon(self._later, data, dest, self.rng.uniform(0.002, 0.02))
                else:
                    await self.sock.sendto(data, dest)

    async def _later(self, data: bytes, dest: Addr, delay: float) -> None:
        await trio.sleep(delay)  # the simulated path delay itself
        await self.sock.sendto(data, dest)


@pytest.mark.slow
async def test_bulk_through_5_percent_loss_and_reordering(tox: ToxPeer) -> None:
    real = _our_keys()
    tox_friend = tox.friend_add_norequest(real.public_key)
    messenger = Messenger(NetCrypto(real, KeyPair.generate(os.urandom), os.urandom))
    port, proxy_port = PORTS.allocate(2)
    bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
    proxy_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await proxy_sock.bind(("127.0.0.1", proxy_port))
    proxy = LossyProxy(proxy_sock, ("127.0.0.1", port), ("127.0.0.1", tox.udp_port), seed=5)
    node = MessengerNode(messenger, bound)
    count = 4000
    count_in = 600
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            await nursery.start(node.run)
            friend = messenger.add_friend_norequest(
                tox.public_key, node.now(), dht_pk=tox.dht_id, udp_addr=("127.0.0.1", proxy_port)
            )
            node.kick()
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await node.wait_for(lambda: node.take(FriendOnline))
            with trio.fail_after(120):
                for i in range(count):
                    await node.send_custom_lossless(friend, _numbered(i))
                packets = await tox.await_for(
                    lambda: (p := tox.events(FriendLosslessPacket)) and len(p) >= count and p,
                    120,
                )
            assert [int.from_bytes(p.data[1:5], "big") for p in packets] == list(range(count))
            # toxcore's own congestion control crawls under random loss (every resend counts
            # as congestion), so the incoming direction moves fewer packets.
            await trio.to_thread.run_sync(_pump_from_toxcore, tox, tox_friend, count_in)
            with trio.fail_after(120):
                await node.wait_for(
                    lambda: sum(isinstance(e, CustomLossless) for e in node.received) >= count_in
                )
            got = [int.from_bytes(e.data[1:5], "big") for e in node.take(CustomLossless)]
            assert got == list(range(count_in))
            assert proxy.dropped > 150
            assert proxy.delayed > 150
            stats = messenger.statistics(friend).session
            assert stats is not None
            assert stats.resent_packets > 0
            assert messenger.friend_state(friend) is FriendState.ONLINE
            nursery.cancel_scope.cancel()
    finally:
        bound.close()
        proxy_sock.close()


async def test_over_tcp_relay_only(tmp_path: Path) -> None:
    """No UDP between us and toxcore: net_crypto via a real tox-bootstrapd TCP relay."""
    udp_port, tcp_port = PORTS.allocate(2)
    with Bootstrapd(tmp_path / "bsd", udp_port, (tcp_port,)) as bsd:
        tox = ToxPeer("toxcore-tcp", udp=False)
        try:
            tox.add_tcp_relay("127.0.0.1", tcp_port, bsd.public_key)
            real = _our_keys()
            tox_friend = tox.friend_add_norequest(real.public_key)
            messenger = Messenger(NetCrypto(real, KeyPair.generate(os.urandom), os.urandom))
            port = PORTS.allocate_one()
            bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
            node = MessengerNode(messenger, bound)
            relays = node.enable_relays()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    relays.add_relay("127.0.0.1", tcp_port, bsd.public_key)
                    relays.add_peer(tox.dht_id)
                    friend = messenger.add_friend_norequest(
                        tox.public_key, node.now(), dht_pk=tox.dht_id
                    )
                    node.kick()
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        await node.wait_for(lambda: node.take(FriendOnline))
                    status = await tox.await_friend_connected(tox_friend, CONNECT_TIMEOUT_S)
                    assert status is Connection.TCP
                    node.send_message(friend, b"via the relay")
                    got = await tox.await_event(FriendMessage, DELIVERY_TIMEOUT_S)
                    assert got.message == b"via the relay"
                    tox.send_lossless(tox_friend, b"\xa0back")
                    tox.send_lossy(tox_friend, b"\xc8lossy back")
                    with trio.fail_after(DELIVERY_TIMEOUT_S):
                        back = await node.wait_for(lambda: node.take(CustomLossless))
                        lossy = await node.wait_for(lambda: node.take(CustomLossy))
                    assert back == [CustomLossless(friend, b"\xa0back")]
                    assert lossy == [CustomLossy(friend, b"\xc8lossy back")]
                    # Bulk both ways. ours -> toxcore stays small: a toxcore client flooded
                    # by its relay can deadlock (it waits for whole frames while its receive
                    # buffer is full; the same stall is seen toxcore-to-toxcore), and in this
                    # test toxcore shares the process (and the GIL) with us.
                    count_out, count_in = 300, 1000
                    with trio.fail_after(60):
                        for i in range(count_out):
                            await node.send_custom_lossless(friend, _numbered(i))
                        packets = await tox.await_for(
                            lambda: (
                                (p := tox.events(FriendLosslessPacket))
                                and len(p) >= count_out
                                and p
                            ),
                            60,
                        )
                    seqs = [int.from_bytes(p.data[1:5], "big") for p in packets]
                    assert seqs == list(range(count_out))
                    await trio.to_thread.run_sync(_pump_from_toxcore, tox, tox_friend, count_in)
                    with trio.fail_after(60):
                        await node.wait_for(
                            lambda: (
                                sum(isinstance(e, CustomLossless) for e in node.received)
                                >= count_in
                            )
                        )
                    got = [int.from_bytes(e.data[1:5], "big") for e in node.take(CustomLossless)]
                    assert got == list(range(count_in))
                    nursery.cancel_scope.cancel()
            finally:
                bound.close()
        finally:
            tox.kill()


@pytest.mark.slow
async def test_100_mb_both_ways_at_once(
    tox: ToxPeer, linked: tuple[MessengerNode, int, int]
) -> None:
    """The issue's bulk check: 100 MB each way, simultaneously, complete and in order."""
    node, friend, tox_friend = linked
    count = 100_000_000 // PACKET_SIZE + 1
    digest = hashlib.sha256()
    for i in range(count):
        digest.update(_numbered(i))
    expected = digest.hexdigest()

    async def ours_to_toxcore() -> None:
        for i in range(count):
            await node.send_custom_lossless(friend, _numbered(i))

    received: list[bytes] = []

    def drain() -> bool:
        for event in node.take(CustomLossless):
            received.append(event.data)
        return len(received) >= count

    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ours_to_toxcore)
            nursery.start_soon(trio.to_thread.run_sync, _pump_from_toxcore, tox, tox_friend, count)
            await node.wait_for(drain)
        await tox.await_for(lambda: tox.stats().lossless_packets >= count, 240)
    data = [p.data for p in tox.events(FriendLosslessPacket)]
    assert len(data) == count
    assert [int.from_bytes(d[1:5], "big") for d in data] == list(range(count))
    assert hashlib.sha256(b"".join(data)).hexdigest() == expected
    assert [int.from_bytes(d[1:5], "big") for d in received] == list(range(count))
    assert hashlib.sha256(b"".join(received)).hexdigest() == expected
    assert node.messenger.friend_state(friend) is FriendState.ONLINE


async def test_kill_then_reconnect(tox: ToxPeer, linked: tuple[MessengerNode, int, int]) -> None:
    """We close the session (kill packet); toxcore sees us go offline; we reconnect."""
    node, friend, tox_friend = linked
    messenger = node.messenger
    since = tox.event_count()
    messenger.netcrypto.kill(tox.public_key, node.now())
    node.kick()
    with trio.fail_after(CONNECT_TIMEOUT_S):
        await node.wait_for(lambda: node.take(FriendOffline))
    await tox.await_for(
        lambda: tox.friend_connection_status(tox_friend) is Connection.NONE, DELIVERY_TIMEOUT_S
    )
    with trio.fail_after(CONNECT_TIMEOUT_S):
        await node.wait_for(lambda: node.take(FriendOnline))
    assert await tox.await_friend_connected(tox_friend, CONNECT_TIMEOUT_S) is Connection.UDP
    node.send_message(friend, b"back again")
    got = await tox.await_event(FriendMessage, DELIVERY_TIMEOUT_S, since=since)
    assert got.message == b"back again"


async def test_toxcore_drops_us_then_takes_us_back(
    tox: ToxPeer, linked: tuple[MessengerNode, int, int]
) -> None:
    """toxcore deletes us (its kill packet reaches us), re-adds us; we reconnect on our own."""
    node, friend, tox_friend = linked
    tox.friend_delete(tox_friend)
    with trio.fail_after(DELIVERY_TIMEOUT_S):
        await node.wait_for(lambda: node.take(FriendOffline))
    assert node.messenger.friend_state(friend) is FriendState.CONFIRMED
    again = tox.friend_add_norequest(node.messenger.netcrypto.ident.real.public_key)
    with trio.fail_after(CONNECT_TIMEOUT_S):
        await node.wait_for(lambda: node.take(FriendOnline))
    assert await tox.await_friend_connected(again, CONNECT_TIMEOUT_S) is Connection.UDP
