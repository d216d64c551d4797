"""Trio drivers for TCP relays: the relay server and the client-side relay pool.

* :func:`serve_tcp_relay` listens on the configured ports and runs a sans-IO
  :class:`tunnel.tcp_relay.server.RelayServer` for every accepted stream. It reports a
  :class:`TcpRelayServer` through ``task_status`` (bound ports, statistics, the onion hook).
  ``tunnel bootstrapd`` calls it; any node may.
* :class:`RelayPoolDriver` runs a :class:`tunnel.tcp_relay.connections.RelayPool`: it opens
  streams to relays (directly or through a SOCKS5 / HTTP CONNECT proxy), moves bytes, runs the
  pool's timers and hands pool events to the layers above. A send refused because the relay's
  queue is full can await :meth:`RelayPoolDriver.wait_writable` before it is tried again.

Each stream has one reader task and one writer task. The writer sleeps until the core has
output for it (a one-slot "wake" channel), so control frames queued while a large write is in
progress go out right after it, in nonce order. A stream the core closes is closed here and
nothing else: other clients are unaffected. ``now`` is always ``trio.current_time()``.

Client writes are paced (:class:`WriteBudget`, a token bucket per relay connection, and
``TCP_NOTSENT_LOWAT`` on plain sockets): tox-bootstrapd's relay reads slowly (it polls every
30 ms) and, fed with large writes, its receive window can stay shut with a frame half read, which
stalls the connection for good. Small writes spread in time keep it reading.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from tunnel.crypto import KeyPair, Rng
from tunnel.io.proxy import ProxyConfig, open_tcp_stream
from tunnel.io.quickack import quick_ack
from tunnel.onion.relay import OnionRelay, TcpClientSource
from tunnel.tcp_relay.client import TCP_CONNECTION_TIMEOUT_S
from tunnel.tcp_relay.connections import PoolEvent, RelayInfo, RelayPool
from tunnel.tcp_relay.server import (
    OnionRequestReceived,
    OnionSource,
    RelayServer,
    ServerLimits,
    ServerStatistics,
)
from tunnel.wire.ip_port import Addr, IPPort
from tunnel.wire.tcp_relay import MAX_FRAME_PLAIN_SIZE_BYTES

READ_CHUNK_BYTES = 16 * 1024
WRITE_CHUNK_BYTES = 64 * 1024
SERVER_GRACE_S = 1.0
DRAIN_POLL_S = 0.005
MAX_ROUTED_BYTES = MAX_FRAME_PLAIN_SIZE_BYTES - 1
"""The largest packet :meth:`RelayPoolDriver.send_to_peer` can route (one frame with its id)."""
"""How often :meth:`RelayPoolDriver.drain` looks whether the relay streams are written out."""
CLIENT_WRITE_RATE_BYTES_S = 5.5e6
"""Refill rate of a relay client connection's :class:`WriteBudget` (~44 Mbit/s)."""
CLIENT_WRITE_BURST_BYTES = 16 * 1024
"""Most a relay client connection writes at once after being idle."""
CLIENT_WRITE_QUANTUM_BYTES = 4 * 1024
"""A paced client writer waits for this much budget before its next write (at most the burst),
so writes are a few KiB each, spread in time, rather than one frame per timer wake-up."""
CLIENT_NOTSENT_LOWAT_BYTES = 8 * 1024
"""``TCP_NOTSENT_LOWAT`` on plain relay client sockets: the socket is writable only while less
than this is queued unsent, so data waits in our outbox (behind control frames) instead of in
the kernel."""
_TCP_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)

log = logging.getLogger(__name__)

RelayOpener = Callable[[str, int], Awaitable[trio.abc.Stream]]
"""``await opener(host, port)``: a stream to a relay (e.g. through Tor); raises OSError."""


