"""When the next packet of a regular flow is due, so the data path can be warmed just before
(issue 9, ping RTT; bench/README.md "VPN ping RTT").

On a shared VM the data path's code and data leave the CPU caches within milliseconds, so a
packet after an idle gap costs several times what it costs in a stream (measured: a seal +
open + UDP round of 12-17 us in a loop takes 105-140 us after 20 ms idle). Periodic traffic
(pings, VoIP and game frames, keepalives, monitoring) comes at a steady interval, though: the
TUN pump can run its warm-up once, shortly before the next packet is due, instead of ticking
all the time (``keep_warm_ms``). That costs a warm-up or a few per period, and nothing for
traffic without a rhythm. The idea is that of Linux's hybrid block polling, which sleeps for part of
the expected completion time and then polls.

:class:`WarmAhead` is the pure predictor (it takes ``now``; the pump tells it when packets
moved and asks it how long to wait before the warm-up):

* a *start* is a move after at least :data:`MIN_GAP_S` without one (closer moves are one
  burst: a request and its answer, a stream; the caches are still warm for them);
* two consecutive periods between starts that agree within :data:`RHYTHM_FRACTION` make the
  flow regular: the next start is expected the shorter of the two after the last one;
* warm-ups then run from ``lead_s`` before that time, every :data:`TICK_S`, until the
  packets come or :data:`LATE_FRACTION` of the period (within :data:`LATE_MIN_S` and
  :data:`LATE_MAX_S`) has passed: timers on a shared host are several milliseconds late
  now and then. A flow that stops costs one more such window, then nothing; traffic
  without a rhythm, nothing.
"""

from __future__ import annotations

MIN_GAP_S = 0.003
"""Moves closer than this belong to one burst (the caches have not gone cold yet)."""
MAX_PERIOD_S = 2.0
"""Flows slower than this get no warm-up."""
RHYTHM_FRACTION = 0.25
"""Two periods differing by more than this fraction of the longer one: no rhythm."""
LATE_FRACTION = 0.2
LATE_MIN_S = 0.002
LATE_MAX_S = 0.01
"""How long after the expected time warm-ups go on (a fraction of the period, bounded)."""
TICK_S = 0.002
"""Between two warm-ups of one window (caches stay warm for about this long)."""
DEFAULT_LEAD_S = 0.001


class WarmAhead:
    """Predicts the next start of a regular flow (see module docstring)."""

    __slots__ = (
        "_last_move",
        "_last_start",
        "_next_tick",
        "_period",
        "_until",
        "lead_s",
        "warmups",
    )

    def __init__(self, lead_s: float = DEFAULT_LEAD_S) -> None:
        if lead_s <= 0:
            raise ValueError("lead_s must be > 0")
        self.lead_s = lead_s
        self._last_move = float("-inf")
        self._last_start = float("-inf")
        self._period = 0.0
        self._next_tick = 0.0
        self._until = 0.0  # the end of the warm-up window; 0: none is due
        self.warmups = 0
        """Warm-ups the pump ran on this predictor's advice (:meth:`fired`)."""

    def moved(self, now: float) -> None:
        """Packets moved at ``now``."""
        if now - self._last_move >= MIN_GAP_S:
            period = now - self._last_start
            previous = self._period
            self._until = 0.0
            if period <= MAX_PERIOD_S:
                shorter, longer = sorted((period, previous))
                if shorter and longer - shorter <= RHYTHM_FRACTION * longer:
                    expected = now + shorter
                    self._next_tick = expected - self.lead_s
                    late = min(LATE_MAX_S, max(LATE_MIN_S, LATE_FRACTION * shorter))
                    self._until = expected + late
                self._period = period
            else:
                self._period = 0.0
            self._last_start = now
        self._last_move = now

    def wait_s(self, now: float) -> float | None:
        """How long to wait before the next warm-up (0: now), or None: none is due (wait for
        packets only)."""
        if not self._until:
            return None
        if self._next_tick > self._until:
            self._until = 0.0
            return None
        return max(0.0, self._next_tick - now)

    def fired(self, now: float) -> None:
        """A warm-up ran at ``now``."""
        self._next_tick = now + TICK_S
        self.warmups += 1
