"""The UDP driver on Trio: bind like toxcore, run any DatagramCore, dispatch by first byte.

tox-protocol.md 3.1. One socket carries everything UDP. :func:`open_udp_socket` binds the first
free port of a range (toxcore: 33445..33545), dual-stack IPv6 (``::``, V6ONLY off) when asked,
with 4 MiB send/receive buffers (forced past ``net.core.[rw]mem_max`` where the process may,
data-path.md: small buffers overflow under load) and broadcast allowed (LAN discovery).
IPv4-mapped source addresses are normalised to plain IPv4 before a core sees them, and IPv4
destinations are mapped back when the socket is IPv6.

:class:`PacketDispatcher` is itself a :class:`tunnel.core.DatagramCore`: it routes each datagram
by its first byte to the core registered for that kind (DHT, onion, net_crypto ...), merges
their output and timers. :class:`UdpDriver` runs one core on one socket until cancelled, in
batches (data-path.md: one Trio wake-up costs more than a whole datagram's processing): each
wake-up reads until the socket is empty (at most ``RECEIVE_BATCH_DATAGRAMS``), feeds the core at
one ``now``, runs ``after_batch`` once and sends from a non-blocking socket.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import socket as _socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio

from tunnel.core import DatagramCore
from tunnel.wire.ip_port import Addr

MAX_UDP_PACKET_SIZE_BYTES = 65535
"""Receive buffer: toxcore's packets are at most 2048 bytes, but two of our own VPN peers may
agree on larger net_crypto data packets (IP-fragmented on the wire)."""
SOCKET_BUFFER_SIZE_BYTES = 4 * 1024 * 1024
RECEIVE_BATCH_DATAGRAMS = 256
"""At most this many datagrams per wake-up, so timers and other tasks still get their turn."""
_ADDR_CACHE_ENTRIES = 4096
TOX_PORT_RANGE = (33445, 33545)
SOL_UDP = 17
UDP_SEGMENT = 103
"""Linux: send one buffer as several datagrams of the given size (UDP GSO, kernel >= 4.18)."""
UDP_GRO = 104
"""Linux: receive runs of same-size datagrams from one sender in one call (kernel >= 5.0)."""
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
GSO_MAX_SEGMENT_BYTES = 1472
"""Only datagrams that fit a 1500-byte IPv4 link unfragmented are sent with GSO."""
_GSO_REFUSED_ERRNOS = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
_CMSG_SPACE_BYTES = 64

log = logging.getLogger(__name__)


class PacketDispatcher:
    """Routes datagrams by first byte to registered cores; a DatagramCore itself."""

    def __init__(self) -> None:
        self._routes: dict[int, DatagramCore] = {}
        self._cores: list[DatagramCore] = []
        self.dropped_unknown_kind = 0

    def handles(self, kind: int) -> bool:
        """True when a core is registered for packet ``kind``."""
        return kind in self._routes

    def register(self, kinds: Iterable[int], core: DatagramCore) -> None:
        """Send datagrams whose first byte is in ``kinds`` to ``core``.

        Raises:
            ValueError: a kind is already taken by another core.
        """
        kinds = list(kinds)
        for kind in kinds:
            if kind in self._routes and self._routes[kind] is not core:
                raise ValueError(f"packet kind {kind:#04x} already registered")
        for kind in kinds:
            self._routes[kind] = core
        if all(c is not core for c in self._cores):
            self._cores.append(core)

    @property
    def cores(self) -> list[DatagramCore]:
        """The registered cores, in registration order."""
        return list(self._cores)

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Hand the datagram to the core registered for its first byte (else count a drop)."""
        core = self._routes.get(data[0]) if data else None
        if core is None:
            self.dropped_unknown_kind += 1
            return
        core.receive(data, addr, now)

    def receive_many(self, items: list[tuple[bytes, Addr]], now: float) -> None:
        """:meth:`receive` for each datagram of a batch, in order (fewer calls per datagram)."""
        routes = self._routes
        for data, addr in items:
            core = routes.get(data[0]) if data else None
            if core is None:
                self.dropped_unknown_kind += 1
            else:
                core.receive(data, addr, now)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Everything every core wants sent."""
        out: list[tuple[Addr, bytes]] = []
        for core in self._cores:
            out.extend(core.datagrams_to_send())
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of any core."""
        deadlines = [d for d in (c.next_deadline() for c in self._cores) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run the timers of every core that is due."""
        for core in self._cores:
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)


def normalise_addr(addr: tuple[object, ...]) -> Addr:
    """``(host, port)`` from a socket address, IPv4-mapped IPv6 as plain IPv4."""
    host = str(addr[0]).split("%", 1)[0]
    port = int(str(addr[1]))
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (host, port)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return (str(ip.ipv4_mapped), port)
    return (str(ip), port)


def _set_buffer_sizes(sock: trio.socket.SocketType) -> None:
    """4 MiB buffers: forced (CAP_NET_ADMIN) if allowed, else as large as the sysctl permits."""
    pairs = (
        (getattr(_socket, "SO_RCVBUFFORCE", None), _socket.SO_RCVBUF),
        (getattr(_socket, "SO_SNDBUFFORCE", None), _socket.SO_SNDBUF),
    )
    for forced, plain in pairs:
        if forced is not None:
            try:
                sock.setsockopt(_socket.SOL_SOCKET, forced, SOCKET_BUFFER_SIZE_BYTES)
                continue
            except OSError:  # EPERM without CAP_NET_ADMIN
                pass
        sock.setsockopt(_socket.SOL_SOCKET, plain, SOCKET_BUFFER_SIZE_BYTES)


@dataclass(frozen=True, slots=True)
class BoundSocket:
    """A bound UDP socket and what it can reach."""

    sock: trio.socket.SocketType
    port: int
    ipv6: bool
    gro: bool = False
    """UDP_GRO is on: a receive may return several same-size datagrams (see UdpDriver)."""

    def wire_addr(self, addr: Addr) -> tuple[str, int]:
        """The destination as this socket needs it (IPv4 mapped on a dual-stack socket)."""
        host, port = addr
        if self.ipv6 and ":" not in host:
            return (f"::ffff:{host}", port)
        return (host, port)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


async def open_udp_socket(
    host: str | None = None,
    port_start: int = TOX_PORT_RANGE[0],
    port_end: int = TOX_PORT_RANGE[1],
    *,
    ipv6: bool = True,
) -> BoundSocket:
    """Bind the first free port in ``port_start..port_end`` (port 0: any free port).

    ``ipv6`` binds a dual-stack socket on ``::`` (unless ``host`` is given); otherwise IPv4
    on ``0.0.0.0``. Raises ``OSError`` if no port in the range is free.
    """
    family = _socket.AF_INET6 if ipv6 else _socket.AF_INET
    if host is not None and ":" not in host:
        family, ipv6 = _socket.AF_INET, False
    bind_host = host if host is not None else ("::" if ipv6 else "0.0.0.0")
    last_error: OSError | None = None
    for port in range(port_start, max(port_start, port_end) + 1):
        sock = trio.socket.socket(family, _socket.SOCK_DGRAM)
        try:
            if ipv6:
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
            _set_buffer_sizes(sock)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_BROADCAST, 1)
            await sock.bind((bind_host, port))
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            last_error = exc
            continue
        bound_port = int(sock.getsockname()[1])
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            gro = True
        except OSError:  # older kernel: one datagram per receive
            gro = False
        return BoundSocket(sock, bound_port, ipv6, gro)
    raise OSError(errno.EADDRINUSE, f"no free UDP port in {port_start}..{port_end}") from (
        last_error
    )


class UdpDriver:
    """Runs one :class:`DatagramCore` on one :class:`BoundSocket` until cancelled, in batches.

    The reader waits until the socket is readable, then feeds every waiting datagram (up to
    ``RECEIVE_BATCH_DATAGRAMS``) to the core at one ``now``, calls ``after_batch`` once and
    flushes. Sends go out at once from a non-blocking socket; when the kernel buffer is full
    they stay queued (in order) until it is writable again. ``after_batch`` also runs after
    every timer.
    """

    def __init__(
        self,
        core: DatagramCore,
        bound: BoundSocket,
        after_batch: Callable[[], None] | None = None,
    ) -> None:
        self.core = core
        self.bound = bound
        self.after_batch = after_batch
        self.sent = 0
        self.received = 0
        self.send_errors = 0
        self._sock: _socket.socket | None = None
        self._pending: deque[tuple[Addr, bytes]] = deque()
        self._addr_cache: dict[str, str] = {}
        self._wakeup = trio.Event()
        self._timer_at = -math.inf
        """The deadline the timer task sleeps until (-inf: it is not sleeping)."""
        self._in_batch = False
        self.gso = True
        """Use UDP GSO in :meth:`send_batch_now` (turned off for good on the first refusal)."""
        self.gso_sends = 0
        self.gro_receives = 0
        self._buffer = bytearray(MAX_UDP_PACKET_SIZE_BYTES)
        self._view = memoryview(self._buffer)
        self._buffers = [self._buffer]
        self._handed_over = False
        self._resume = trio.Event()

    def kick(self) -> None:
        """Call after giving the core a command: flush its output and re-read its deadline."""
        self.flush()
        if not self._in_batch:
            self._reschedule()

    def _reschedule(self) -> None:
        """Wake the timer task only if the core's deadline moved before the one it sleeps
        until (a Trio wake-up per received batch costs more than reading the deadline)."""
        timer_at = self._timer_at
        if timer_at == -math.inf:
            return  # awake: it reads the deadline before it sleeps again
        deadline = self.core.next_deadline()
        if deadline is not None and deadline < timer_at:
            self._wakeup.set()

    def flush(self) -> None:
        """Send everything the core has queued, without blocking (no-op before :meth:`run`).

        Runs of datagrams to one address with one size (the last may be shorter: a bulk
        transfer's data packets) go out as one UDP GSO ``sendmsg``: one system call for up
        to ``GSO_MAX_SEGMENTS`` instead of one each (the sender of a forwarded stream spent a
        fifth of its time in ``sendto``). The wire carries ordinary datagrams either way.
        """
        sock = self._sock
        if sock is None:
            return
        items = self.core.datagrams_to_send()
        pending = self._pending
        if pending:
            pending.extend(items)
            items = list(pending)
            pending.clear()
        wire_addr = self.bound.wire_addr
        count = len(items)
        i = 0
        while i < count:
            addr, data = items[i]
            size = len(data)
            j = i + 1
            if self.gso and size <= GSO_MAX_SEGMENT_BYTES:
                limit = min(count, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit:
                    next_addr, next_data = items[j]
                    next_size = len(next_data)
                    if next_addr != addr or next_size > size:
                        break
                    j += 1
                    if next_size < size:
                        break  # the last segment may be shorter
            try:
                if j - i == 1:
                    sock.sendto(data, wire_addr(addr))
                else:
                    segments = [item[1] for item in items[i:j]]
                    sock.sendmsg(
                        segments,
                        [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                        0,
                        wire_addr(addr),
                    )
            except BlockingIOError:
                pending.extend(items[i:])
                self._wakeup.set()  # the timer task waits until writable
                return
            except OSError as exc:  # unreachable network, no IPv6 route...
                if j - i > 1 and exc.errno in _GSO_REFUSED_ERRNOS:
                    log.info("UDP GSO refused (%s): sending datagrams one by one", exc)
                    self.gso = False
                    continue  # the same run again, one by one
                self.send_errors += j - i
                log.debug("send to %s failed: %s", addr, exc)
            else:
                self.sent += j - i
                if j - i > 1:
                    self.gso_sends += 1
            i = j

    def send_now(self, addr: tuple[str, int], data: bytes) -> bool:
        """Send one datagram at once, from any thread (the VPN's TUN reader), bypassing the
        core; ``addr`` as :meth:`BoundSocket.wire_addr` gives it. Never blocks: a full
        buffer or an error drops it (False)."""
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.sendto(data, addr)
        except OSError:  # BlockingIOError included: lossy data, dropped
            self.send_errors += 1
            return False
        self.sent += 1
        return True

    def send_batch_now(self, addr: tuple[str, int], packets: list[bytes]) -> int:
        """Send datagrams to one destination at once, from any thread, never blocking (see
        :meth:`send_now`); runs of equal size go out as one UDP GSO ``sendmsg``
        (data-path.md). Returns how many were sent."""
        sock = self._sock
        if sock is None:
            return 0
        sent = 0
        count = len(packets)
        i = 0
        while i < count:
            size = len(packets[i])
            j = i + 1
            if self.gso and size <= GSO_MAX_SEGMENT_BYTES:
                limit = min(count, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit and len(packets[j]) == size:
                    j += 1
                if j < limit and len(packets[j]) < size:
                    j += 1  # the last segment may be shorter
            if j - i == 1:
                sent += self.send_now(addr, packets[i])
                i = j
                continue
            try:
                sock.sendmsg(
                    packets[i:j], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr
                )
            except BlockingIOError:
                self.send_errors += j - i
            except OSError as exc:
                if exc.errno in _GSO_REFUSED_ERRNOS:
                    log.info("UDP GSO refused (%s): sending datagrams one by one", exc)
                    self.gso = False
                    continue  # the same run again, one by one
                self.send_errors += j - i
            else:
                sent += j - i
                self.sent += j - i
                self.gso_sends += 1
            i = j
        return sent

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive, feed the core, send what it queues, fire its timers. Runs until cancelled."""
        sock = _socket.socket(fileno=os.dup(self.bound.sock.fileno()))
        sock.setblocking(False)
        self._sock = sock
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._timer_loop, sock)
                task_status.started()
        finally:
            self._sock = None
            sock.close()

    def _source(self, raw: tuple[object, ...]) -> Addr:
        host = raw[0]
        port = raw[1]
        if not self.bound.ipv6 and isinstance(host, str) and isinstance(port, int):
            return (host, port)
        cache = self._addr_cache
        key = str(host)
        normal = cache.get(key)
        if normal is None:
            if len(cache) >= _ADDR_CACHE_ENTRIES:
                cache.clear()
            normal = cache[key] = normalise_addr((host, 0))[0]
        return (normal, int(str(port)))

    def read_available(self, limit: int = RECEIVE_BATCH_DATAGRAMS) -> list[tuple[bytes, Addr]]:
        """Read up to ``limit`` waiting datagrams without blocking, from any thread (only one
        thread reads at a time: Trio's reader, or the thread :meth:`hand_over_receive` gave
        the socket to). Runs coalesced by UDP GRO come back as separate datagrams."""
        sock = self._sock
        if sock is None:
            return []
        items: list[tuple[bytes, Addr]] = []
        source = self._source
        buffer = self._buffer
        view = self._view
        gro = self.bound.gro
        for _ in range(limit):
            segment = 0
            try:
                if gro:
                    size, ancillary, _flags, raw = sock.recvmsg_into(
                        self._buffers, _CMSG_SPACE_BYTES
                    )
                    for level, kind, value in ancillary:
                        if level == SOL_UDP and kind == UDP_GRO:
                            segment = int.from_bytes(value, sys.byteorder)
                else:
                    size, raw = sock.recvfrom_into(buffer)
            except BlockingIOError:
                break
            except OSError as exc:  # ICMP errors surface here on Linux
                log.debug("recvfrom: %s", exc)
                continue
            addr = source(raw)
            if 0 < segment < size:  # several datagrams coalesced by GRO
                self.gro_receives += 1
                for start in range(0, size, segment):
                    items.append((bytes(view[start : min(size, start + segment)]), addr))
                continue
            items.append((bytes(view[:size]), addr))
        return items

    @property
    def running(self) -> bool:
        """:meth:`run` has its socket (reads and sends work)."""
        return self._sock is not None

    def hand_over_receive(self) -> None:
        """Trio thread: stop reading the socket; another thread reads it from now on (with
        :meth:`read_available`) and passes what is not its own to :meth:`receive_batch`."""
        self._handed_over = True

    def receiving_elsewhere(self) -> bool:
        """:meth:`hand_over_receive` is in force."""
        return self._handed_over

    def take_back_receive(self) -> None:
        """Trio thread: read the socket here again (undoes :meth:`hand_over_receive`)."""
        self._handed_over = False
        self._resume.set()

    def receive_batch(self, items: list[tuple[bytes, Addr]]) -> None:
        """Trio thread: feed datagrams read elsewhere to the core, as one receive batch."""
        if items:
            self._take_batch(items, trio.current_time())

    def _take_batch(self, items: list[tuple[bytes, Addr]], now: float) -> None:
        self._feed(items, now)
        self.received += len(items)
        self._after_batch()

    def _after_batch(self) -> None:
        self._in_batch = True
        try:
            if self.after_batch is not None:
                self.after_batch()
            self.flush()
        finally:
            self._in_batch = False
        self._reschedule()  # the deadline may have moved

    def _feed(self, items: list[tuple[bytes, Addr]], now: float) -> None:
        receive_many: Callable[[list[tuple[bytes, Addr]], float], None] | None = getattr(
            self.core, "receive_many", None
        )
        if receive_many is not None:
            receive_many(items, now)
            return
        receive = self.core.receive
        for data, addr in items:
            receive(data, addr, now)

    async def _receive_loop(self, sock: _socket.socket) -> None:
        while True:
            if self._handed_over:
                await self._resume.wait()
                self._resume = trio.Event()
                continue
            await trio.lowlevel.wait_readable(sock)
            if self.receiving_elsewhere():
                continue  # handed over while we waited: the other thread reads it
            now = trio.current_time()
            self._take_batch(self.read_available(), now)

    async def _timer_loop(self, sock: _socket.socket) -> None:
        core = self.core
        while True:
            if self._pending:
                await trio.lowlevel.wait_writable(sock)
                self.flush()
                continue
            self.flush()
            now = trio.current_time()
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
                if self.after_batch is not None:
                    self.after_batch()
                await trio.lowlevel.checkpoint()
                continue
            self._timer_at = deadline if deadline is not None else math.inf
            try:
                with trio.move_on_at(self._timer_at):
                    await self._wakeup.wait()
            finally:
                self._timer_at = -math.inf
            self._wakeup = trio.Event()
