"""VPN data path pieces that run on their own threads (issue #9, data path).

The Trio thread keeps the control plane; the per-packet work runs on plain threads with
blocking I/O, as measured in the issue. This module holds:

* :class:`TunWriter`: packets received from members are queued and written into the TUN
  device on a dedicated thread, so the kernel's receive processing overlaps with the rest;
* :func:`crypto_warmer`: the pump's optional keep-warm tick;
* :class:`UdpReceiver`: while the VPN runs, the node's UDP socket is read on the TUN pump's
  thread. Lossy VPN data from members on direct UDP is opened there
  (:class:`tunnel.netcrypto.lossy_opener.LossyOpener`) and goes into the TUN device at once;
  every other datagram is handed to the Trio thread in batches, where the node's cores take
  it as before. A ping through the tunnel then crosses each member on one thread, with no
  Trio wake-up and no thread hand-off (each cost about 0.3 ms on this machine kind).
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections import deque
from collections.abc import Callable

import trio

from tunnel.crypto.databox import DataBox
from tunnel.io.tun import TunPump
from tunnel.io.udp import RECEIVE_BATCH_DATAGRAMS, UdpDriver
from tunnel.netcrypto.lossy_opener import LossyOpener
from tunnel.wire.ip_port import Addr
from tunnel.wire.netcrypto import DATA_KIND

MAX_PENDING_BATCHES = 256
"""Batches waiting for a consumer thread (TUN writer or Trio sender); beyond this new ones are
dropped and counted."""
MAX_HANDOFF_DATAGRAMS = 8192
"""Datagrams read on the pump thread waiting for the Trio thread; beyond this they are dropped
and counted (what the socket's own buffer would have done)."""
INLINE_WRITE_MAX_PACKETS = 4
"""Inbound batches this small go into the TUN device on the thread that has them when the
writer thread is idle (no wake-up: lower latency); larger ones overlap on the writer thread."""

_NOT_MOVED, _WRITTEN, _QUEUED = 0, 1, 2
"""What :meth:`UdpReceiver._handle` did with members' packets."""

Route = tuple[bytes, LossyOpener]
"""A member on direct UDP: its public key and the opener of its VPN data packets."""


class TunWriter:
    """Writes inbound packets into the TUN device on its own thread.

    A TUN write runs the kernel's receive path for the packet (TCP processing and all), the
    biggest single cost of the receive side; on this thread it overlaps with the Trio thread
    (the GIL is released during the syscall). ``put`` hands over a list and never blocks; past
    ``MAX_PENDING_BATCHES`` lists it refuses (the caller counts the drop).
    """

    def __init__(self, pump: TunPump) -> None:
        self._pump = pump
        self._queue: deque[list[memoryview]] = deque()
        self._ready = threading.Event()
        self._idle = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="tun-writer", daemon=True)
        self.batches = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def idle(self) -> bool:
        """Nothing queued and the thread is waiting: writing elsewhere cannot reorder."""
        return self._idle and not self._queue

    def put(self, packets: list[memoryview]) -> bool:
        if len(self._queue) >= MAX_PENDING_BATCHES:
            self.dropped += len(packets)
            return False
        self._queue.append(packets)
        if self._idle:  # wake it only when it waits: Event.set costs as much as a TUN write
            self._idle = False
            self._ready.set()
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._ready.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        queue = self._queue
        pump = self._pump
        while not self._stopping:
            while queue:
                packets = queue.popleft()
                self.batches += 1
                pump.write_packets(packets)
            self._idle = True
            if queue:  # put() came before it could see _idle
                self._idle = False
                continue
            self._ready.wait()
            self._ready.clear()


