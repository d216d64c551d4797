"""NodeTransport's synchronous packet hand-over never overtakes an event still on its way."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import trio
import trio.testing

from tunnel.forward.transport import FriendOnline, PacketReceived
from tunnel.io.forward_node import NodeTransport
from tunnel.node_types import FriendConnected, LosslessPacket, NodeEvent

FRIEND = bytes(range(32))


class FakeNode:
    """The parts of Node a NodeTransport uses, with one friend online at the start."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[NodeEvent](math.inf)
        self.handler: Callable[[bytes, bytes], bool] | None = None
        self.after: Callable[[], None] | None = None

    def subscribe(self) -> Any:
        return self.receive

    def enable_fast_lossless(self, ids: frozenset[int]) -> None:
        pass

    def friends(self) -> list[bytes]:
        return [FRIEND]

    def is_online(self, pk: bytes) -> bool:
        return True

    def friend_path(self, pk: bytes) -> str:
        return "udp"

    def pending_friend_requests(self) -> dict[bytes, bytes]:
        return {}

    def set_packet_handler(
        self,
        handler: Callable[[bytes, bytes], bool] | None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.handler, self.after = handler, after


async def test_packets_are_taken_only_while_the_reader_waits_with_nothing_on_its_way() -> None:
    node = FakeNode()
    transport = NodeTransport(node)  # type: ignore[arg-type]
    taken: list[bytes] = []
    transport.set_packet_handler(lambda friend, data: taken.append(data), lambda: None)
    handler = node.handler
    assert handler is not None
    # the initial FriendOnline is not read yet: refuse
    assert not handler(FRIEND, b"\xa2one")
    assert await transport.next_event() == FriendOnline(FRIEND, "udp")
    # nobody waits for events (the reader is busy elsewhere): refuse
    assert not handler(FRIEND, b"\xa2two")
    got: list[object] = []

    async def reader() -> None:
        got.append(await transport.next_event())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        # the reader waits with nothing on its way: take it here
        assert handler(FRIEND, b"\xa2three")
        assert taken == [b"\xa2three"]
        # an event is handed to the waiting reader, which has not run yet: refuse
        node.send.send_nowait(FriendConnected(FRIEND, "tcp"))
        assert not handler(FRIEND, b"\xa2four")
    assert got == [FriendOnline(FRIEND, "tcp")]
    # queued, unread events: refuse
    node.send.send_nowait(LosslessPacket(FRIEND, b"\xa2five"))
    assert not handler(FRIEND, b"\xa2six")
    assert await transport.next_event() == PacketReceived(FRIEND, b"\xa2five")
    assert taken == [b"\xa2three"]
    transport.set_packet_handler(None)
    assert node.handler is None
