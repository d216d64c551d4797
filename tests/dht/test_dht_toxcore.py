"""Our DHT against real c-toxcore 0.2.18 (tox-bootstrapd and libtoxcore) on loopback.

Knowledge of another node is checked from outside with a raw probe: a fresh key pair sends a
nodes request (0x02) for key K to node X and parses the answer. X returns the 4 good nodes it
knows closest to K, so K itself (distance 0) is in the answer exactly when X knows K.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from tunnel.commands.bootstrapd import serve
from tunnel.config import BootstrapdConfig
from tunnel.crypto import KeyPair, random_nonce, shared_key
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.errors import BadPacket
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.testing.toxcore import ToxPeer
from tunnel.wire.dht import (
    KIND_NODES_REQUEST,
    KIND_NODES_RESPONSE,
    BootstrapInfo,
    DhtPacket,
    NodesRequestPayload,
    NodesResponsePayload,
    bootstrap_info_request,
    seal_dht_packet,
)

pytestmark = pytest.mark.toxcore

PORTS = PortPool(42400, 42799)
LOCALHOST = "127.0.0.1"
TIMEOUT_S = 30.0


async def probe_knows(addr: tuple[str, int], node_pk: bytes, wanted_pk: bytes) -> bool:
    """Ask ``node_pk`` at ``addr`` for nodes close to ``wanted_pk``; is ``wanted_pk`` listed?"""
    rng = SeededRng(addr[1].to_bytes(4, "big") + wanted_pk)
    me = KeyPair.generate(rng)
    key = shared_key(node_pk, me.secret_key)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    try:
        await sock.bind((LOCALHOST, 0))
        ping_id = rng(8)
        plain = NodesRequestPayload(wanted_pk, ping_id).encode()
        await sock.sendto(
            seal_dht_packet(KIND_NODES_REQUEST, me.public_key, key, random_nonce(rng), plain), addr
        )
        with trio.move_on_after(1.0):
            while True:
                data, _ = await sock.recvfrom(2048)
                if not data or data[0] != KIND_NODES_RESPONSE:
                    continue  # e.g. the node pinging us back
                try:
                    packet = DhtPacket.decode_kind(data, KIND_NODES_RESPONSE)
                    response = NodesResponsePayload.decode(packet.open_untrusted(key))
                except BadPacket:
                    continue
                assert response.ping_id == ping_id
                return any(n.public_key == wanted_pk for n in response.nodes)
        return False
    finally:
        sock.close()


async def wait_probe(addr: tuple[str, int], node_pk: bytes, wanted_pk: bytes) -> None:
    with trio.fail_after(TIMEOUT_S):
        for _ in range(int(TIMEOUT_S * 2)):
            if await probe_knows(addr, node_pk, wanted_pk):
                return
            await trio.sleep(0.5)
    raise AssertionError(f"{node_pk.hex()[:8]} never listed {wanted_pk.hex()[:8]}")


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        for _ in range(int(TIMEOUT_S / 0.05) + 1):
            if predicate():
                return
            await trio.sleep(0.05)
    raise AssertionError(what)


@asynccontextmanager
async def our_node(label: str) -> AsyncIterator[tuple[DhtCore, int, UdpDriver]]:
    port = PORTS.allocate_one()
    rng = SeededRng(f"toxcore-interop-{label}")
    core = DhtCore(KeyPair.generate(rng), rng, now=trio.current_time())
    bound = await open_udp_socket(LOCALHOST, port, port, ipv6=False)
    dispatcher = PacketDispatcher()
    dispatcher.register(PACKET_KINDS, core)
    driver = UdpDriver(dispatcher, bound)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            yield core, port, driver
            nursery.cancel_scope.cancel()
    finally:
        bound.close()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as exit_stack:
        yield exit_stack


def start_bootstrapd(stack: ExitStack, tmp_path: Path) -> Bootstrapd:
    udp, tcp = PORTS.allocate(2)
    bsd = Bootstrapd(tmp_path / "bsd", udp, (tcp,))
    stack.enter_context(bsd)  # starts now, stopped even if the test fails
    return bsd


def start_peer(stack: ExitStack, name: str) -> ToxPeer:
    port = PORTS.allocate_one()
    peer = ToxPeer(name, start_port=port)
    stack.callback(peer.kill)
    return peer


async def test_our_node_bootstraps_from_tox_bootstrapd_and_is_listed(
    stack: ExitStack, tmp_path: Path
) -> None:
    bsd = start_bootstrapd(stack, tmp_path)
    bsd_addr = (LOCALHOST, bsd.udp_port)
    async with our_node("a") as (core, _port, driver):
        core.bootstrap(bsd.public_key, bsd_addr, trio.current_time())
        driver.kick()
        await wait_until(lambda: core.close.get(bsd.public_key) is not None, "bsd never answered")
        # The bootstrapd pings us (its ping_add); we answer, so it stores us and lists us.
        await wait_probe(bsd_addr, bsd.public_key, core.public_key)
        assert core.stats.pings_answered >= 1
        assert core.stats.dropped_decrypt == 0
        assert core.stats.dropped_malformed == 0


async def test_bootstrap_info_codec_matches_tox_bootstrapd(
    stack: ExitStack, tmp_path: Path
) -> None:
    bsd = start_bootstrapd(stack, tmp_path)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    try:
        await sock.bind((LOCALHOST, 0))
        with trio.fail_after(TIMEOUT_S):
            for _ in range(20):
                await sock.sendto(bootstrap_info_request(), (LOCALHOST, bsd.udp_port))
                with trio.move_on_after(0.5):
                    data, _ = await sock.recvfrom(2048)
                    break
            else:
                raise AssertionError("no bootstrap info reply")
    finally:
        sock.close()
    info = BootstrapInfo.decode(data)
    # Measured: the MOTD comes NUL-terminated and the version is 1000000000 + 2018.
    assert info.motd == bsd.motd.encode() + b"\0"
    assert info.version == 1_000_002_018


async def test_toxcore_peers_bootstrap_only_through_tunnel_bootstrapd(
    stack: ExitStack, tmp_path: Path
) -> None:
    port = PORTS.allocate_one()
    keys = KeyPair.generate(SeededRng("bsd-ours"))
    config = BootstrapdConfig(
        keys_file=tmp_path / "unused.keys",
        port=port,
        ipv6=False,
        motd="ours",
        tcp_relay_ports=(),
    )
    async with trio.open_nursery() as nursery:
        _, dht = await nursery.start(serve, config, keys)
        alice = start_peer(stack, "alice")
        bob = start_peer(stack, "bob")
        alice.bootstrap(LOCALHOST, port, keys.public_key)
        bob.bootstrap(LOCALHOST, port, keys.public_key)
        alice_dht, bob_dht = alice.dht_id, bob.dht_id
        # Both answered our pings / nodes requests: they are in our close list.
        await wait_until(
            lambda: dht.close.get(alice_dht) is not None and dht.close.get(bob_dht) is not None,
            "toxcore peers never entered our close list",
        )
        # Each learned the other through us (we are their only bootstrap node).
        await wait_probe((LOCALHOST, alice.udp_port), alice_dht, bob_dht)
        await wait_probe((LOCALHOST, bob.udp_port), bob_dht, alice_dht)
        # And each lists us: our answers to their pings and nodes requests counted.
        await wait_probe((LOCALHOST, alice.udp_port), alice_dht, keys.public_key)
        assert dht.stats.nodes_answered >= 1
        assert dht.stats.pings_answered >= 1
        assert dht.stats.dropped_decrypt == 0
        assert dht.stats.dropped_malformed == 0
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_mixed_network_everyone_knows_everyone(stack: ExitStack, tmp_path: Path) -> None:
    peers = [start_peer(stack, "carol"), start_peer(stack, "dave")]
    async with (
        our_node("m0") as (n0, p0, d0),
        our_node("m1") as (n1, p1, d1),
        our_node("m2") as (n2, p2, d2),
    ):
        ours = [(n0, p0, d0), (n1, p1, d1), (n2, p2, d2)]
        now = trio.current_time()
        # A chain: our nodes join n0, the toxcore peers join n1 and n2 (not each other).
        n1.bootstrap(n0.public_key, (LOCALHOST, p0), now)
        n2.bootstrap(n0.public_key, (LOCALHOST, p0), now)
        for _, _, driver in ours:
            driver.kick()
        peers[0].bootstrap(LOCALHOST, p1, n1.public_key)
        peers[1].bootstrap(LOCALHOST, p2, n2.public_key)
        peer_keys = [(p.dht_id, p.udp_port) for p in peers]
        everyone = [(n.public_key, p) for n, p, _ in ours] + peer_keys
        for core, _, _ in ours:
            await wait_until(
                lambda core=core: all(
                    core.close.get(pk) is not None for pk, _ in everyone if pk != core.public_key
                ),
                f"{core.public_key.hex()[:8]} did not learn everyone",
            )
        for pk, udp_port in peer_keys:
            for other, _ in everyone:
                if other != pk:
                    await wait_probe((LOCALHOST, udp_port), pk, other)
