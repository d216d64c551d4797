"""Trio glue shared by the forwarding drivers: one mux, one FriendTransport, many local sockets.

Theory of operation (the driver contract is in :mod:`tunnel.forward`):

* :class:`MuxDriver` owns the mux. Three tasks: the *receiver* feeds transport events into the
  mux, the *sender* moves the mux's packets into the transport within its free send slots
  (waiting for send space per friend, so a full queue never drops a packet), the *timer*
  sleeps until ``mux.next_deadline()``. Every mux call is followed by :meth:`MuxDriver.kick`,
  which dispatches the mux's events at once (Trio is single-threaded: no locks) and wakes the
  sender.
* Each tunnel handle has a :class:`Pipe`: an inbox of items for its local socket (bytes, EOF,
  close), and events for "open finished" and "send space". :func:`pump_stream` runs one local
  byte stream against its tunnel: the reader reads at most ``mux.send_capacity(handle)``
  bytes (it never reads faster than the tunnel takes them), the writer writes delivered bytes
  and only then calls ``mux.data_consumed`` (which grants the peer more credit).
* A local error aborts the tunnel (``mux.close_tunnel``); a tunnel that ends with an error
  resets the local TCP connection (RST), so the application sees an error, never a silently
  truncated stream.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from tunnel.forward.events import (
    DatagramReceived,
    Event,
    PeerEof,
    SendSpaceAvailable,
    TunnelClosed,
    TunnelData,
    TunnelOpened,
    TunnelOpenFailed,
)
from tunnel.forward.mux import ForwardMux
from tunnel.forward.transport import (
    FriendOffline,
    FriendOnline,
    FriendRequestReceived,
    FriendTransport,
    PacketReceived,
    TransportClosed,
    TransportEvent,
)
from tunnel.io.busy_poll import BUSY_POLL_WINDOW_S, BusyPoll

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 64 * 1024
"""Largest single read from a local socket (then bounded by the tunnel's send capacity)."""
WRITE_COALESCE_BYTES = 256 * 1024
"""Received frames joined into one local write (the per-frame write was the drivers' main
cost: ~1.3 KB per send system call)."""
CLOSE_GRACE_S = 2.0
"""How long closing a local socket may take."""
SEND_RETRY_S = 0.002
"""Pause before retrying a packet the transport refused although it reported free slots."""
RECEIVE_BURST_EVENTS = 512
"""Most transport events fed to the mux per wake-up before the other tasks get their turn."""


class _Eof:
    """Inbox item: the peer half-closed."""


@dataclass(frozen=True, slots=True)
class _Closed:
    """Inbox item: the tunnel is over (``error`` None = normally)."""

    error: str | None


EOF = _Eof()
InboxItem = bytes | _Eof | _Closed


@dataclass(eq=False)
class Pipe:
    """Driver-side state of one tunnel handle."""

    handle: int
    inbox: deque[InboxItem] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    space: trio.Event = field(default_factory=trio.Event)
    open_done: trio.Event = field(default_factory=trio.Event)
    opened: bool = False
    failure: TunnelOpenFailed | None = None
    closed: bool = False
    cancel_scope: trio.CancelScope | None = None
    direct: Callable[[bytes], int] | None = None
    """Writes bytes to the local stream without blocking (how many it took), when the stream
    is a socket: set by :func:`pump_stream`."""
    writer_idle: bool = False
    """The writer waits for the inbox (it stays set until the writer runs again: a write
    is direct only while the inbox is also empty, so nothing queued is overtaken)."""
    direct_written: int = 0
    """Bytes written by :meth:`put` itself that the writer has yet to report as consumed."""

    def put(self, item: InboxItem) -> None:
        if self.writer_idle and not self.inbox and self.direct is not None and type(item) is bytes:
            # The writer sleeps with an empty inbox: write here, now, instead of waking it
            # and writing a scheduler round later (the latency of a request/response); it
            # still wakes, later, to report the bytes as consumed.
            try:
                written = self.direct(item)
            except OSError:  # full, or broken: the writer's own send finds out which
                written = 0
            if written:
                self.direct_written += written
                item = item[written:]
            if not item:
                self.wake.set()
                return
        self.inbox.append(item)
        self.wake.set()

    def take_bytes(self, first: bytes) -> bytes:
        """``first`` joined with the byte items at the head of the inbox (up to
        ``WRITE_COALESCE_BYTES``): one local write instead of one per ~1.3 KB frame."""
        parts = [first]
        size = len(first)
        inbox = self.inbox
        while inbox and size < WRITE_COALESCE_BYTES:
            head = inbox[0]
            if not isinstance(head, bytes):
                break
            parts.append(head)
            size += len(head)
            inbox.popleft()
        return b"".join(parts)

    async def get(self) -> InboxItem | None:
        """The next item, or None when only :attr:`direct_written` bytes are to report."""
        while not self.inbox and not self.direct_written:
            self.wake = trio.Event()
            self.writer_idle = True
            try:
                await self.wake.wait()
            finally:
                self.writer_idle = False
        return self.inbox.popleft() if self.inbox else None


class LocalStream(Protocol):
    """What :func:`pump_stream` needs from a local byte stream."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def aclose(self) -> None: ...


class MuxDriver:
    """Runs one forwarding mux over one :class:`FriendTransport` (module docstring)."""

    def __init__(
        self,
        mux: ForwardMux,
        transport: FriendTransport,
        *,
        busy_poll_s: float = BUSY_POLL_WINDOW_S,
    ) -> None:
        self.mux = mux
        self.transport = transport
        self.bytes_in = 0
        """Tunnel frame bytes received (with the mux's ``bytes_sent``: the busy poll's load)."""
        self.busy_poll = BusyPoll(busy_poll_s, lambda: self.bytes_in + mux.bytes_sent)
        """Keeps the loop warm for a moment after traffic (:mod:`tunnel.io.busy_poll`)."""
        self.pipes: dict[int, Pipe] = {}
        self._send_wake = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_at = math.inf
        self._waiting_space: set[bytes] = set()
        self._stash: dict[bytes, deque[bytes]] = {}
        self._nursery: trio.Nursery | None = None
        self.online: set[bytes] = set()
        self.online_changed = trio.Event()
        self.on_event: Callable[[Event], None] = lambda _event: None
        self.stats: dict[str, int] = {}

    # --- running -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or the transport closes."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sender)
            nursery.start_soon(self._timer)
            nursery.start_soon(self.busy_poll.run)
            set_direct = getattr(self.transport, "set_direct", None)
            if set_direct is not None:
                set_direct(self._receive_direct, self.kick)
            task_status.started()
            try:
                await self._receiver()
            finally:
                if set_direct is not None:
                    set_direct(None, None)
                nursery.cancel_scope.cancel()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "MuxDriver.run is not running"
        return self._nursery

    def now(self) -> float:
        return trio.current_time()

    def count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def new_pipe(self, handle: int) -> Pipe:
        pipe = self.pipes[handle] = Pipe(handle)
        return pipe

    async def wait_online(self, friend: bytes) -> None:
        while friend not in self.online:
            await self.online_changed.wait()

    # --- the three tasks -----------------------------------------------------------------

    async def _receiver(self) -> None:
        transport = self.transport
        while True:
            try:
                event: TransportEvent | None = await transport.next_event()
                # A burst of packets is fed to the mux before anyone else runs: one kick,
                # one sender round and one joined local write for all of it (and one clock
                # reading: the burst arrived at once).
                receive_packet = self.mux.receive_packet
                now = self.now()
                handled = 0
                while event is not None:
                    if type(event) is PacketReceived:
                        self.bytes_in += len(event.data)
                        receive_packet(event.public_key, event.data, now)
                    else:
                        self.handle_transport_event(event)
                    handled += 1
                    if handled >= RECEIVE_BURST_EVENTS:
                        break
                    event = transport.next_event_nowait()
            except TransportClosed:
                return
            self.kick()

    def _receive_direct(self, friend: bytes, data: bytes, now: float) -> None:
        """A packet handed over straight from the transport's receive path (in order after
        every event read before); the transport calls :meth:`kick` after the batch."""
        self.bytes_in += len(data)
        self.mux.receive_packet(friend, data, now)

    def handle_transport_event(self, event: TransportEvent) -> None:
        now = self.now()
        match event:
            case PacketReceived(friend, data):
                self.mux.receive_packet(friend, data, now)
            case FriendOnline(friend, path):
                log.info("friend %s online (%s)", friend.hex()[:16], path or "?")
                self.online.add(friend)
                self.mux.friend_online(friend, now)
                self._online_changed()
            case FriendOffline(friend, reason):
                log.info("friend %s offline (%s)", friend.hex()[:16], reason or "?")
                self.online.discard(friend)
                self._stash.pop(friend, None)
                self.mux.friend_offline(friend, now)
                self._online_changed()
            case FriendRequestReceived(friend, message):
                self.on_friend_request(friend, message)

    def on_friend_request(self, friend: bytes, message: bytes) -> None:
        """Server drivers accept or refuse; clients ignore requests."""
        log.info("ignoring a friend request from %s", friend.hex()[:16])

    def _online_changed(self) -> None:
        self.online_changed.set()
        self.online_changed = trio.Event()

    async def _sender(self) -> None:
        while True:
            self._send_wake = trio.Event()
            self._send_round()
            if self._send_wake.is_set():
                await trio.lowlevel.checkpoint()
                continue
            await self._send_wake.wait()

    def _send_round(self) -> None:
        for friend in {*self.mux.friends_with_output(), *self._stash}:
            self._flush(friend)
        self.dispatch()

    def _flush(self, friend: bytes) -> None:
        """Move ``friend``'s packets into the transport, never losing one: packets taken from
        the mux that the transport refuses (its free-slot figure was optimistic) wait in
        ``_stash`` and go first next time, in order."""
        mux, transport = self.mux, self.transport
        if friend not in self.online:
            self._stash.pop(friend, None)  # the mux dropped the friend's tunnels already
            return
        refused = False
        stash = self._stash.get(friend)
        if stash:
            for _ in range(transport.send_lossless_many(friend, list(stash))):
                stash.popleft()
            refused = bool(stash)
        if not refused:
            self._stash.pop(friend, None)
            slots = transport.free_slots(friend)
            if slots > 0:
                packets = mux.packets_to_send(friend, slots, transport.lossless_limit(friend))
                sent = transport.send_lossless_many(friend, packets) if packets else 0
                if sent < len(packets):
                    self.count("lossless_send_refused")
                    self._stash[friend] = deque(packets[sent:])
                    refused = True
        for packet in mux.lossy_packets_to_send(friend):
            transport.send_lossy(friend, packet)
        transport.flush()
        if friend in self._waiting_space:
            return
        has_output = friend in mux.friends_with_output()
        if refused or (has_output and transport.free_slots(friend) == 0):
            # out of room with output left: wake up when the transport has room
            self._waiting_space.add(friend)
            self.nursery.start_soon(self._wait_space, friend, refused)
        elif has_output:
            # Room again already (the flush let the session transmit, or the path changed
            # and with it the session's queue limit): go round once more instead of
            # sleeping with output left and nothing to wake us.
            self._send_wake.set()

    async def _wait_space(self, friend: bytes, refused: bool) -> None:
        try:
            await self.transport.wait_send_space(friend)
            if refused:
                # it said there was room and then refused: do not spin on that
                await trio.sleep(SEND_RETRY_S)
        finally:
            self._waiting_space.discard(friend)
        self._send_wake.set()

    async def _timer(self) -> None:
        while True:
            deadline = self.mux.next_deadline()
            self._timer_at = deadline if deadline is not None else math.inf
            self._timer_wake = trio.Event()
            with trio.move_on_at(self._timer_at):
                await self._timer_wake.wait()
            now = self.now()
            if now >= self._timer_at:
                self.mux.handle_timer(now)
                self.kick()

    # --- after every mux call ------------------------------------------------------------

    def kick(self, *, send_now: bool = False) -> None:
        """Dispatch the mux's events and wake the sender (call after every mux input);
        ``send_now``: do the sender's round here instead (local data just read: a request
        leaves without waiting for a scheduler round)."""
        self.busy_poll.note()
        self.dispatch()
        if send_now:
            self._send_round()
        else:
            self._send_wake.set()
        deadline = self.mux.next_deadline()
        if deadline is not None and deadline < self._timer_at:
            self._timer_wake.set()

    def dispatch(self) -> None:
        mux, pipes, on_event = self.mux, self.pipes, self.on_event
        while (event := mux.next_event()) is not None:
            on_event(event)
            if type(event) is TunnelData:  # the data path: skip the match
                pipe = pipes.get(event.handle)
                if pipe is not None:
                    pipe.put(event.data)
                    continue
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        match event:
            case TunnelData(handle, data):
                pipe = self.pipes.get(handle)
                if pipe is None:
                    self.mux.data_consumed(handle, len(data), self.now())
                else:
                    pipe.put(data)
            case DatagramReceived(handle, data):
                pipe = self.pipes.get(handle)
                if pipe is not None:
                    pipe.put(data)
            case PeerEof(handle):
                pipe = self.pipes.get(handle)
                if pipe is not None:
                    pipe.put(EOF)
            case TunnelClosed(handle, error):
                self._close_pipe(handle, error)
            case TunnelOpened(handle, _):
                pipe = self.pipes.get(handle)
                if pipe is not None:
                    pipe.opened = True
                    pipe.open_done.set()
            case TunnelOpenFailed(handle, _code, reason):
                pipe = self.pipes.get(handle)
                if pipe is not None:
                    pipe.failure = event
                    pipe.open_done.set()
                self._close_pipe(handle, f"open failed: {reason}")
            case SendSpaceAvailable(handle):
                pipe = self.pipes.get(handle)
                if pipe is not None:
                    pipe.space.set()
            case _:
                self.on_other_event(event)

    def _close_pipe(self, handle: int, error: str | None) -> None:
        pipe = self.pipes.pop(handle, None)
        if pipe is None:
            return
        pipe.closed = True
        pipe.open_done.set()
        pipe.space.set()
        pipe.put(_Closed(error))
        if pipe.cancel_scope is not None:
            pipe.cancel_scope.cancel()

    def on_other_event(self, event: Event) -> None:
        """Role-specific events (ConnectRequest, pongs, peer modes)."""

    def abort(self, pipe: Pipe, error: str) -> None:
        """The local side failed: abort the tunnel (no event follows) and forget the pipe."""
        if self.pipes.pop(pipe.handle, None) is not None:
            self.mux.close_tunnel(pipe.handle, error, self.now())
            self.kick()
        pipe.closed = True


def direct_writer(stream: object) -> Callable[[bytes], int] | None:
    """A non-blocking write to ``stream``'s socket (a TCP ``trio.SocketStream``), or None."""
    if not isinstance(stream, trio.SocketStream):
        return None
    fd = stream.socket.fileno()

    def write(data: bytes) -> int:
        return os.write(fd, data)  # the socket is non-blocking: BlockingIOError when full

    return write


