"""Our onion against real c-toxcore 0.2.18 (libtoxcore) on loopback (tox-protocol.md 5).

* A libtoxcore peer whose only bootstrap node is our ``tunnel bootstrapd`` (with the onion
  relay + announce store plugged in) reaches self-connection status != NONE: it built paths
  through our relay, announced to our store and was told it is stored.
* Friend requests both ways between a libtoxcore peer and our onion client, which announces
  itself and searches through real toxcore relays and announce nodes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from tunnel.commands import bootstrapd
from tunnel.config import BootstrapdConfig
from tunnel.crypto import KeyPair
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.dht.events import DhtRequestReceived
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.onion.announce_store import OnionAnnounceStore
from tunnel.onion.client import (
    FriendDhtKeyLearned,
    FriendRequestReceived,
    OnionClient,
    OnionEvent,
    OnionHooks,
)
from tunnel.onion.relay import OnionRelay
from tunnel.onion.stack import ONION_PACKET_KINDS, OnionStack, bootstrapd_core_factory
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_events import FriendRequest
from tunnel.toxid import ToxId
from tunnel.wire.onion import ONION_DATA_DHTPK

pytestmark = pytest.mark.toxcore

PORTS = PortPool(44500, 44999)
LOCALHOST = "127.0.0.1"
TIMEOUT_S = 90.0


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


def start_peer(stack: ExitStack, name: str, *, auto_accept: bool = True) -> ToxPeer:
    peer = ToxPeer(name, start_port=PORTS.allocate_one(), auto_accept=auto_accept)
    stack.callback(peer.kill)
    return peer


@asynccontextmanager
async def our_bootstrapd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[int, KeyPair, OnionStack]]:
    """``tunnel bootstrapd`` in-process with the onion roles plugged in."""
    port = PORTS.allocate_one()
    keys = KeyPair.generate(SeededRng("onion-bsd"))
    made: list[OnionStack] = []

    def factory(context: bootstrapd.BootstrapdContext) -> tuple[frozenset[int], OnionStack]:
        kinds, core = bootstrapd_core_factory(context, trio.current_time())
        made.append(core)
        return kinds, core

    monkeypatch.setattr(bootstrapd, "CORE_FACTORIES", [factory])
    config = BootstrapdConfig(
        keys_file=tmp_path / "unused.keys", port=port, ipv6=False, motd="onion", tcp_relay_ports=()
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bootstrapd.serve, config, keys)
        yield port, keys, made[0]
        nursery.cancel_scope.cancel()


class OurNode:
    """DHT + onion relay/store/client on one UDP socket, with the glue a node needs."""

    def __init__(self, dht: DhtCore, client: OnionClient, driver: UdpDriver) -> None:
        self.dht = dht
        self.client = client
        self.driver = driver
        self.events: list[OnionEvent] = []

    async def pump(self) -> None:
        while True:
            now = trio.current_time()
            while (event := self.client.next_event()) is not None:
                self.events.append(event)
                if isinstance(event, FriendDhtKeyLearned):
                    self.dht.add_friend(event.dht_public_key, now)
            while (dht_event := self.dht.next_event()) is not None:
                if (
                    isinstance(dht_event, DhtRequestReceived)
                    and dht_event.request_id == ONION_DATA_DHTPK
                ):
                    self.client.handle_dht_dhtpk(dht_event.sender_pk, dht_event.data, now)
            for friend_dht_pk, data in self.client.dht_dhtpk_to_send():
                packet = self.dht.send_dht_request(friend_dht_pk, ONION_DATA_DHTPK, data)
                self.dht.route_to_friend(friend_dht_pk, packet, now)
            self.driver.kick()
            await trio.sleep(0.1)


@asynccontextmanager
async def our_node(label: str, bootstrap: tuple[int, bytes]) -> AsyncIterator[OurNode]:
    port = PORTS.allocate_one()
    rng = SeededRng(f"onion-toxcore-{label}")
    now = trio.current_time()
    dht_keys, real_keys = KeyPair.generate(rng), KeyPair.generate(rng)
    dht = DhtCore(dht_keys, rng.fork("dht"), now=now)
    hooks = OnionHooks(
        random_dht_nodes=lambda n: dht.random_good_nodes(n, trio.current_time()),
        dht_connected=lambda: dht.is_connected(trio.current_time()),
        dhtpk_nodes=lambda: dht.get_close_nodes(dht_keys.public_key, 4),
    )
    client = OnionClient(real_keys, dht_keys, rng.fork("client"), now, hooks=hooks, nospam=rng(4))
    stack = OnionStack(
        OnionRelay(dht_keys, rng.fork("relay"), now),
        OnionAnnounceStore(
            dht_keys, rng.fork("store"), lambda pk, n: dht.get_close_nodes(pk, n, True)
        ),
        client,
    )
    bound = await open_udp_socket(LOCALHOST, port, port, ipv6=False)
    dispatcher = PacketDispatcher()
    dispatcher.register(PACKET_KINDS, dht)
    dispatcher.register(ONION_PACKET_KINDS, stack)
    driver = UdpDriver(dispatcher, bound)
    dht.bootstrap(bootstrap[1], (LOCALHOST, bootstrap[0]), now)
    node = OurNode(dht, client, driver)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            nursery.start_soon(node.pump)
            yield node
            nursery.cancel_scope.cancel()
    finally:
        bound.close()


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(TIMEOUT_S + 5):
        for _ in range(int(TIMEOUT_S / 0.1)):
            if predicate():
                return
            await trio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def test_toxcore_gets_onion_connected_through_tunnel_bootstrapd(
    stack: ExitStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with our_bootstrapd(tmp_path, monkeypatch) as (port, keys, onion):
        peer = start_peer(stack, "alice")
        peer.bootstrap(LOCALHOST, port, keys.public_key)
        status = await peer.await_self_connected(TIMEOUT_S)
        assert status.name in ("UDP", "TCP")
        assert onion.relay is not None
        assert onion.store is not None
        assert onion.relay.stats.requests_forwarded >= 3
        assert onion.relay.stats.responses_forwarded >= 3
        assert peer.public_key in onion.store.announced_keys(trio.current_time())
        assert onion.store.stats.dropped_decrypt == 0
        assert onion.store.stats.dropped_malformed == 0
        assert onion.relay.stats.dropped_malformed == 0


async def test_friend_requests_both_ways_with_toxcore(
    stack: ExitStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with our_bootstrapd(tmp_path, monkeypatch) as (port, keys, _onion):
        alice = start_peer(stack, "alice", auto_accept=False)
        bob = start_peer(stack, "bob")
        for peer in (alice, bob):
            peer.bootstrap(LOCALHOST, port, keys.public_key)
        async with our_node("ours", (port, keys.public_key)) as ours:
            await wait_until(lambda: ours.client.connected, "our onion client connected")
            await alice.await_self_connected(TIMEOUT_S)
            # Alice (toxcore) asks us.
            alice.friend_add(ours.client.tox_id.to_bytes(), b"hello from toxcore")
            await wait_until(
                lambda: (
                    FriendRequestReceived(alice.public_key, b"hello from toxcore") in ours.events
                ),
                "toxcore's friend request reaches us",
            )
            # We ask Bob (toxcore; Alice would ignore us: toxcore drops requests from keys
            # already in its friend list). Bob accepts automatically (friend_add_norequest).
            ours.client.send_friend_request(ToxId.from_bytes(bob.address), b"hello from tunnel")
            event = await bob.await_event(
                FriendRequest, TIMEOUT_S, lambda e: e.public_key == ours.client.real_keys.public_key
            )
            assert event.message == b"hello from tunnel"
            # Now friends on both sides: toxcore's DHT-PK announcement reaches us through the
            # onion (and ours reaches it).
            await wait_until(
                lambda: ours.client.friend_dht_public_key(bob.public_key) == bob.dht_id,
                "toxcore's DHT key learned through the onion",
            )
            assert ours.client.stats.dropped_decrypt == 0
            assert ours.client.stats.dropped_malformed == 0


async def test_toxcore_peers_befriend_through_tunnel_bootstrapd(
    stack: ExitStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two libtoxcore peers whose only bootstrap node is ours find each other (onion search,
    friend request, DHT-PK) and connect; our relay and store carry part of that traffic."""
    async with our_bootstrapd(tmp_path, monkeypatch) as (port, keys, onion):
        alice = start_peer(stack, "alice")
        bob = start_peer(stack, "bob")
        for peer in (alice, bob):
            peer.bootstrap(LOCALHOST, port, keys.public_key)
        await alice.await_self_connected(TIMEOUT_S)
        friend = alice.friend_add(bob.address, "via tunnel bootstrapd")
        await bob.await_event(FriendRequest, TIMEOUT_S, lambda e: e.public_key == alice.public_key)
        await alice.await_friend_connected(friend, TIMEOUT_S)
        assert onion.store is not None
        assert onion.relay is not None
        assert onion.store.stats.announce_requests > 0
        assert onion.store.stats.data_forwarded > 0  # toxcore's 0x85 via our store
        assert onion.relay.stats.requests_forwarded > 0
        assert onion.store.stats.dropped_decrypt == 0
        assert onion.relay.stats.dropped_decrypt == 0


