"""A small Trio driver for a :class:`~tunnel.friends.messenger.Messenger` on one UDP socket.

Used by interop tests and benchmarks that want a Messenger without the whole Node: it runs
the sans-IO Messenger (friend_connection + net_crypto) on the node's batched
:class:`~tunnel.io.udp.UdpDriver`, collects the Messenger's events, bridges net_crypto to TCP
relays when asked, and offers the awaitable, back-pressured sends the API promises
(``send_custom_lossless`` waits for send capacity instead of failing or dropping).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from tunnel.friends.messenger import Messenger, MessengerEvent, SendQueueFull
from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.io.udp import BoundSocket, UdpDriver
from tunnel.tcp_relay.connections import OobData, PeerData, PoolEvent

_T = TypeVar("_T")


class MessengerNode:
    """Runs a Messenger on a bound UDP socket; call :meth:`run` in a nursery (``start``)."""

    def __init__(self, messenger: Messenger, bound: BoundSocket) -> None:
        self.messenger = messenger
        self.bound = bound
        self.driver = UdpDriver(messenger, bound, self._after)
        self.received: list[MessengerEvent] = []
        self._changed = trio.Event()
        self.relays: RelayPoolDriver | None = None
        self.tcp_send_failures = 0
        self._relay_events: list[PoolEvent] = []
        self._in_after = False

    def enable_relays(self) -> RelayPoolDriver:
        """Carry net_crypto over TCP relays too (our DHT key is the relay identity).

        Call before :meth:`run`; then ``add_relay`` / ``add_peer`` (the friend's DHT key) on
        the returned driver.
        """
        netcrypto = self.messenger.netcrypto
        self.relays = RelayPoolDriver(netcrypto.ident.dht, on_event=self._on_relay_event)
        netcrypto.tcp_enabled = True
        return self.relays

    def _on_relay_event(self, event: PoolEvent) -> None:
        self._relay_events.append(event)
        if not self._in_after:
            self._after()

    @property
    def port(self) -> int:
        """The local UDP port."""
        return self.bound.port

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the Messenger (and the relays, if enabled) until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.relays is not None:
                await nursery.start(self.relays.run)
            await nursery.start(self.driver.run)
            task_status.started()

    def _after(self) -> None:
        if self._in_after:
            return
        self._in_after = True
        try:
            self._process()
        finally:
            self._in_after = False
        self._changed.set()
        self._changed = trio.Event()

    def _process(self) -> None:
        messenger = self.messenger
        for _ in range(1000):  # relay sends can report events that produce more sends
            while self._relay_events:
                event = self._relay_events.pop(0)
                now = trio.current_time()
                if isinstance(event, PeerData):
                    messenger.receive_tcp(event.data, event.peer, event.relay, now)
                elif isinstance(event, OobData):
                    messenger.receive_tcp(event.data, event.sender, event.relay, now)
            events = messenger.events()
            if events:
                self.received.extend(events)
            relays = self.relays
            packets = messenger.netcrypto.tcp_packets_to_send()
            if relays is not None:
                for packet in packets:
                    if isinstance(packet.via, bytes):
                        ok = relays.send_oob(packet.via, packet.dht_pk, packet.data)
                    else:
                        ok = relays.send_to_peer(packet.dht_pk, packet.data)
                    if not ok:
                        self.tcp_send_failures += 1
            if not self._relay_events:
                break
        self.driver.kick()

    def kick(self) -> None:
        """After a command: process its events, flush its datagrams, re-read the deadline."""
        self._after()
        self.driver.kick()

    def now(self) -> float:
        """The driver's clock."""
        return trio.current_time()

    async def wait_for(self, predicate: Callable[[], _T | bool | None]) -> _T | bool:
        """Wait until ``predicate()`` is truthy (wrap in ``trio.fail_after``)."""
        while True:
            value = predicate()
            if value:
                return value
            await self._changed.wait()

    def take(self, kind: type[_T]) -> list[_T]:
        """Remove and return the received events of type ``kind``."""
        taken: list[_T] = [e for e in self.received if isinstance(e, kind)]
        if taken:
            self.received = [e for e in self.received if not isinstance(e, kind)]
        return taken

    async def send_custom_lossless(self, friend: int, data: bytes) -> None:
        """Send a custom lossless packet, waiting while the send queue is full."""
        while True:
            try:
                self.messenger.send_custom_lossless(friend, data, trio.current_time())
            except SendQueueFull:
                await self.wait_for(lambda: self.messenger.send_capacity(friend) > 0)
                continue
            self.driver.kick()
            return

    def send_custom_lossy(self, friend: int, data: bytes) -> None:
        """Send a custom lossy packet now."""
        self.messenger.send_custom_lossy(friend, data, trio.current_time())
        self.kick()

    def send_message(self, friend: int, text: bytes, *, action: bool = False) -> int:
        """Send a text message; returns its id."""
        message_id = self.messenger.send_message(friend, text, trio.current_time(), action=action)
        self.kick()
        return message_id
