"""Busy polling after traffic: keep a Trio loop awake for a short window after each burst.

A process that blocked in ``epoll_wait`` wakes up slowly and runs cold on an idle machine (a
VM more so): measured on this machine kind, a call that takes 5 µs in a warm loop takes
60-100 µs after a 20 ms sleep, and each hop of a forwarded request costs a wake-up like that.
So after tunnel traffic the forward driver keeps its Trio loop spinning for
``BUSY_POLL_WINDOW_S``: a task that only yields to the scheduler, which then polls for I/O
without blocking. The answer to a request that just left, or the echo of a keystroke, is read
at once by a warm process. It is the idea of Linux's ``SO_BUSY_POLL`` and of DPDK's adaptive
polling, in user space.

Cost: CPU only within the window after sparse traffic, nothing while idle (the task waits on
an event); during bulk transfers (more than ``BULK_BYTES_PER_WINDOW`` in a window) it steps
aside, as the loop is busy anyway; and at most ``SPIN_SHARE`` of the wall time goes to
spinning over any stretch longer than ``SPIN_BURST_S`` (steady moderate streams).
``bench/forward.py`` latency rounds: RTT overhead p50 0.87-0.89 ms with a 2 ms window against
1.07-1.29 ms without, back to back, the same CPU per MB in bulk.
A window spins at most ``MAX_SPIN_ROUNDS`` scheduler rounds, so a clock that does not move
(Trio's ``MockClock`` in tests) cannot make it spin forever.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

BUSY_POLL_WINDOW_S = 0.002
MAX_SPIN_ROUNDS = 20_000
BULK_BYTES_PER_WINDOW = 16 * 1024
"""More data than this within one window (~65 Mbit/s with 2 ms) is a bulk transfer: the loop
is busy without us, and spinning between its batches would only burn CPU (the receiving end's
CPU per MB rose by half) and take it from the other processes (2 cores: both tunnel ends and
both applications compete); the spinner then rests ``BULK_REST_S``."""
BULK_REST_S = 0.02
SPIN_SHARE = 0.25
"""At most this share of the wall time goes to spinning, averaged (a token bucket that fills
at this rate): steady traffic below the bulk threshold (a 10 Mbit/s stream) would otherwise
keep a core busy for as long as it lasts."""
SPIN_BURST_S = 0.25
"""The bucket's size: a burst of request/response traffic spins this long before the share
applies."""


class BusyPoll:
    """Spins the Trio loop for ``window_s`` after the last :meth:`note` (0: never)."""

    def __init__(
        self, window_s: float = BUSY_POLL_WINDOW_S, moved: Callable[[], int] | None = None
    ) -> None:
        self.window_s = window_s
        self._moved = moved or (lambda: 0)
        """A running count of the bytes the traffic carried (for bulk detection)."""
        self.windows = 0
        """How many spin windows ran."""
        self.spin_rounds = 0
        self.rests = 0
        """How many windows ended early because traffic was bulk."""
        self.starved = 0
        """How many windows ended early (or did not start) for want of spin budget."""
        self.spun_s = 0.0
        """Seconds spent in windows (rests excluded)."""
        self._budget_s = SPIN_BURST_S
        self._budget_at = trio.current_time()
        self._notes = 0
        self._spinning = False
        self._wake = trio.Event()

    @property
    def spinning(self) -> bool:
        return self._spinning

    def note(self) -> None:
        """Traffic now: spin (again) for a window from here."""
        self._notes += 1
        if not self._spinning:
            self._wake.set()

    async def run(self) -> None:
        """The spinning task; runs until cancelled."""
        if self.window_s <= 0:
            await trio.sleep_forever()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._spinning = True
            self.windows += 1
            try:
                await self._spin()
            finally:
                self._spinning = False

    async def _spin(self) -> None:
        start = trio.current_time()
        budget = min(SPIN_BURST_S, self._budget_s + (start - self._budget_at) * SPIN_SHARE)
        bulk = await self._spin_until(start + budget)
        end = trio.current_time()
        self._budget_s = budget - (end - start)
        self._budget_at = end
        self.spun_s += end - start
        if bulk:
            self.rests += 1
            await trio.sleep(BULK_REST_S)  # notes meanwhile do not wake us

    async def _spin_until(self, budget_end: float) -> bool:
        """Spin until a window passes without a note (or the budget is spent): False; or
        until a window's traffic shows a bulk transfer: True."""
        window = self.window_s
        moved = self._moved
        seen = self._notes
        start_bytes = moved()
        now = trio.current_time()
        deadline = slice_end = now + window
        for _ in range(MAX_SPIN_ROUNDS):
            if now >= budget_end:
                self.starved += 1
                return False
            await trio.lowlevel.checkpoint()
            self.spin_rounds += 1
            now = trio.current_time()
            if now >= slice_end:  # the traffic of one window-long slice
                now_bytes = moved()
                if now_bytes - start_bytes > BULK_BYTES_PER_WINDOW:
                    return True
                start_bytes = now_bytes
                slice_end = now + window
            if self._notes != seen:
                seen = self._notes
                deadline = now + window
            elif now >= deadline:
                return False
        return False
