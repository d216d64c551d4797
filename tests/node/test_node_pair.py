"""Two of our Nodes befriend each other through a real tox-bootstrapd and exchange data;
a node restarted from its saved profile finds its friend again."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tunnel.node_types import (
    FriendConnected,
    FriendDisconnected,
    FriendRequest,
    LosslessPacket,
    LossyPacket,
    Message,
)
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.wire.savedata import FRIEND_STATUS_CONFIRMED

from .test_node_toxcore import FIND_TIMEOUT_S, next_event

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

BULK_PACKETS = 300


async def test_two_nodes_befriend_and_exchange(node_factory: Any, bootstrapd: Bootstrapd) -> None:
    async with node_factory("a") as a, node_factory("b") as b:
        a_events, b_events = a.subscribe(), b.subscribe()
        a.add_friend(b.tox_id, b"hi b, it's a")
        request = await next_event(b_events, FriendRequest)
        assert request == FriendRequest(a.public_key, b"hi b, it's a")
        assert b.pending_friend_requests() == {a.public_key: b"hi b, it's a"}
        b.accept_friend_request(a.public_key)
        await next_event(a_events, FriendConnected, lambda e: e.public_key == b.public_key)
        await next_event(b_events, FriendConnected, lambda e: e.public_key == a.public_key)
        assert a.friend_dht_public_key(b.public_key) == b.dht_public_key
        assert b.friend_dht_public_key(a.public_key) == a.dht_public_key

        a.send_message(b.public_key, b"ping")
        assert await next_event(b_events, Message) == Message(a.public_key, b"ping", False)
        b.send_message(a.public_key, b"pong", action=True)
        assert await next_event(a_events, Message) == Message(b.public_key, b"pong", True)

        # Lossless: many full-size packets, complete and in order (back-pressure, no drops).
        async def pump() -> None:
            for i in range(BULK_PACKETS):
                await a.send_lossless(b.public_key, b"\xa0" + i.to_bytes(4, "big") + bytes(1368))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            got: list[int] = []
            with trio.fail_after(FIND_TIMEOUT_S):
                while len(got) < BULK_PACKETS:
                    event = await next_event(b_events, LosslessPacket)
                    got.append(int.from_bytes(event.data[1:5], "big"))
        assert got == list(range(BULK_PACKETS))
        b.send_lossy(a.public_key, b"\xc8lossy")
        assert await next_event(a_events, LossyPacket) == LossyPacket(b.public_key, b"\xc8lossy")
        stranger = bytes(32)
        batch = [(a.public_key, b"\xc9one"), (stranger, b"\xc9x"), (a.public_key, b"\xc9two")]
        assert b.send_lossy_batch(batch) == 2
        got_lossy = [await next_event(a_events, LossyPacket) for _ in range(2)]
        assert sorted(e.data for e in got_lossy) == [b"\xc9one", b"\xc9two"]

        # Friends are in both profiles (saved, confirmed).
        for node, other in ((a, b), (b, a)):
            saved = Profile.load(node.profile.path)
            assert [(f.public_key, f.status) for f in saved.friends] == [
                (other.public_key, FRIEND_STATUS_CONFIRMED)
            ]

        # b shuts down gracefully: a sees it go offline at once (kill packet), not after 32 s,
        # and the friends do not reconnect while b is stopping.
        with trio.fail_after(5):
            await b.aclose()
            await next_event(a_events, FriendDisconnected, timeout=4)
        assert not a.is_online(b.public_key)
        assert not a.netcrypto.is_established(b.public_key)  # a keeps trying, in vain

        # b comes back from its profile (new DHT key) and a finds it again; the profile also
        # kept DHT nodes and the relay it was connected to, to start from next time.
        profile = Profile.load(b.profile.path)
        assert profile.savedata.dht_nodes
        (saved_a,) = profile.friends
        assert saved_a.name == b"a"
        assert saved_a.last_seen > 0
        assert [r.public_key for r in profile.savedata.tcp_relays] == [bootstrapd.public_key]
        async with node_factory("b2", profile=profile) as b2:
            assert b2.public_key == b.public_key
            assert b2.friends() == [a.public_key]
            await next_event(a_events, FriendConnected, lambda e: e.public_key == b.public_key)
            assert a.friend_dht_public_key(b.public_key) == b2.dht_public_key
            assert a.statistics().glue_errors == 0
            assert b2.statistics().glue_errors == 0


async def test_two_tcp_only_nodes_befriend_through_the_relay(node_factory: Any) -> None:
    async with node_factory("tcp-a", udp=False) as a, node_factory("tcp-b", udp=False) as b:
        a_events, b_events = a.subscribe(), b.subscribe()
        a.add_friend(b.tox_id, b"over the relay")
        assert await next_event(b_events, FriendRequest) == FriendRequest(
            a.public_key, b"over the relay"
        )
        b.accept_friend_request(a.public_key)
        assert await next_event(a_events, FriendConnected) == FriendConnected(b.public_key, "tcp")
        await next_event(b_events, FriendConnected)
        for i in range(50):
            await b.send_lossless(a.public_key, bytes([0xB0]) + i.to_bytes(2, "big"))
        for i in range(50):
            event = await next_event(a_events, LosslessPacket)
            assert event.data == bytes([0xB0]) + i.to_bytes(2, "big")
        assert a.statistics().udp_datagrams_sent == 0


async def test_fast_lossless_path_keeps_order_and_online_first(node_factory: Any) -> None:
    """Packets with fast-path ids skip friend_connection, the messenger and the glue: they
    still reach subscribers after the friend's FriendConnected, complete and in order, while
    other ids and messages keep the normal path; enabling it on a live friend works too."""
    async with node_factory("fa") as a, node_factory("fb") as b:
        b.enable_fast_lossless(frozenset({0xA2}))  # before the friend is online
        b_events = b.subscribe()
        a.add_friend_norequest(b.public_key)
        b.add_friend_norequest(a.public_key)
        with trio.fail_after(FIND_TIMEOUT_S):
            await a.wait_for(lambda: a.is_online(b.public_key))
            await b.wait_for(lambda: b.is_online(a.public_key))
        session = b.netcrypto.sessions[a.public_key]
        sink = session.lossless_sink
        assert sink is not None
        fast = 0

        def counting(payload: bytes) -> bool:
            nonlocal fast
            taken = sink(payload)
            fast += taken
            return taken

        session.lossless_sink = counting
        for i in range(BULK_PACKETS):
            await a.send_lossless(b.public_key, b"\xa2" + i.to_bytes(4, "big") + bytes(600))
            if i % 10 == 0:
                await a.send_lossless(b.public_key, b"\xa3" + i.to_bytes(4, "big"))
        a.send_message(b.public_key, b"after")
        seen: list[object] = []
        with trio.fail_after(FIND_TIMEOUT_S):
            async for event in b_events:
                seen.append(event)
                if isinstance(event, Message):
                    break
        online_at = next(i for i, e in enumerate(seen) if isinstance(e, FriendConnected))
        fast_packets = [e for e in seen if isinstance(e, LosslessPacket) and e.data[0] == 0xA2]
        slow_packets = [e for e in seen if isinstance(e, LosslessPacket) and e.data[0] == 0xA3]
        assert all(seen.index(e) > online_at for e in fast_packets)
        assert [int.from_bytes(e.data[1:5], "big") for e in fast_packets] == list(
            range(BULK_PACKETS)
        )
        assert [int.from_bytes(e.data[1:5], "big") for e in slow_packets] == list(
            range(0, BULK_PACKETS, 10)
        )
        assert fast == BULK_PACKETS  # every 0xA2 took the fast path, no 0xA3 did
        # enabling later installs on the sessions of friends already online
        a.enable_fast_lossless(frozenset({0xA3}))
        assert a.netcrypto.sessions[b.public_key].lossless_sink is not None
