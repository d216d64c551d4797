"""SHARE_RELAYS end to end: relays a friend is connected to reach our relay pool.

Node A is configured with a second TCP relay that B knows nothing about; once they are friends,
A shares its relays (friend_connection packet 17) and B connects to that relay too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from tunnel.config import TcpRelayConfig
from tunnel.node_types import FriendConnected, FriendRequest
from tunnel.onion.events import FriendDhtKeyLearned
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool

from .test_node_toxcore import FIND_TIMEOUT_S, next_event

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]


@pytest.fixture(scope="session")
def port_pool() -> PortPool:
    """This module's ports (the netcrypto/friends range), not the Node suite's."""
    return PortPool(45700, 45799)


@pytest.fixture
def second_relay(port_pool: PortPool, tmp_path: Any) -> Iterator[Bootstrapd]:
    udp_port, tcp_port = port_pool.allocate(2)
    with Bootstrapd(tmp_path / "relay2", udp_port, (tcp_port,)) as bsd:
        yield bsd


def _connected(node: Any, relay_pk: bytes) -> bool:
    return relay_pk in {r.public_key for r in node.relays.pool.connected_relays()}


async def _until(predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling the relay pool's state
            await trio.sleep(0.1)


async def test_relays_a_friend_shares_join_our_pool(
    node_factory: Any,
    bootstrapd: Bootstrapd,
    second_relay: Bootstrapd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay2 = TcpRelayConfig("127.0.0.1", second_relay.tcp_ports[0], second_relay.public_key)
    async with node_factory("a", tcp_relays=(relay2,)) as a, node_factory("b") as b:
        await _until(lambda: _connected(a, second_relay.public_key), FIND_TIMEOUT_S)
        assert second_relay.public_key not in {s.relay.public_key for s in b.relays.pool.relays()}
        # A's onion DHT-PK announcements also carry its relays: strip them on B's side, so
        # SHARE_RELAYS over the friend connection is the only way B can learn relay 2.
        handle = b._handle_onion_event

        def without_relays(event: object, now: float) -> None:
            if isinstance(event, FriendDhtKeyLearned):
                nodes = tuple(n for n in event.nodes if not n.tcp)
                event = dataclasses.replace(event, nodes=nodes)
            handle(event, now)

        monkeypatch.setattr(b, "_handle_onion_event", without_relays)
        a_events, b_events = a.subscribe(), b.subscribe()
        a.add_friend(b.tox_id, b"share")
        await next_event(b_events, FriendRequest)
        b.accept_friend_request(a.public_key)
        await next_event(a_events, FriendConnected, lambda e: e.public_key == b.public_key)
        await next_event(b_events, FriendConnected, lambda e: e.public_key == a.public_key)
        await _until(lambda: _connected(b, second_relay.public_key), 20)
        shared = b.messenger.connections.friend_relays(a.public_key)
        assert second_relay.public_key in {r.public_key for r in shared}
