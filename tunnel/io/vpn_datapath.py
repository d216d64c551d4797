"""VPN data path pieces that run on their own threads (issue #9, data path).

The Trio thread keeps the control plane; the per-packet work runs on plain threads with
blocking I/O, as measured in the issue. This module holds the inbound writer: packets
received from members are queued here and written into the TUN device on a dedicated
thread, so the kernel's receive processing overlaps with the Trio thread.
"""

from __future__ import annotations

import threading
from collections import deque

from tunnel.io.tun import TunPump

MAX_PENDING_BATCHES = 256
"""Batches waiting for a consumer thread (TUN writer or Trio sender); beyond this new ones are
dropped and counted."""


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