class UdpReceiver:
    """Reads the node's UDP socket on the TUN pump's thread (see module docstring).

    ``routes`` (member UDP address -> :data:`Route`) is replaced whole by the Trio thread;
    ``inbound(public_key, payload)`` checks a member's packet and gives the IP packet or None
    (the VPN engine's inbound, safe on this thread). Counters are written on the pump thread
    only. :meth:`attach` (Trio thread) takes the socket over; :meth:`detach` gives it back
    after the pump has stopped.
    """

    def __init__(
        self,
        udp: UdpDriver,
        pump: TunPump,
        writer: TunWriter,
        inbound: Callable[[bytes, bytes], memoryview | None],
    ) -> None:
        self.udp = udp
        self.pump = pump
        self.writer = writer
        self.inbound = inbound
        self.routes: dict[Addr, Route] = {}
        self.attached = False
        self.counters = {"in_fast": 0, "in_fast_dropped": 0, "handed_off": 0, "handoff_dropped": 0}
        self._clock_offset = 0.0
        self._token: trio.lowlevel.TrioToken | None = None
        self._handoff: deque[tuple[bytes, Addr]] = deque()
        self._scheduled = False
        self._lock = threading.Lock()
        self._poll = select.poll()  # the UDP socket's, once attached

    def sync_clock(self) -> None:
        """Trio thread: the pump thread tells time as Trio does (``perf_counter`` + offset)."""
        self._clock_offset = trio.current_time() - time.perf_counter()

    def attach(self) -> bool:
        """Trio thread: read the socket on the pump thread from now on (once the node's UDP
        driver runs; False until then)."""
        if self.attached:
            return True
        if not self.udp.running:
            return False
        self._token = trio.lowlevel.current_trio_token()
        self._poll.register(self.udp.bound.sock.fileno(), select.POLLIN)
        self.udp.hand_over_receive()
        self.pump.add_reader(self.udp.bound.sock.fileno(), self.on_readable)
        self.attached = True
        return True

    def detach(self) -> None:
        """Trio thread, after the pump stopped: the Trio reader takes the socket back."""
        if self.attached:
            self.attached = False
            self.udp.take_back_receive()
            self._deliver()

    def on_readable(self) -> bool:
        """Pump thread: read what waits; open members' VPN data here, hand off the rest;
        True if VPN packets went into the TUN device (or to the writer thread).

        The first datagram is handled alone, and when it went into the TUN device whatever
        the kernel answered (a ping's reply) is read and sent at once, before the socket is
        read again (that read usually finds it empty: on an idle machine every step here
        costs tens of microseconds, so the reply goes first).
        """
        read = self.udp.read_available
        items = read(1)
        if not items:
            return False
        first = self._handle(items)
        if first == _WRITTEN and self.pump.readable():
            self.pump.read_now()
        if not self._poll.poll(0):  # cheaper than the read that fails (see TunPump.read_now)
            return first != _NOT_MOVED
        items = read(RECEIVE_BATCH_DATAGRAMS)
        later = self._handle(items) if items else _NOT_MOVED
        return first != _NOT_MOVED or later != _NOT_MOVED

    def _handle(self, items: list[tuple[bytes, Addr]]) -> int:
        """Open and write (or hand off) datagrams: :data:`_WRITTEN` if packets went into the
        device, :data:`_QUEUED` to the writer thread, :data:`_NOT_MOVED` if none did."""
        now = time.perf_counter() + self._clock_offset
        routes = self.routes
        inbound = self.inbound
        packets: list[memoryview] = []
        others: list[tuple[bytes, Addr]] = []
        dropped = 0
        for item in items:
            data = item[0]
            route = routes.get(item[1]) if data[0] == DATA_KIND else None
            if route is not None:
                payload = route[1].open(data, now)
                if payload is not None:
                    if payload:
                        packet = inbound(route[0], payload)
                        if packet is None:
                            dropped += 1
                        else:
                            packets.append(packet)
                    continue
            others.append(item)
        if dropped:
            self.counters["in_fast_dropped"] += dropped
        if others:
            self._hand_off(others)
        if not packets:
            return _NOT_MOVED
        self.counters["in_fast"] += len(packets)
        writer = self.writer
        if len(packets) <= INLINE_WRITE_MAX_PACKETS and writer.idle():
            self.pump.write_packets(packets)
            return _WRITTEN
        if not writer.put(packets):
            self.counters["in_fast_dropped"] += len(packets)
            return _NOT_MOVED
        return _QUEUED

    def _hand_off(self, items: list[tuple[bytes, Addr]]) -> None:
        if len(self._handoff) >= MAX_HANDOFF_DATAGRAMS:
            self.counters["handoff_dropped"] += len(items)
            return
        self._handoff.extend(items)
        self.counters["handed_off"] += len(items)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        token = self._token
        if token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self._deliver)

    def _deliver(self) -> None:
        """Trio thread: the node's cores take what the pump thread handed off."""
        with self._lock:
            self._scheduled = False
        handoff = self._handoff
        items = [handoff.popleft() for _ in range(len(handoff))]
        self.udp.receive_batch(items)


WARM_PAYLOAD = b"\xe4" + bytes(84)
"""What :func:`crypto_warmer` seals: a lossy VPN payload the size of a ping."""


def crypto_warmer() -> Callable[[], None]:
    """A keep-warm tick for the pump (:class:`~tunnel.io.tun.TunPump` ``warm``): seals and
    opens a dummy packet with a box of its own (a throwaway key: no session state, nonce or
    counter changes), so the code and tables the next real packet needs stay in the caches."""
    box = DataBox(bytes(32), len(WARM_PAYLOAD))

    def warm() -> None:
        box.open_untrusted(box.seal(0, 0, 0, WARM_PAYLOAD), 0)

    return warm