class _Waker:
    """A level-triggered wake-up for one writer task (coalesces many wake-ups into one)."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[None](1)

    def wake(self) -> None:
        try:
            self._send.send_nowait(None)
        except trio.WouldBlock:
            pass
        except trio.ClosedResourceError:
            pass

    async def wait(self) -> None:
        await self._recv.receive()


# =============================================================================== server


@dataclass(slots=True)
class _ServerConn:
    stream: trio.abc.Stream
    waker: _Waker
    scope: trio.CancelScope


class TcpRelayServer:
    """A running relay server (what :func:`serve_tcp_relay` reports when started)."""

    def __init__(
        self,
        core: RelayServer,
        on_onion_request: Callable[[OnionRequestReceived], None] | None,
    ) -> None:
        self.core = core
        self.ports: list[int] = []
        self.addresses: list[tuple[str, int]] = []
        self._on_onion_request = on_onion_request
        self._conns: dict[int, _ServerConn] = {}
        self._timer_waker = _Waker()
        self.tune_accepted: Callable[[trio.SocketStream], object] | None = None
        """Called with each accepted socket stream before it is served (e.g. smaller send
        buffers for a relay whose clients come through Tor)."""

    @property
    def public_key(self) -> bytes:
        """The relay's public key (its DHT key)."""
        return self.core.keys.public_key

    def statistics(self) -> ServerStatistics:
        """The server core's counters."""
        return self.core.statistics()

    def send_onion_response(self, source: OnionSource, packet: bytes) -> bool:
        """Give a raw 0x84/0x86 packet back to the relay client that sent the onion request."""
        ok = self.core.send_onion_response(source, packet)
        self._flush()
        return ok

    def _flush(self) -> None:
        self._flush_output()
        self._timer_waker.wake()  # the core's next deadline may have moved

    def _flush_output(self) -> None:
        for handle in self.core.pop_writable():
            conn = self._conns.get(handle)
            if conn is not None:
                conn.waker.wake()
        for handle in self.core.pop_closed():
            conn = self._conns.get(handle)
            if conn is not None:
                log.debug("relay: closing %d: %s", handle, self.core.close_reason(handle))
                conn.scope.cancel()
        while (ev := self.core.next_event()) is not None:
            if self._on_onion_request is not None:
                self._on_onion_request(ev)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._timer_waker.wait()
            self.core.handle_timer(trio.current_time())
            self._flush_output()  # not _flush: waking this loop from itself made it spin

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one client over an already open stream (e.g. an in-process memory stream of
        the node that owns a private relay); returns when the connection ends."""
        await self._handle(stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        if self.tune_accepted is not None and isinstance(stream, trio.SocketStream):
            self.tune_accepted(stream)
        stream = quick_ack(stream)  # small frames from Nagle senders (Tor): no 40 ms waits
        handle = self.core.accept(trio.current_time())
        conn = _ServerConn(stream, _Waker(), trio.CancelScope())
        self._conns[handle] = conn
        self._flush()
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, handle, conn)
                    await self._reader(handle, conn)
                    nursery.cancel_scope.cancel()
        finally:
            del self._conns[handle]
            self.core.connection_lost(handle)
            self._flush()
            await trio.aclose_forcefully(stream)

    async def _reader(self, handle: int, conn: _ServerConn) -> None:
        while True:
            try:
                data = await conn.stream.receive_some(READ_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            self.core.receive_data(handle, bytes(data), trio.current_time())
            self._flush()

    async def _writer(self, handle: int, conn: _ServerConn) -> None:
        while True:
            await conn.waker.wait()
            while data := self.core.data_to_send(handle, WRITE_CHUNK_BYTES):
                try:
                    await conn.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    conn.scope.cancel()
                    return


async def serve_tcp_relay(
    keypair: KeyPair,
    ports: Sequence[int],
    *,
    host: str | None = None,
    rng: Rng = os.urandom,
    limits: ServerLimits | None = None,
    on_onion_request: Callable[[OnionRequestReceived], None] | None = None,
    admit: Callable[[bytes], bool] | None = None,
    task_status: trio.TaskStatus[TcpRelayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Tox TCP relay on ``ports`` (all interfaces, or ``host``) until cancelled.

    Args:
        keypair: the relay's identity (toxcore and tox-bootstrapd use the DHT key pair).
        ports: TCP ports to listen on (0 picks a free port; see ``TcpRelayServer.ports``).
        host: address to bind, e.g. ``"127.0.0.1"``; None binds every interface.
        rng: randomness (``os.urandom`` in production).
        limits: per-server and per-client limits.
        on_onion_request: called with each TCP onion request (0x08) when given; answer with
            :meth:`TcpRelayServer.send_onion_response`. Without it onion requests are ignored.
        admit: a private relay's filter on client/target keys (``RelayServer.admit``), e.g.
            a node's friends only.
        task_status: receives the :class:`TcpRelayServer` once every port is listening.

    Raises:
        OSError: a port could not be bound.
    """
    core = RelayServer(
        keypair, rng, limits=limits, onion_enabled=on_onion_request is not None, admit=admit
    )
    server = TcpRelayServer(core, on_onion_request)
    listeners: list[trio.SocketListener] = []
    try:
        for port in ports:
            listeners.extend(await trio.open_tcp_listeners(port, host=host))
        for listener in listeners:
            sockname = listener.socket.getsockname()
            server.addresses.append((sockname[0], sockname[1]))
            if sockname[1] not in server.ports:
                server.ports.append(sockname[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server._timer_loop)
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, server._handle, [listener])
            task_status.started(server)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


