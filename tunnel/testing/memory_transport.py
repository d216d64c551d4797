"""In-memory :class:`~tunnel.forward.transport.FriendTransport` endpoints for driver tests.

A :class:`MemoryNetwork` holds endpoints by public key. Two endpoints are *online* to each
other when both are up, both list the other as a confirmed friend and the link is not cut.
Friend requests are delivered to an endpoint that is up and does not know the requester yet
(and again whenever it comes back up, as the node resends requests until the friend is
online); accepting one confirms the friendship on both sides.

Lossless packets: delivered in order; each direction holds at most ``lossless_slots`` packets
that the receiver has not taken yet (``free_slots`` = what is left: the back-pressure a real
net_crypto send queue applies). Lossy packets: dropped with probability ``lossy_loss`` and
delivered after ``lossy_delay_s``.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

import trio

from tunnel.forward.transport import (
    FriendOffline,
    FriendOnline,
    FriendRequestReceived,
    PacketReceived,
    TransportClosed,
    TransportEvent,
)
from tunnel.toxid import ToxId
from tunnel.wire.tuntox import MAX_CUSTOM_PACKET_SIZE_BYTES

DEFAULT_LOSSLESS_SLOTS = 64


@dataclass(frozen=True, slots=True)
class _Lossless:
    """A queued lossless packet (so the receiver can return the sender's slot)."""

    event: PacketReceived


class MemoryNetwork:
    """A set of in-memory endpoints (see the module docstring)."""

    def __init__(
        self,
        *,
        lossless_slots: int = DEFAULT_LOSSLESS_SLOTS,
        lossy_loss: float = 0.0,
        lossy_delay_s: float = 0.0,
        refuse_every: int = 0,
        flush_frees: bool = False,
        seed: int = 0,
    ) -> None:
        self.lossless_slots = lossless_slots
        self.flush_frees = flush_frees
        """``flush()`` frees the sender's slots at once without waking anyone, as a node's
        flush does (the session transmits what it had queued, which makes room in its send
        queue): drivers must look at ``free_slots`` again after flushing."""
        self.refuse_every = refuse_every
        """Refuse every Nth ``send_lossless`` despite free slots (as a node whose capacity
        figure is optimistic may): drivers must keep the packet and retry. 0 = never."""
        self.lossy_loss = lossy_loss
        self.lossy_delay_s = lossy_delay_s
        self._random = random.Random(seed)
        self._endpoints: dict[bytes, MemoryTransport] = {}
        self._cut: set[frozenset[bytes]] = set()
        self._online: set[frozenset[bytes]] = set()
        self._requests: dict[tuple[bytes, bytes], bytes] = {}  # (from, to) -> message

    def endpoint(self, public_key: bytes) -> MemoryTransport:
        """The endpoint for ``public_key`` (created, up, on first use)."""
        transport = self._endpoints.get(public_key)
        if transport is None:
            transport = self._endpoints[public_key] = MemoryTransport(self, public_key)
        return transport

    def set_up(self, public_key: bytes, up: bool) -> None:
        """Take an endpoint down (all its links go offline, its queue is lost) or bring it
        back (it keeps its friends, like a node restarted from its profile)."""
        transport = self.endpoint(public_key)
        transport.up = up
        if not up:
            transport.reset_queues()
        self.refresh()

    def cut(self, a: bytes, b: bytes) -> None:
        """The path between ``a`` and ``b`` goes away (both see the other go offline)."""
        self._cut.add(frozenset((a, b)))
        self.refresh()

    def heal(self, a: bytes, b: bytes) -> None:
        """Undo :meth:`cut`."""
        self._cut.discard(frozenset((a, b)))
        self.refresh()

    def online(self, a: bytes, b: bytes) -> bool:
        return frozenset((a, b)) in self._online

    # --- internals used by the endpoints --------------------------------------------------

    def request(self, sender: bytes, target: bytes, message: bytes) -> None:
        self._requests[(sender, target)] = message
        self.refresh()

    def refresh(self) -> None:
        """Deliver pending friend requests and recompute which links are online."""
        for (sender, target), message in list(self._requests.items()):
            to, frm = self._endpoints.get(target), self._endpoints.get(sender)
            if to is None or frm is None or not to.up or not frm.up:
                continue
            state = to.friend_state.get(sender)
            if state == "confirmed":
                frm.friend_state[target] = "confirmed"
                del self._requests[(sender, target)]
            elif sender not in to.delivered_requests:
                to.delivered_requests.add(sender)
                to.push(FriendRequestReceived(sender, message))
        keys = list(self._endpoints)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                pair = frozenset((a, b))
                ea, eb = self._endpoints[a], self._endpoints[b]
                now_online = (
                    ea.up
                    and eb.up
                    and ea.friend_state.get(b) == "confirmed"
                    and eb.friend_state.get(a) == "confirmed"
                    and pair not in self._cut
                )
                if now_online and pair not in self._online:
                    self._online.add(pair)
                    ea.push(FriendOnline(b, "udp"))
                    eb.push(FriendOnline(a, "udp"))
                elif not now_online and pair in self._online:
                    self._online.discard(pair)
                    ea.link_down(b)
                    eb.link_down(a)

    def deliver_lossy(self, sender: bytes, target: bytes, data: bytes) -> None:
        if self._random.random() < self.lossy_loss:
            return
        to = self._endpoints[target]
        event = PacketReceived(sender, data)
        if self.lossy_delay_s > 0:
            to.push_delayed(trio.current_time() + self.lossy_delay_s, event)
        else:
            to.push(event)


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork` (a FriendTransport)."""

    def __init__(self, network: MemoryNetwork, public_key: bytes) -> None:
        self._network = network
        self._public_key = public_key
        self.up = True
        self.closed = False
        self.friend_state: dict[bytes, str] = {}  # pk -> "requested" | "confirmed"
        self.delivered_requests: set[bytes] = set()
        self._events: deque[TransportEvent | _Lossless] = deque()
        self._delayed: list[tuple[float, int, TransportEvent]] = []
        self._seq = 0
        self._wake = trio.Event()
        self._inflight: dict[bytes, int] = {}  # packets we sent, not yet taken by the peer
        self._space: dict[bytes, trio.Event] = {}
        self.lossless_sent = 0
        self.lossless_refused = 0
        self._send_calls = 0
        self.lossy_sent = 0

    # --- FriendTransport -------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self._public_key

    async def next_event(self) -> TransportEvent:
        while True:
            event = self.next_event_nowait()
            if event is not None:
                return event
            self._wake = trio.Event()
            deadline = self._delayed[0][0] if self._delayed else math.inf
            with trio.move_on_at(deadline):
                await self._wake.wait()

    def next_event_nowait(self) -> TransportEvent | None:
        if self.closed:
            raise TransportClosed("memory transport closed")
        if self._delayed and self._delayed[0][0] <= trio.current_time():
            return heapq.heappop(self._delayed)[2]
        if self._events:
            item = self._events.popleft()
            if isinstance(item, _Lossless):
                sender = self._network.endpoint(item.event.public_key)
                sender.slot_returned(self._public_key)
                return item.event
            return item
        return None

    def flush(self) -> None:
        """Sends are delivered at once in memory; with ``flush_frees`` the slots come back."""
        if self._network.flush_frees:
            self._inflight.clear()

    def is_online(self, public_key: bytes) -> bool:
        return self._network.online(self._public_key, public_key)

    def is_friend(self, public_key: bytes) -> bool:
        return public_key in self.friend_state

    def lossless_limit(self, public_key: bytes) -> int:
        return MAX_CUSTOM_PACKET_SIZE_BYTES

    def free_slots(self, public_key: bytes) -> int:
        if not self.is_online(public_key):
            return 0
        return max(0, self._network.lossless_slots - self._inflight.get(public_key, 0))

    async def wait_send_space(self, public_key: bytes) -> None:
        while self.is_online(public_key) and self.free_slots(public_key) == 0:
            event = self._space.setdefault(public_key, trio.Event())
            await event.wait()

    def send_lossless(self, public_key: bytes, data: bytes) -> bool:
        if not self.free_slots(public_key):
            return False
        self._send_calls += 1
        every = self._network.refuse_every
        if every and self._send_calls % every == 0:
            self.lossless_refused += 1
            return False
        self._inflight[public_key] = self._inflight.get(public_key, 0) + 1
        self.lossless_sent += 1
        self._network.endpoint(public_key).push(_Lossless(PacketReceived(self._public_key, data)))
        return True

    def send_lossless_many(self, public_key: bytes, packets: list[bytes]) -> int:
        sent = 0
        for data in packets:
            if not self.send_lossless(public_key, data):
                break
            sent += 1
        return sent

    def send_lossy(self, public_key: bytes, data: bytes) -> None:
        if self.is_online(public_key):
            self.lossy_sent += 1
            self._network.deliver_lossy(self._public_key, public_key, data)

    def add_friend(self, tox_id: bytes, message: bytes) -> bytes:
        public_key = ToxId.from_bytes(tox_id).public_key
        if public_key == self._public_key:
            raise ValueError("that is our own Tox ID")
        if public_key not in self.friend_state:
            self.friend_state[public_key] = "requested"
            self._network.request(self._public_key, public_key, message)
        return public_key

    def accept_friend(self, public_key: bytes) -> None:
        self.friend_state[public_key] = "confirmed"
        self._network.refresh()

    # --- test helpers and network internals -------------------------------------------------

    def close(self) -> None:
        """Stop: ``next_event`` raises :class:`TransportClosed`."""
        self.closed = True
        self._wake.set()

    def push(self, item: TransportEvent | _Lossless) -> None:
        self._events.append(item)
        self._wake.set()

    def push_delayed(self, when: float, event: TransportEvent) -> None:
        self._seq += 1
        heapq.heappush(self._delayed, (when, self._seq, event))
        self._wake.set()

    def slot_returned(self, target: bytes) -> None:
        self._inflight[target] = max(0, self._inflight.get(target, 0) - 1)
        self._signal_space(target)

    def _signal_space(self, target: bytes) -> None:
        event = self._space.pop(target, None)
        if event is not None:
            event.set()

    def link_down(self, peer: bytes) -> None:
        """The link to ``peer`` went offline: its queued packets are lost."""
        self._events = deque(
            item
            for item in self._events
            if not (isinstance(item, _Lossless) and item.event.public_key == peer)
        )
        self._delayed = [d for d in self._delayed if d[2].public_key != peer]
        heapq.heapify(self._delayed)
        self._inflight.pop(peer, None)
        self._signal_space(peer)
        if self.up:
            self.push(FriendOffline(peer))

    def reset_queues(self) -> None:
        self._events.clear()
        self._delayed.clear()
        self._inflight.clear()
        self.delivered_requests.clear()
        for peer in list(self._space):
            self._signal_space(peer)
