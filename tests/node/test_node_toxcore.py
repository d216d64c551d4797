"""Our Node against REAL libtoxcore 0.2.18 on a local tox-bootstrapd (issues 6 and 7).

Nothing is shortcut: both sides find each other through the DHT and the onion (announce,
friend search, DHT-PK announcements, friend requests with nospam), then connect net_crypto
over UDP, or with UDP off on both sides, over the bootstrapd's TCP relay.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from tunnel.io.proxy import ProxyConfig
from tunnel.node import Node
from tunnel.node_types import (
    FriendConnected,
    FriendDhtKey,
    FriendRequest,
    LosslessPacket,
    LossyPacket,
    Message,
    NodeEvent,
    ReadReceipt,
)
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.proxies import Microsocks
from tunnel.testing.toxcore import (
    Connection,
    FriendLosslessPacket,
    FriendLossyPacket,
    FriendMessage,
    ToxPeer,
)
from tunnel.testing.toxcore_events import FriendRequest as ToxFriendRequest
from tunnel.testing.toxcore_factory import ToxPeerFactory

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

FIND_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 15.0
_E = TypeVar("_E")


async def next_event(
    events: trio.MemoryReceiveChannel[NodeEvent],
    kind: type[_E],
    predicate: Callable[[_E], bool] = lambda e: True,
    timeout: float = FIND_TIMEOUT_S,  # noqa: ASYNC109
) -> _E:
    with trio.fail_after(timeout):
        async for event in events:
            if isinstance(event, kind) and predicate(event):
                return event
    raise AssertionError("event channel closed")


async def exchange(
    node: Node, events: trio.MemoryReceiveChannel[NodeEvent], tox: ToxPeer, tox_friend: int
) -> None:
    """Messages, custom lossless and lossy packets both ways (with our read receipt)."""
    pk = tox.public_key
    message_id = node.send_message(pk, "hello from tunnel ✓".encode())
    got = await tox.await_event(FriendMessage, DELIVERY_TIMEOUT_S)
    assert got.message == "hello from tunnel ✓".encode()
    receipt = await next_event(events, ReadReceipt, timeout=DELIVERY_TIMEOUT_S)
    assert receipt == ReadReceipt(pk, message_id)

    tox.send_message(tox_friend, "hello from toxcore")
    message = await next_event(events, Message, timeout=DELIVERY_TIMEOUT_S)
    assert message == Message(pk, b"hello from toxcore", False)

    big = bytes([160]) + bytes(range(256)) * 5 + bytes(1373 - 1281)
    await node.send_lossless(pk, big)
    await node.send_lossless(pk, b"\xbfsmall")
    node.send_lossy(pk, b"\xc8" + b"L" * 1372)
    lossless = await tox.await_for(
        lambda: (p := tox.events(FriendLosslessPacket)) and len(p) >= 2 and p, DELIVERY_TIMEOUT_S
    )
    assert [p.data for p in lossless] == [big, b"\xbfsmall"]
    lossy = await tox.await_event(FriendLossyPacket, DELIVERY_TIMEOUT_S)
    assert lossy.data == b"\xc8" + b"L" * 1372

    tox.send_lossless(tox_friend, b"\xa5" + b"x" * 1372)
    got_lossless = await next_event(events, LosslessPacket, timeout=DELIVERY_TIMEOUT_S)
    assert got_lossless == LosslessPacket(pk, b"\xa5" + b"x" * 1372)
    # Lossy may be lost in principle; on loopback one of a few gets through.
    for _ in range(5):
        tox.send_lossy(tox_friend, b"\xfe" + b"y" * 100)
    got_lossy = await next_event(events, LossyPacket, timeout=DELIVERY_TIMEOUT_S)
    assert got_lossy == LossyPacket(pk, b"\xfe" + b"y" * 100)


async def befriend_both_ways(
    node: Node, make_tox: Callable[..., ToxPeer], expect: Connection
) -> None:
    events = node.subscribe()
    # 1. toxcore asks us: our event carries its message; we accept.
    alice = make_tox("alice", auto_accept=False)
    alice.friend_add(node.tox_id.to_bytes(), "hello from toxcore")
    request = await next_event(events, FriendRequest, lambda e: e.public_key == alice.public_key)
    assert request.message == b"hello from toxcore"
    node.accept_friend_request(alice.public_key)
    # 2. We ask another toxcore peer: its callback fires with our message (it auto-accepts).
    bob = make_tox("bob")
    node.add_friend(bob.address, b"hello from tunnel")
    tox_request = await bob.await_event(
        ToxFriendRequest, FIND_TIMEOUT_S, lambda e: e.public_key == node.public_key
    )
    assert tox_request.message == b"hello from tunnel"
    # Both friendships come up, on the expected path, seen from both ends.
    path = "udp" if expect is Connection.UDP else "tcp"
    online: dict[bytes, str] = {}
    with trio.fail_after(FIND_TIMEOUT_S):
        while len(online) < 2:
            event = await next_event(events, FriendConnected)
            online[event.public_key] = event.path
    assert set(online) == {alice.public_key, bob.public_key}
    # The event reports the path at that moment (a session may start on the relay and move
    # to direct UDP once the DHT finds the friend); it settles on the expected one.
    with trio.fail_after(FIND_TIMEOUT_S):
        for pk in online:
            await node.wait_for(lambda pk=pk: node.friend_path(pk) == path)
    for tox in (alice, bob):
        number = tox.friend_by_public_key(node.public_key)
        # toxcore too may report the relay first and move to UDP a moment later
        assert await tox.await_friend_connected(number, FIND_TIMEOUT_S, via=expect) is expect
        # The onion (or the handshake) told us the friend's DHT key.
        assert node.friend_dht_public_key(tox.public_key) == tox.dht_id
    assert set(node.friends()) == {alice.public_key, bob.public_key}
    await exchange(node, events, bob, bob.friend_by_public_key(node.public_key))
    await exchange(node, events, alice, alice.friend_by_public_key(node.public_key))
    stats = {f.public_key: f for f in node.statistics().friends}
    assert stats[bob.public_key].online
    assert stats[bob.public_key].path == path
    assert stats[bob.public_key].rtt_s is not None
    assert node.statistics().glue_errors == 0


async def test_node_and_toxcore_friends_over_udp(
    node_factory: Any, tox_peer_factory: ToxPeerFactory, bootstrapd: Bootstrapd
) -> None:
    async with node_factory("ours") as node:

        def make_tox(name: str, **kwargs: Any) -> ToxPeer:
            return tox_peer_factory(name, bootstrap=bootstrapd, **kwargs)

        await befriend_both_ways(node, make_tox, Connection.UDP)
        assert node.statistics().udp_port is not None
        assert node.statistics().dht_connected


async def test_node_and_toxcore_friends_tcp_only(
    node_factory: Any, tox_peer_factory: ToxPeerFactory, bootstrapd: Bootstrapd
) -> None:
    async with node_factory("ours-tcp", udp=False) as node:

        def make_tox(name: str, **kwargs: Any) -> ToxPeer:
            return tox_peer_factory(name, bootstrap=bootstrapd, udp=False, **kwargs)

        await befriend_both_ways(node, make_tox, Connection.TCP)
        stats = node.statistics()
        assert stats.udp_port is None
        assert stats.udp_datagrams_sent == 0
        assert stats.tcp_relays_connected == 1


async def test_dht_keys_learned_through_the_onion_both_ways(
    node_factory: Any,
    tox_peer_factory: ToxPeerFactory,
    bootstrapd: Bootstrapd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each side learns the other's DHT key from DHT-PK announcements (onion / DHT route).

    Our node is kept from ever starting net_crypto itself, so the friend connection can only
    come up if toxcore sent its cookie request to our DHT key: it learnt it from us. Our node
    also drops toxcore's handshakes until its onion client learnt toxcore's DHT key (toxcore
    resends them): our fast start lets toxcore find us first, and an accepted handshake would
    teach us the key before toxcore's own announcement arrives.
    """
    async with node_factory("ours-dhtpk") as node:
        monkeypatch.setattr(node.messenger.connections, "_maybe_connect", lambda *_: None)
        events = node.subscribe()
        tox = tox_peer_factory("carol", bootstrap=bootstrapd)
        real_handshake = node.netcrypto._handle_handshake

        def held_handshake(*args: Any) -> None:
            if node.onion.friend_dht_public_key(tox.public_key) is not None:
                real_handshake(*args)

        monkeypatch.setattr(node.netcrypto, "_handle_handshake", held_handshake)
        tox_friend = tox.friend_add_norequest(node.public_key)
        node.add_friend_norequest(tox.public_key)
        learned = await next_event(events, FriendDhtKey)
        assert learned == FriendDhtKey(tox.public_key, tox.dht_id)
        # learnt through the onion/DHT announcement, not from a session
        assert node.onion.friend_dht_public_key(tox.public_key) == tox.dht_id
        connected = await next_event(events, FriendConnected)
        assert connected.public_key == tox.public_key
        assert node.netcrypto.counters["cookie_responses_sent"] >= 1
        status = await tox.await_friend_connected(tox_friend, FIND_TIMEOUT_S)
        assert status in (Connection.UDP, Connection.TCP)