class TcpOnionBridge:
    """An :class:`OnionRelay` that also serves the relay's TCP clients (node A over TCP).

    It is a :class:`tunnel.core.DatagramCore` (run it on the UDP socket with
    ``tunnel.io.udp.UdpDriver``); pass :meth:`on_onion_request` to :func:`serve_tcp_relay`
    and set :attr:`server` (and :attr:`kick`, the UDP driver's ``kick``) once both run.
    Onion responses for TCP clients (0x8e at node A) go back over the relay as 0x09.
    """

    def __init__(self, onion: OnionRelay) -> None:
        self.onion = onion
        self.server: TcpRelayServer | None = None
        self.kick: Callable[[], None] = lambda: None
        self.responses_delivered = 0
        self.responses_undeliverable = 0

    def on_onion_request(self, request: OnionRequestReceived) -> None:
        """Hook for :func:`serve_tcp_relay`: a TCP client's 0x08 onion request."""
        source = TcpClientSource(request.source.handle, request.source.identifier)
        self.onion.receive_tcp_onion_request(request.packet, source, trio.current_time())
        self._deliver()
        self.kick()

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """UDP datagram for the onion relay."""
        self.onion.receive(data, addr, now)
        self._deliver()

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """UDP datagrams the onion relay wants sent."""
        return self.onion.datagrams_to_send()

    def next_deadline(self) -> float | None:
        """The onion relay's next timer."""
        return self.onion.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run the onion relay's timers."""
        self.onion.handle_timer(now)
        self._deliver()

    def _deliver(self) -> None:
        for source, packet in self.onion.tcp_responses_to_send():
            server = self.server
            if server is not None and server.send_onion_response(
                OnionSource(source.connection_id, source.identifier), packet
            ):
                self.responses_delivered += 1
            else:
                self.responses_undeliverable += 1


# =============================================================================== client


class WriteBudget:
    """A token bucket pacing the writes of one relay connection (sans-IO: callers pass ``now``).

    The bucket refills at ``rate_bytes_s`` up to ``burst_bytes``. :meth:`spend` may take it into
    debt (a frame is never split, and never waits for more budget than the bucket can hold);
    :meth:`wait_s` says how long until the next write may go.
    """

    def __init__(
        self,
        now: float,
        rate_bytes_s: float = CLIENT_WRITE_RATE_BYTES_S,
        burst_bytes: int = CLIENT_WRITE_BURST_BYTES,
    ) -> None:
        if rate_bytes_s <= 0 or burst_bytes <= 0:
            raise ValueError("a write budget needs a positive rate and burst")
        self.rate_bytes_s = rate_bytes_s
        self.burst_bytes = burst_bytes
        self._tokens = float(burst_bytes)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(
                float(self.burst_bytes), self._tokens + (now - self._updated) * self.rate_bytes_s
            )
            self._updated = now

    def available(self, now: float) -> int:
        """Whole bytes that may be written now (0 while in debt)."""
        self._refill(now)
        return max(0, int(self._tokens))

    def wait_s(self, now: float, want_bytes: int = 1) -> float:
        """Seconds until ``want_bytes`` (capped at the burst) may be written; 0: now."""
        self._refill(now)
        missing = min(want_bytes, self.burst_bytes) - self._tokens
        return max(0.0, missing / self.rate_bytes_s)

    def spend(self, nbytes: int, now: float) -> None:
        """Account for ``nbytes`` written (the balance may go negative)."""
        self._refill(now)
        self._tokens -= nbytes


def _set_notsent_lowat(stream: trio.abc.Stream, nbytes: int) -> None:
    """``TCP_NOTSENT_LOWAT`` on a plain TCP socket stream, where the platform has it."""
    if _TCP_NOTSENT_LOWAT is None or not isinstance(stream, trio.SocketStream):
        return
    try:
        stream.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, nbytes)
    except OSError as exc:
        log.debug("relay: TCP_NOTSENT_LOWAT not set: %s", exc)


