"""A small Trio driver for a :class:`~tunnel.friends.messenger.Messenger` on one UDP socket.

Used by interop tests and benchmarks until the full node wiring lands: it runs the sans-IO
Messenger (friend_connection + net_crypto) with :class:`BatchUdpDriver`, a UDP driver that
drains and sends datagrams in batches (per-datagram Trio scheduling costs more than the whole
net_crypto core per packet). It collects the Messenger's events, bridges net_crypto to TCP
relays when asked, and offers the awaitable, back-pressured sends the API promises
(``send_custom_lossless`` waits for send capacity instead of failing or dropping).
"""

from __future__ import annotations

import math
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import trio

from tunnel.core import DatagramCore
from tunnel.friends.messenger import Messenger, MessengerEvent, SendQueueFull
from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.io.udp import BoundSocket, normalise_addr
from tunnel.tcp_relay.connections import OobData, PeerData, PoolEvent
from tunnel.wire.ip_port import Addr

_T = TypeVar("_T")

RECEIVE_BATCH = 256
MAX_DATAGRAM_BYTES = 2048


class BatchUdpDriver:
    """Runs a :class:`DatagramCore` on a bound UDP socket, in batches.

    The reader waits until the socket is readable, then feeds up to ``RECEIVE_BATCH``
    datagrams to the core at one ``now`` before flushing; sends go out at once from a
    non-blocking socket and only wait when the kernel buffer is full. ``after_batch`` runs after
    every batch and timer (the place to drain events).
    """

    def __init__(
        self,
        core: DatagramCore,
        bound: BoundSocket,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.core = core
        self.bound = bound
        self.after_batch = after_batch or (lambda: None)
        self._sock = socket.socket(fileno=os.dup(bound.sock.fileno()))
        self._sock.setblocking(False)
        self._pending: deque[tuple[Addr, bytes]] = deque()
        self._wakeup = trio.Event()
        self.sent = 0
        self.received = 0
        self.send_errors = 0

    def kick(self) -> None:
        """After a command: send what the core queued and re-read its deadline."""
        self.flush()
        self._wakeup.set()

    def flush(self) -> None:
        """Send everything the core has queued, without blocking."""
        pending = self._pending
        pending.extend(self.core.datagrams_to_send())
        sock = self._sock
        wire_addr = self.bound.wire_addr
        while pending:
            addr, data = pending[0]
            try:
                sock.sendto(data, wire_addr(addr))
            except BlockingIOError:
                self._wakeup.set()  # the timer task waits until writable
                return
            except OSError:
                self.send_errors += 1
            else:
                self.sent += 1
            pending.popleft()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive, feed the core, send, fire timers; until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._timers)
                task_status.started()
        finally:
            self._sock.close()

    async def _reader(self) -> None:
        sock = self._sock
        core = self.core
        v6 = self.bound.ipv6
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            for _ in range(RECEIVE_BATCH):
                try:
                    data, raw = sock.recvfrom(MAX_DATAGRAM_BYTES)
                except BlockingIOError:
                    break
                except OSError:  # ICMP errors surface here on Linux
                    continue
                self.received += 1
                addr = normalise_addr(raw) if v6 else (raw[0], raw[1])
                core.receive(data, addr, now)
            self.after_batch()
            self.flush()
            self._wakeup.set()

    async def _timers(self) -> None:
        core = self.core
        while True:
            if self._pending:
                await trio.lowlevel.wait_writable(self._sock)
                self.flush()
                continue
            now = trio.current_time()
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
                self.after_batch()
                self.flush()
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wakeup.wait()
            self._wakeup = trio.Event()


class MessengerNode:
    """Runs a Messenger on a bound UDP socket; call :meth:`run` in a nursery (``start``)."""

    def __init__(self, messenger: Messenger, bound: BoundSocket) -> None:
        self.messenger = messenger
        self.bound = bound
        self.driver = BatchUdpDriver(messenger, bound, self._after)
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
