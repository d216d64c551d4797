"""A :class:`tunnel.forward.transport.FriendTransport` over a running :class:`tunnel.node.Node`.

The forwarding drivers (``tunnel/io/forward_*.py``) talk to this seam; it maps the node's
events and calls one to one: ``FriendConnected`` -> ``FriendOnline``, ``FriendDisconnected`` ->
``FriendOffline``, custom lossless/lossy packets -> ``PacketReceived``, ``FriendRequest`` ->
``FriendRequestReceived``. It subscribes to the node when created, so create it before the
friends can come online. Lossless sends never drop: ``send_lossless`` refuses (False) when the
friend's send queue is full and ``wait_send_space`` waits for room.
"""

from __future__ import annotations

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
)
from tunnel.toxid import ToxId


class NodeTransport:
    """Implements :class:`tunnel.forward.transport.FriendTransport` for a :class:`Node`."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._events = node.subscribe()

    @property
    def public_key(self) -> bytes:
        """Our long-term public key."""
        return self.node.public_key

    async def next_event(self) -> TransportEvent:
        """The next friend/packet event (other node events are skipped)."""
        while True:
            try:
                event = await self._events.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
                raise TransportClosed("node stopped") from exc
            if isinstance(event, FriendConnected):
                return FriendOnline(event.public_key, event.path)
            if isinstance(event, FriendDisconnected):
                return FriendOffline(event.public_key)
            if isinstance(event, LosslessPacket | LossyPacket):
                return PacketReceived(event.public_key, event.data)
            if isinstance(event, FriendRequest):
                return FriendRequestReceived(event.public_key, event.message)

    def is_online(self, public_key: bytes) -> bool:
        """True while the friend is online."""
        return self.node.is_online(public_key)

    def is_friend(self, public_key: bytes) -> bool:
        """True if ``public_key`` is in our friend list."""
        return self.node.is_friend(public_key)

    def free_slots(self, public_key: bytes) -> int:
        """Lossless packets that can be queued now (0: full or offline)."""
        return self.node.send_capacity(public_key)

    async def wait_send_space(self, public_key: bytes) -> None:
        """Return once there is room, or the friend is offline, or the node stopped."""
        try:
            await self.node.wait_send_space(public_key)
        except (NotConnected, NodeClosed):
            return

    def send_lossless(self, public_key: bytes, data: bytes) -> bool:
        """Queue one custom lossless packet (False: offline or full; nothing queued)."""
        try:
            return self.node.try_send_lossless(public_key, data)
        except (NotConnected, KeyError):
            return False

    def send_lossy(self, public_key: bytes, data: bytes) -> None:
        """Send one custom lossy packet (dropped if offline)."""
        try:
            self.node.send_lossy(public_key, data)
        except (NotConnected, KeyError):
            return

    def add_friend(self, tox_id: bytes, message: bytes) -> bytes:
        """Send a friend request (no-op for an existing friend); returns the public key."""
        parsed = ToxId.from_bytes(tox_id)
        if self.node.is_friend(parsed.public_key):
            return parsed.public_key
        return self.node.add_friend(parsed, message)

    def accept_friend(self, public_key: bytes) -> None:
        """Accept a friend request."""
        self.node.accept_friend_request(public_key)