def reset_on_close(stream: object) -> None:
    """Make closing a TCP ``trio.SocketStream`` send RST (an error the application sees)."""
    if isinstance(stream, trio.SocketStream):
        try:
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


async def close_quietly(stream: LocalStream) -> None:
    with trio.move_on_after(CLOSE_GRACE_S) as scope:
        scope.shield = True
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


async def pump_stream(driver: MuxDriver, pipe: Pipe, stream: LocalStream) -> str | None:
    """Carry ``stream`` over the tunnel of ``pipe`` until both are done; closes ``stream``.

    Returns None when the tunnel ended normally, else the error text.
    """
    mux, handle = driver.mux, pipe.handle
    result: list[str | None] = []
    pipe.direct = direct_writer(stream)

    async def reader() -> None:
        while True:
            room = mux.send_capacity(handle)
            if room <= 0:
                if pipe.closed:
                    return
                pipe.space = trio.Event()
                await pipe.space.wait()
                continue
            try:
                data = await stream.receive_some(min(room, READ_CHUNK_BYTES))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                fail(f"local read failed: {exc}")
                return
            if pipe.closed:
                return
            if not data:
                mux.stream_eof(handle, driver.now())
                driver.kick()
                return
            mux.stream_data(handle, bytes(data), driver.now())
            driver.kick(send_now=True)

    def fail(error: str) -> None:
        if not result:
            result.append(error)
        driver.abort(pipe, error)
        nursery.cancel_scope.cancel()

    async def writer() -> None:
        while True:
            item = await pipe.get()
            if pipe.direct_written:
                mux.data_consumed(handle, pipe.direct_written, driver.now())
                pipe.direct_written = 0
                driver.kick()
            if item is None:
                continue
            if isinstance(item, bytes) and pipe.inbox and isinstance(pipe.inbox[0], bytes):
                item = pipe.take_bytes(item)  # one send for everything delivered so far
            if isinstance(item, _Closed):
                if not result:
                    result.append(item.error)
                nursery.cancel_scope.cancel()
                return
            try:
                if isinstance(item, _Eof):
                    send_eof = getattr(stream, "send_eof", None)
                    if send_eof is not None:
                        await send_eof()
                    continue
                await stream.send_all(item)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                fail(f"local write failed: {exc}")
                return
            mux.data_consumed(handle, len(item), driver.now())
            driver.kick()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            nursery.start_soon(writer)
    finally:
        pipe.direct = None  # the socket closes below; its descriptor may be reused
        error = result[0] if result else "driver stopped"
        if not pipe.closed:
            driver.abort(pipe, error or "closed")
        if error is not None:
            reset_on_close(stream)
        await close_quietly(stream)
    return result[0] if result else None
