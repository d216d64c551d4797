"""A minimal synchronous driver for forwarding muxes over a real toxcore ``ToxPeer``.

For interop tests only (tests/forward): it moves custom packets between one mux and one friend
of a :class:`~tunnel.testing.toxcore.ToxPeer` and collects the mux's events. The product
drivers (Trio, sockets) live with the node and the CLI commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tunnel.forward.events import Event
from tunnel.forward.mux import ForwardMux
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_events import FriendLosslessPacket, FriendLossyPacket

SENDQ_STUCK_S = 10.0


class SyncDriver:
    """Moves packets between one mux and one ToxPeer friend; collects events."""

    def __init__(self, mux: ForwardMux, peer: ToxPeer, number: int, friend_pk: bytes) -> None:
        self.mux, self.peer, self.number, self.pk = mux, peer, number, friend_pk
        self.seen = 0
        self.seen_lossy = 0
        self.events: list[Event] = []
        self.start = time.monotonic()
        self.on_event: Callable[[Event], None] = lambda _e: None

    def now(self) -> float:
        return time.monotonic() - self.start

    def pump_once(self, max_packets: int | None = None) -> None:
        """Deliver received packets, run timers, dispatch events, send what the mux has."""
        packets = self.peer.events(FriendLosslessPacket)
        for event in packets[self.seen :]:
            if event.friend == self.number:
                self.mux.receive_packet(self.pk, event.data, self.now())
        self.seen = len(packets)
        lossy = self.peer.events(FriendLossyPacket)
        for event in lossy[self.seen_lossy :]:
            if event.friend == self.number:
                self.mux.receive_packet(self.pk, event.data, self.now())
        self.seen_lossy = len(lossy)
        self.mux.handle_timer(self.now())
        while (event := self.mux.next_event()) is not None:
            self.events.append(event)
            self.on_event(event)
        for packet in self.mux.packets_to_send(self.pk, max_packets):
            deadline = time.monotonic() + SENDQ_STUCK_S
            while not self.peer.try_send_lossless(self.number, packet):
                if time.monotonic() > deadline:
                    raise TimeoutError("toxcore send queue stuck")
                time.sleep(0.005)  # SENDQ full: toxcore drains it on its own thread
        for packet in self.mux.lossy_packets_to_send(self.pk):
            self.peer.try_send_lossy(self.number, packet)

    def pump_until(self, done: Callable[[], object], timeout: float, what: str) -> None:
        """Pump until ``done()`` is truthy; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            self.pump_once()
            time.sleep(0.002)
