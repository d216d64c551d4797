"""What the forwarding drivers need from the Tox node: the :class:`FriendTransport` seam.

The Trio drivers (``tunnel/io/forward_*.py``) move the forwarding muxes' custom packets over a
friend transport. Production: :class:`tunnel.io.forward_node.NodeTransport` over
:class:`tunnel.node.Node`; tests: :class:`tunnel.testing.memory_transport.MemoryNetwork`.

Contract (modelled on wireguard-go's ``conn.Bind``: small, each method documented):

* events come out of :meth:`FriendTransport.next_event` in the order they happened; lossless
  packets of one friend arrive complete and in order, and never before that friend's
  :class:`FriendOnline` or after its :class:`FriendOffline`;
* ``send_lossless`` never blocks: the driver asks :meth:`FriendTransport.free_slots` first and
  hands over at most that many packets; :meth:`FriendTransport.wait_send_space` waits for
  more room (back-pressure lives in the transport's send queue, never in a drop);
* lossy packets may be dropped, reordered or delayed.

This module is sans-IO (only typing): it names the interface, it does not implement it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class TransportClosed(Exception):
    """The transport stopped: :meth:`FriendTransport.next_event` has nothing more to give."""


@dataclass(frozen=True, slots=True)
class FriendOnline:
    """The friend connection to ``public_key`` is up; ``path`` is "udp" or "tcp" if known."""

    public_key: bytes
    path: str = ""


@dataclass(frozen=True, slots=True)
class FriendOffline:
    """The friend connection to ``public_key`` went down (``reason``: for the logs)."""

    public_key: bytes
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PacketReceived:
    """A custom packet (lossless 160..191 or lossy 200..254, id byte included)."""

    public_key: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class FriendRequestReceived:
    """Someone who is not a friend asked to become one (``accept_friend`` to accept)."""

    public_key: bytes
    message: bytes


TransportEvent = FriendOnline | FriendOffline | PacketReceived | FriendRequestReceived


class FriendTransport(Protocol):
    """Friend connections and custom packets, as the forwarding drivers use them."""

    @property
    def public_key(self) -> bytes:
        """Our long-term public key."""
        ...

    async def next_event(self) -> TransportEvent:
        """The next event, waiting for one.

        Raises:
            TransportClosed: the transport stopped.
        """
        ...

    def next_event_nowait(self) -> TransportEvent | None:
        """The next event if one is already waiting, else None (drivers drain a burst of
        packets with this after :meth:`next_event`, then act once for the whole burst).

        Raises:
            TransportClosed: the transport stopped.
        """
        ...

    def is_online(self, public_key: bytes) -> bool:
        """True while the friend connection to ``public_key`` is up."""
        ...

    def is_friend(self, public_key: bytes) -> bool:
        """True if ``public_key`` is in our friend list (confirmed or requested)."""
        ...

    def free_slots(self, public_key: bytes) -> int:
        """Lossless packets ``send_lossless`` takes right now without failing (0: full or
        offline)."""
        ...

    def lossless_limit(self, public_key: bytes) -> int:
        """The size to build custom lossless packets up to now (1373, or more with a peer
        that agreed larger packets over a path that carries them)."""
        ...

    async def wait_send_space(self, public_key: bytes) -> None:
        """Return once ``free_slots(public_key) > 0`` or the friend is offline."""
        ...

    def send_lossless(self, public_key: bytes, data: bytes) -> bool:
        """Queue one custom lossless packet for reliable in-order delivery.

        Returns False (nothing queued) if the friend is offline or the queue is full.
        """
        ...

    def send_lossless_many(self, public_key: bytes, packets: list[bytes]) -> int:
        """Queue custom lossless packets in order while there is room (like
        :meth:`send_lossless` for each, in one pass); returns how many were queued."""
        ...

    def send_lossy(self, public_key: bytes, data: bytes) -> None:
        """Send one custom lossy packet (silently dropped if offline)."""
        ...

    def flush(self) -> None:
        """Hand what ``send_lossless``/``send_lossy`` queued to the network now. They may
        defer that (one hand-off per burst instead of per packet); drivers call this after
        each burst of sends."""
        ...

    def add_friend(self, tox_id: bytes, message: bytes) -> bytes:
        """Send a friend request to a 38-byte Tox ID (resent until the friend comes online);
        returns the friend's public key. A no-op for an existing friend.

        Raises:
            ValueError: bad Tox ID, our own ID, bad message.
        """
        ...

    def accept_friend(self, public_key: bytes) -> None:
        """Accept a :class:`FriendRequestReceived` (the friend connection follows)."""
        ...


__all__ = [
    "FriendOffline",
    "FriendOnline",
    "FriendRequestReceived",
    "FriendTransport",
    "PacketReceived",
    "TransportClosed",
    "TransportEvent",
]
