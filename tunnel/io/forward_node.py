"""The :class:`~tunnel.forward.transport.FriendTransport` of a running :class:`tunnel.node.Node`.

Maps node events to transport events (``FriendConnected`` -> ``FriendOnline``, custom lossless
and lossy packets -> ``PacketReceived``, ``FriendRequest`` -> ``FriendRequestReceived``) and
the send side to the node's non-blocking calls: ``free_slots`` is the node's send capacity,
``wait_send_space`` waits on the node's change notifications. Friends already online when the
transport is created are reported first, so a driver started late misses nothing. Tunnel
frames (lossless 0xA2) come on the node's fast path (:meth:`Node.enable_fast_lossless`), and
while the driver has read every event before them they skip the channel too: the session's
sink hands them to the driver's mux at once (:meth:`NodeTransport.set_direct`), with one
driver kick per received batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from tunnel.forward.transport import (
    FriendOffline,
    FriendOnline,
    FriendRequestReceived,
    PacketReceived,
    TransportClosed,
    TransportEvent,
)
from tunnel.netcrypto.session import NotConnected
from tunnel.node import Node, NodeClosed
from tunnel.node_types import (
    FriendConnected,
    FriendDisconnected,
    FriendRequest,
    LosslessPacket,
    LossyPacket,
    NodeEvent,
)
from tunnel.toxid import ToxId
from tunnel.wire.tuntox import TUNTOX_PACKET_ID


class NodeTransport:
    """A FriendTransport over a :class:`Node` (which must be running)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._events = node.subscribe()
        self._direct = False
        node.enable_fast_lossless(frozenset({TUNTOX_PACKET_ID}))  # tunnel frames skip the glue
        self._initial: deque[TransportEvent] = deque(
            FriendOnline(pk, node.friend_path(pk) or "")
            for pk in node.friends()
            if node.is_online(pk)
        )
        for pk, message in node.pending_friend_requests().items():
            self._initial.append(FriendRequestReceived(pk, message))

    @property
    def public_key(self) -> bytes:
        return self.node.public_key

    async def next_event(self) -> TransportEvent:
        if self._initial:
            return self._initial.popleft()
        while True:
            try:
                event = await self._events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise TransportClosed("node stopped") from None
            converted = _convert(event)
            if converted is not None:
                return converted

    def next_event_nowait(self) -> TransportEvent | None:
        if self._initial:
            return self._initial.popleft()
        while True:
            try:
                event = self._events.receive_nowait()
            except trio.WouldBlock:
                if self._direct:
                    self.node.direct_lossless_clear()  # everything queued was read
                return None
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise TransportClosed("node stopped") from None
            if type(event) is LosslessPacket:  # the data path: skip the match
                return PacketReceived(event.public_key, event.data)
            converted = _convert(event)
            if converted is not None:
                return converted

    def set_direct(
        self,
        receive: Callable[[bytes, bytes, float], None] | None,
        done: Callable[[], None] | None,
    ) -> None:
        """Tunnel frames straight from the node's receive path to ``receive(pk, payload,
        now)``, then ``done()`` once per batch (:meth:`Node.set_direct_lossless`), whenever
        every event before them was read with :meth:`next_event_nowait`: no event object and
        no channel per frame. None: back to events only."""
        self._direct = receive is not None
        self.node.set_direct_lossless(receive, done)

    def flush(self) -> None:
        self.node.flush()

    def is_online(self, public_key: bytes) -> bool:
        return self.node.is_online(public_key)

    def is_friend(self, public_key: bytes) -> bool:
        return self.node.is_friend(public_key)

    def lossless_limit(self, public_key: bytes) -> int:
        return self.node.lossless_limit(public_key)

    def free_slots(self, public_key: bytes) -> int:
        if not self.node.is_online(public_key):
            return 0
        return self.node.send_capacity(public_key)

    async def wait_send_space(self, public_key: bytes) -> None:
        node = self.node
        try:
            await node.wait_for(
                lambda: (
                    (not node.is_online(public_key) or node.send_capacity(public_key) > 0) or None
                )
            )
        except NodeClosed:
            return

    def send_lossless(self, public_key: bytes, data: bytes) -> bool:
        try:
            return self.node.try_send_lossless(public_key, data, flush=False)
        except (NotConnected, KeyError, ValueError):
            return False

    def send_lossless_many(self, public_key: bytes, packets: list[bytes]) -> int:
        try:
            return self.node.try_send_lossless_many(public_key, packets, flush=False)
        except (NotConnected, KeyError, ValueError):
            return 0

    def send_lossy(self, public_key: bytes, data: bytes) -> None:
        try:
            self.node.send_lossy(public_key, data)
        except (NotConnected, KeyError, ValueError):
            pass

    def add_friend(self, tox_id: bytes, message: bytes) -> bytes:
        parsed = ToxId.from_bytes(tox_id)
        if self.node.is_friend(parsed.public_key):
            return parsed.public_key
        return self.node.add_friend(parsed, message)

    def accept_friend(self, public_key: bytes) -> None:
        self.node.accept_friend_request(public_key)


def _convert(event: NodeEvent) -> TransportEvent | None:
    """The transport event for a node event (None: not one the drivers care about)."""
    match event:
        case LosslessPacket(pk, data) | LossyPacket(pk, data):
            return PacketReceived(pk, data)
        case FriendConnected(pk, path):
            return FriendOnline(pk, path)
        case FriendDisconnected(pk, reason):
            return FriendOffline(pk, reason)
        case FriendRequest(pk, message):
            return FriendRequestReceived(pk, message)
        case _:
            return None