async def test_our_client_in_a_toxcore_network(stack: ExitStack, tmp_path: Path) -> None:
    """Only real toxcore around (tox-bootstrapd + libtoxcore peers): our client announces on
    toxcore announce nodes through toxcore relays, gets onion-connected, and exchanges friend
    requests with a toxcore peer."""
    bsd = Bootstrapd(tmp_path / "bsd", PORTS.allocate_one())
    stack.enter_context(bsd)
    peers = [start_peer(stack, name) for name in ("carol", "dave", "erin")]
    for peer in peers:
        peer.bootstrap(LOCALHOST, bsd.udp_port, bsd.public_key)
    carol = peers[0]
    async with our_node("in-toxcore-net", (bsd.udp_port, bsd.public_key)) as ours:
        await wait_until(lambda: ours.client.connected, "our client onion-connected")
        stored = [n for n in ours.client.self_nodes if n.is_stored]
        assert stored
        ours.client.send_friend_request(ToxId.from_bytes(carol.address), b"from tunnel")
        event = await carol.await_event(
            FriendRequest, TIMEOUT_S, lambda e: e.public_key == ours.client.real_keys.public_key
        )
        assert event.message == b"from tunnel"
        await wait_until(
            lambda: ours.client.friend_dht_public_key(carol.public_key) == carol.dht_id,
            "carol's DHT key learned through the onion",
        )
        assert ours.client.stats.dropped_decrypt == 0
        assert ours.client.stats.dropped_malformed == 0
