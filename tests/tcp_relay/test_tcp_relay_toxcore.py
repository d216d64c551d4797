"""Interop with real c-toxcore 0.2.18 (tox-bootstrapd's relay, libtoxcore peers on our relay)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.io.proxy import ProxyConfig
from tunnel.io.tcp_relay import RelayPoolDriver, TcpOnionBridge, TcpRelayServer, serve_tcp_relay
from tunnel.io.udp import BoundSocket, UdpDriver, open_udp_socket
from tunnel.onion.relay import OnionRelay
from tunnel.tcp_relay.connections import (
    OobData,
    PeerData,
    PeerOnline,
    RelayConnected,
    RelayPong,
)
from tunnel.tcp_relay.server import ServerLimits
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.proxies import Microsocks
from tunnel.testing.toxcore import Connection, FriendLosslessPacket, ToxPeer

from .pool_events import wait_event

pytestmark = pytest.mark.toxcore


@pytest.fixture
def bsd_with_relay(relay_ports: PortPool, tmp_path: Path) -> Iterator[Bootstrapd]:
    udp_port, tcp_port = relay_ports.allocate(2)
    with Bootstrapd(tmp_path, udp_port, (tcp_port,), name="bsd-relay") as bsd:
        yield bsd


async def test_our_client_handshakes_pings_and_routes_through_tox_bootstrapd(
    bsd_with_relay: Bootstrapd,
) -> None:
    """Handshake, ping/pong, routing, data and OOB between two of our clients via real relay."""
    bsd = bsd_with_relay
    port = bsd.tcp_ports[0]
    async with trio.open_nursery() as nursery:
        a = RelayPoolDriver(KeyPair.generate(os.urandom))
        b = RelayPoolDriver(KeyPair.generate(os.urandom))
        for d in (a, b):
            await nursery.start(d.run)
            d.add_relay(bsd.host, port, bsd.public_key)
        for d in (a, b):
            await wait_event(d, lambda e: isinstance(e, RelayConnected))
        # our first ping is sent right after the handshake: its pong proves framing both ways
        pong = await wait_event(a, lambda e: isinstance(e, RelayPong))
        assert isinstance(pong, RelayPong)
        assert pong.relay == bsd.public_key
        assert a.pool.relays()[0].last_rtt_s == pong.rtt_s
        # OOB before routing, then a routed link both ways
        a_pk, b_pk = a.pool.self_keys.public_key, b.pool.self_keys.public_key
        assert a.send_to_peer(b_pk, b"\x18oob-cookie-request")
        ev = await wait_event(b, lambda e: isinstance(e, OobData))
        assert isinstance(ev, OobData)
        assert (ev.sender, ev.data) == (a_pk, b"\x18oob-cookie-request")
        a.add_peer(b_pk)
        b.add_peer(a_pk)
        await wait_event(a, lambda e: isinstance(e, PeerOnline))
        await wait_event(b, lambda e: isinstance(e, PeerOnline))
        for i in range(20):
            payload = b"\x1b" + bytes([i]) * 1399
            assert a.send_to_peer(b_pk, payload)
            got = await wait_event(b, lambda e: isinstance(e, PeerData))
            assert isinstance(got, PeerData)
            assert got.data == payload
        assert b.send_to_peer(a_pk, b"\x1breply")
        got = await wait_event(a, lambda e: isinstance(e, PeerData))
        assert isinstance(got, PeerData)
        assert got.data == b"\x1breply"
        assert all(r.confirmed for r in a.pool.relays() + b.pool.relays())
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_toxcore_peers_become_friends_over_our_relay(
    relay_ports: PortPool, tmp_path: Path
) -> None:
    """Two TCP-only libtoxcore peers whose only relay is ours: friends, lossless packets.

    The tox-bootstrapd has NO TCP relay: it is only the onion path (UDP). With UDP off, the
    peers reach the onion through our relay acting as onion node A (TCP 0x08/0x09), announce,
    find each other, and their net_crypto (OOB cookie/handshake, then routed data) must cross
    our relay.
    """
    bsd_udp, relay_port, onion_udp = relay_ports.allocate(3)
    relay_keys = KeyPair.generate(os.urandom)
    peers: list[ToxPeer] = []
    sockets: list[BoundSocket] = []
    with Bootstrapd(tmp_path, bsd_udp, (), name="bsd-no-relay") as bsd:
        try:
            async with trio.open_nursery() as nursery:
                bridge = TcpOnionBridge(OnionRelay(relay_keys, os.urandom, trio.current_time()))
                relay: TcpRelayServer = await nursery.start(
                    lambda task_status: serve_tcp_relay(
                        relay_keys,
                        [relay_port],
                        host="127.0.0.1",
                        on_onion_request=bridge.on_onion_request,
                        task_status=task_status,
                    )
                )
                bridge.server = relay
                bound = await open_udp_socket("127.0.0.1", onion_udp, onion_udp, ipv6=False)
                sockets.append(bound)
                udp = UdpDriver(bridge, bound)
                bridge.kick = udp.kick
                await nursery.start(udp.run)

                for name in ("alice", "bob"):
                    peer = ToxPeer(name, udp=False)
                    peers.append(peer)
                    peer.bootstrap(bsd.host, bsd.udp_port, bsd.public_key)
                    peer.add_tcp_relay("127.0.0.1", relay_port, relay_keys.public_key)
                alice, bob = peers
                alice.friend_add(bob.address, "over our relay")
                status = await alice.await_friend_connected(0, 60.0)
                assert status is Connection.TCP
                assert await bob.await_friend_connected(0, 60.0) is Connection.TCP
                for i in range(50):
                    alice.send_lossless(0, bytes([160]) + i.to_bytes(4, "big") + bytes(1000))
                got = await bob.await_for(
                    lambda: len(bob.events(FriendLosslessPacket)) >= 50 or None,
                    30.0,
                    "50 lossless packets",
                )
                assert got
                seqs = [
                    int.from_bytes(e.data[1:5], "big") for e in bob.events(FriendLosslessPacket)
                ]
                assert seqs == list(range(50))
                st = relay.statistics()
                assert st.clients == 2
                assert st.links_made >= 1
                assert st.onion_requests > 0
                assert bridge.responses_delivered > 0
                assert st.routed_bytes > 50 * 1000  # the lossless data crossed our relay
                nursery.cancel_scope.cancel()
        finally:
            for peer in peers:
                peer.kill()
            for bound_socket in sockets:
                bound_socket.close()


@pytest.mark.skipif(not Microsocks.available(), reason="microsocks missing")
async def test_our_client_reaches_tox_bootstrapd_relay_through_socks5(
    bsd_with_relay: Bootstrapd, relay_ports: PortPool, tmp_path: Path
) -> None:
    """The "over Tor" path: SOCKS5 (with auth) in front of a real toxcore relay."""
    bsd = bsd_with_relay
    port = bsd.tcp_ports[0]
    with Microsocks(
        tmp_path, relay_ports.allocate_one(), username="tox", password="relay"
    ) as socks:
        async with trio.open_nursery() as nursery:
            a = RelayPoolDriver(KeyPair.generate(os.urandom), proxy=ProxyConfig.parse(socks.url()))
            b = RelayPoolDriver(KeyPair.generate(os.urandom))
            for d in (a, b):
                await nursery.start(d.run)
                d.add_relay(bsd.host, port, bsd.public_key)
            await wait_event(a, lambda e: isinstance(e, RelayPong))
            a.add_peer(b.pool.self_keys.public_key)
            b.add_peer(a.pool.self_keys.public_key)
            await wait_event(b, lambda e: isinstance(e, PeerOnline))
            assert b.send_to_peer(a.pool.self_keys.public_key, b"\x1bthrough socks")
            got = await wait_event(a, lambda e: isinstance(e, PeerData))
            assert isinstance(got, PeerData)
            assert got.data == b"\x1bthrough socks"
            nursery.cancel_scope.cancel()
        assert socks.tunnels_to(port) == 1, socks.log_text()


async def test_real_toxcore_client_answers_our_relay_pings(relay_ports: PortPool) -> None:
    """A libtoxcore client on our relay: handshake, confirmation, and pongs to our pings."""
    relay_keys = KeyPair.generate(os.urandom)
    port = relay_ports.allocate_one()
    peer: ToxPeer | None = None
    try:
        async with trio.open_nursery() as nursery:
            relay: TcpRelayServer = await nursery.start(
                lambda task_status: serve_tcp_relay(
                    relay_keys,
                    [port],
                    host="127.0.0.1",
                    limits=ServerLimits(ping_interval_s=1.0, ping_timeout_s=2.0),
                    task_status=task_status,
                )
            )
            peer = ToxPeer("pinged", udp=False)
            peer.add_tcp_relay("127.0.0.1", port, relay_keys.public_key)
            with trio.fail_after(20):
                # no event exists for "the relay got a pong": poll its counters
                while relay.statistics().pongs_received < 3:  # noqa: ASYNC110
                    await trio.sleep(0.1)
            st = relay.statistics()
            assert st.clients == 1
            assert st.closed_timeout == 0
            assert st.closed_bad_input == 0
            assert peer.dht_id in relay.core.client_handles()  # toxcore uses its DHT key
            nursery.cancel_scope.cancel()
    finally:
        if peer is not None:
            peer.kill()