async def test_node_through_socks5_proxy(
    node_factory: Any,
    tox_peer_factory: ToxPeerFactory,
    bootstrapd: Bootstrapd,
    port_pool: PortPool,
    tmp_path: Path,
) -> None:
    """With a proxy, UDP is off and the relay connection goes through the SOCKS5 proxy."""
    with Microsocks(tmp_path, port_pool.allocate_one()) as proxy:
        options = {"proxy": ProxyConfig.parse(proxy.url())}
        async with node_factory("ours-proxy", **options) as node:
            assert node.udp_port is None
            events = node.subscribe()
            tox = tox_peer_factory("erin", bootstrap=bootstrapd, udp=False)
            tox.friend_add(node.tox_id.to_bytes(), "via the proxy")
            request = await next_event(events, FriendRequest)
            assert request == FriendRequest(tox.public_key, b"via the proxy")
            node.accept_friend_request(tox.public_key)
            connected = await next_event(events, FriendConnected)
            assert connected == FriendConnected(tox.public_key, "tcp")
            number = tox.friend_by_public_key(node.public_key)
            assert await tox.await_friend_connected(number, FIND_TIMEOUT_S) is Connection.TCP
            tox.send_message(number, "over tcp")
            message = await next_event(events, Message, timeout=DELIVERY_TIMEOUT_S)
            assert message.text == b"over tcp"
            assert proxy.tunnels_to(bootstrapd.tcp_ports[0]) >= 1


async def test_dual_stack_node_joins_an_ipv4_network(node_factory: Any) -> None:
    """The default socket (``::``, IPv4-mapped) reaches the IPv4 bootstrapd and is answered."""
    async with node_factory("ours-dual", udp_host=None, ipv6=True) as node:
        with trio.fail_after(DELIVERY_TIMEOUT_S):
            await node.wait_for(lambda: node.statistics().dht_connected)
        assert node.statistics().udp_datagrams_received > 0