@dataclass(slots=True)
class _ClientConn:
    stream: trio.abc.Stream
    waker: _Waker
    scope: trio.CancelScope
    budget: WriteBudget
    writing: bool = False


class RelayPoolDriver:
    """Runs a :class:`RelayPool` on Trio; call :meth:`run` in a nursery (``nursery.start``).

    The layers above call the pool through this object (so the driver wakes up and writes)
    and receive :data:`PoolEvent` objects through ``on_event`` or, without it, from
    :meth:`next_event`.
    """

    def __init__(
        self,
        self_keys: KeyPair,
        *,
        rng: Rng = os.urandom,
        proxy: ProxyConfig | None = None,
        on_event: Callable[[PoolEvent], None] | None = None,
        pool: RelayPool | None = None,
        opener: RelayOpener | None = None,
    ) -> None:
        self.pool = pool if pool is not None else RelayPool(self_keys, rng)
        self.proxy = proxy
        self.opener: RelayOpener | None = opener
        """Opens relay streams instead of ``open_tcp_stream(proxy=...)`` when set (Tor mode);
        may be set after construction, before :meth:`run`."""
        self._on_event = on_event
        self._events_send, self._events_recv = trio.open_memory_channel[PoolEvent](math.inf)
        self._conns: dict[bytes, _ClientConn] = {}
        self._waker = _Waker()
        self._nursery: trio.Nursery | None = None
        self._room = trio.Event()  # set (and replaced) when a send to a peer may fit again
        self._room_waiters = 0
        self.connects_started = 0

    # ------------------------------------------------------------------ for the layers above

    def add_relay(self, host: str, port: int, public_key: bytes) -> None:
        """Keep a connection to the relay at ``host:port`` (an IP address) with ``public_key``."""
        self.pool.add_relay(IPPort.parse(host, port), public_key, trio.current_time())
        self.wake()

    def remove_relay(self, public_key: bytes) -> None:
        """Stop using a relay."""
        self.pool.remove_relay(public_key)
        self.wake()

    def add_peer(self, public_key: bytes) -> None:
        """Route to a peer (DHT pk) on every relay."""
        self.pool.add_peer(public_key)
        self.wake()

    def remove_peer(self, public_key: bytes) -> None:
        """Stop routing to a peer."""
        self.pool.remove_peer(public_key)
        self.wake()

    def send_to_peer(self, public_key: bytes, data: bytes) -> bool:
        """Send a net_crypto packet to a peer (False: not possible right now)."""
        ok = self.pool.send_to_peer(public_key, data)
        self._flush()
        return ok

    def send_oob(self, relay_public_key: bytes, dest_public_key: bytes, data: bytes) -> bool:
        """OOB data via one relay."""
        ok = self.pool.send_oob(relay_public_key, dest_public_key, data)
        self._flush()
        return ok

    def send_onion_request(self, payload: bytes, relay_public_key: bytes | None = None) -> bool:
        """An onion request through a relay acting as node A."""
        ok = self.pool.send_onion_request(payload, relay_public_key)
        self._flush()
        return ok

    async def next_event(self) -> PoolEvent:
        """Wait for the next pool event (when no ``on_event`` callback was given)."""
        return await self._events_recv.receive()

    def wake(self) -> None:
        """Make the driver look at the pool now (after calling pool methods directly)."""
        self._flush()
        self._waker.wake()

    async def wait_writable(self, public_key: bytes, size: int = MAX_ROUTED_BYTES) -> None:
        """Wait until :meth:`send_to_peer` would route ``size`` bytes to the peer (DHT pk): it
        is online on a relay whose send queue has room for them. Returns at once (after a
        checkpoint) if it has; waits while the peer is online nowhere, so bound it with a
        timeout. Room is re-checked whenever a relay writer takes queued data or pool events
        (a peer online or offline, a relay lost) come in.

        Raises:
            ValueError: ``size`` outside ``1..MAX_ROUTED_BYTES`` (it could never fit).
        """
        if not 1 <= size <= MAX_ROUTED_BYTES:
            raise ValueError(f"a routed packet has 1..{MAX_ROUTED_BYTES} bytes, not {size}")
        await trio.lowlevel.checkpoint()
        self._room_waiters += 1
        try:
            while not self.pool.peer_has_room(public_key, size):
                await self._room.wait()
        finally:
            self._room_waiters -= 1

    def _room_changed(self) -> None:
        if self._room_waiters:
            self._room.set()
            self._room = trio.Event()

    def output_pending(self) -> bool:
        """True while a connected relay stream still has queued output or a write under way."""
        return any(conn.writing or self.pool.wants_write(pk) for pk, conn in self._conns.items())

    async def drain(self, timeout_s: float) -> None:
        """Wait until every connected relay stream has written what is queued for it (at most
        ``timeout_s``): at shutdown, the friends' kill packets must leave before the streams
        close."""
        with trio.move_on_after(timeout_s):
            while self.output_pending():  # noqa: ASYNC110 (shutdown only: polling is enough)
                await trio.sleep(DRAIN_POLL_S)

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the pool until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    now = trio.current_time()
                    self.pool.handle_timer(now)
                    self._flush()
                    deadline = self.pool.next_deadline()
                    with trio.move_on_at(deadline if deadline is not None else math.inf):
                        await self._waker.wait()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def _flush(self) -> None:
        pool = self.pool
        for pk in pool.pop_to_close():
            conn = self._conns.get(pk)
            if conn is not None:
                conn.scope.cancel()
        if self._nursery is not None:
            for info in pool.connect_requests():
                self.connects_started += 1
                self._nursery.start_soon(self._connection, info)
        for pk in pool.pop_writable():
            conn = self._conns.get(pk)
            if conn is not None:
                conn.waker.wake()
        events = False
        while (ev := pool.next_event()) is not None:
            events = True
            if self._on_event is not None:
                self._on_event(ev)
            else:
                self._events_send.send_nowait(ev)
        if events:
            self._room_changed()  # routes (or relays) came or went

    async def _connection(self, info: RelayInfo) -> None:
        pk = info.public_key
        host, port = info.ip_port.to_addr()
        try:
            stream: trio.abc.Stream
            if self.opener is not None:
                with trio.fail_after(TCP_CONNECTION_TIMEOUT_S):
                    stream = await self.opener(host, port)
            else:
                stream = await open_tcp_stream(
                    host, port, proxy=self.proxy, timeout_s=TCP_CONNECTION_TIMEOUT_S
                )
        except (OSError, trio.TooSlowError) as exc:
            log.debug("relay %s: connect failed: %s", info.ip_port, exc)
            self.pool.connection_failed(pk, trio.current_time(), str(exc))
            self.wake()
            return
        if self.opener is None and self.proxy is None:
            _set_notsent_lowat(stream, CLIENT_NOTSENT_LOWAT_BYTES)
        conn = _ClientConn(
            quick_ack(stream), _Waker(), trio.CancelScope(), WriteBudget(trio.current_time())
        )
        self._conns[pk] = conn
        self.pool.connection_made(pk, trio.current_time())
        self.wake()
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, pk, conn)
                    await self._reader(pk, conn)
                    nursery.cancel_scope.cancel()
        finally:
            if self._conns.get(pk) is conn:
                del self._conns[pk]
            self.pool.connection_lost(pk, trio.current_time())
            self.wake()
            await trio.aclose_forcefully(stream)

    async def _reader(self, pk: bytes, conn: _ClientConn) -> None:
        while True:
            try:
                data = await conn.stream.receive_some(READ_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                return
            self.pool.receive_data(pk, bytes(data), trio.current_time())
            self._flush()
            self._waker.wake()

    async def _writer(self, pk: bytes, conn: _ClientConn) -> None:
        budget = conn.budget
        while True:
            await conn.waker.wait()
            while True:
                # pace first, then take frames: whatever was queued meanwhile (control frames
                # first) goes out in this write
                wait_s = budget.wait_s(trio.current_time(), CLIENT_WRITE_QUANTUM_BYTES)
                if wait_s > 0:
                    await trio.sleep(wait_s)
                try:
                    await conn.stream.wait_send_all_might_not_block()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    conn.scope.cancel()
                    return
                now = trio.current_time()
                data = self.pool.data_to_send(pk, max(1, budget.available(now)))
                if not data:
                    break
                self._room_changed()  # the send queue shrank
                budget.spend(len(data), now)
                conn.writing = True
                try:
                    await conn.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    conn.scope.cancel()
                    return
                finally:
                    conn.writing = False
