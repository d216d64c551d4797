"""Issue 11's extension next to real toxcore 0.2.18 (on 127.0.0.1, ports 54500-54599).

* A toxcore friend gets our Hello (lossless id 0x9E) and drops it without telling its
  application (``Messenger.c`` ignores ids 16..159 it does not use): no custom packet event on
  its side, no direct-path core on ours, so no 0xB8 Endpoints or probes ever go to it, and the
  friendship keeps working.
* Two of our Nodes negotiate the extension and report a direct path in ``tunnel status``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.node_options import bootstrap_nodes
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import Connection, FriendLosslessPacket, ToxPeer

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

PORTS = PortPool(54500, 54599)
LOCALHOST = "127.0.0.1"
CONNECT_TIMEOUT_S = 60.0
SETTLE_S = 3.0
"""After both sides are online: time for a Hello answer that must not come."""


@pytest.fixture(scope="module")
def bootstrapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bootstrapd]:
    udp_port, tcp_port = PORTS.allocate(2)
    with Bootstrapd(tmp_path_factory.mktemp("bootstrapd"), udp_port, (tcp_port,)) as bsd:
        yield bsd


def _profile() -> Profile:
    while True:
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:  # a key toxcore accepts
            return profile


@asynccontextmanager
async def _node(
    name: str, bsd: Bootstrapd, friends: tuple[bytes, ...], *, udp: bool = True
) -> AsyncIterator[Node]:
    port = PORTS.allocate_one()
    options = NodeOptions(
        udp_enabled=udp,
        udp_host=LOCALHOST,
        ipv6=False,
        port_start=port,
        port_end=port,
        bootstrap=bootstrap_nodes(bsd),
        friends=friends,
        name=name.encode(),
    )
    node = Node(_profile(), options)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            with trio.move_on_after(5):
                await node.aclose()
            nursery.cancel_scope.cancel()


async def test_nat_toxcore_friend_never_sees_the_extension(bootstrapd: Bootstrapd) -> None:
    tox = ToxPeer("tox", start_port=PORTS.allocate_one())
    try:
        tox.bootstrap(bootstrapd.host, bootstrapd.udp_port, bootstrapd.public_key)
        async with _node("ours", bootstrapd, (tox.public_key,)) as node:
            number = tox.friend_add_norequest(node.public_key)
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await node.wait_for(lambda: node.is_online(tox.public_key))
            await tox.await_for(
                lambda: tox.friend_connection_status(number) is not Connection.NONE or None,
                CONNECT_TIMEOUT_S,
            )
            await trio.sleep(SETTLE_S)
            assert node.direct_paths.stats.hellos_sent >= 1  # offered ...
            assert node.direct_paths.stats.hellos_received == 0  # ... never answered
            assert node.direct_path_status(tox.public_key) is None  # no core, no 0xB8
            assert tox.events(FriendLosslessPacket) == []  # toxcore told its app nothing
            # not one of ours: relayed idle periods keep decaying its rate (no flooding)
            assert tox.public_key not in node.direct_paths.extension_peers
            assert not node.netcrypto.sessions[tox.public_key].congestion.peer_is_ours
            assert node.is_online(tox.public_key)
            assert tox.friend_connection_status(number) is not Connection.NONE
    finally:
        tox.kill()


async def test_nat_toxcore_our_nodes_negotiate_and_go_direct(bootstrapd: Bootstrapd) -> None:
    async with _node("a", bootstrapd, ()) as a, _node("b", bootstrapd, (a.public_key,)) as b:
        a.add_friend_norequest(b.public_key)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            for node, friend in ((a, b), (b, a)):
                await node.wait_for(
                    lambda n=node, f=friend: str(n.direct_path_status(f.public_key)).startswith(
                        "direct udp 127.0.0.1:"
                    )
                )
        assert a.direct_paths.stats.hellos_received >= 1
        assert a.direct_paths.nat.name == "OPEN"  # no NAT on loopback
        assert a.netcrypto.sessions[b.public_key].congestion.peer_is_ours


async def test_nat_toxcore_our_nodes_know_each_other_with_udp_off(bootstrapd: Bootstrapd) -> None:
    """UDP off (TCP relay only): the Hello is still exchanged, so each knows the other is one
    of ours (its congestion control may keep an idle rate over the relay), but nothing is
    probed."""
    async with (
        _node("a", bootstrapd, (), udp=False) as a,
        _node("b", bootstrapd, (a.public_key,), udp=False) as b,
    ):
        a.add_friend_norequest(b.public_key)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            for node, friend in ((a, b), (b, a)):
                await node.wait_for(
                    lambda n=node, f=friend: f.public_key in n.direct_paths.extension_peers
                )
        for node, friend in ((a, b), (b, a)):
            assert node.netcrypto.sessions[friend.public_key].congestion.peer_is_ours
            assert node.direct_paths.cores == {}
            assert node.direct_path_status(friend.public_key) is None
