"""Our sender-side congestion control and pacing for net_crypto (tox-protocol.md 6.8, App. C).

The wire format is toxcore's; how fast we send is ours. toxcore starts at a few packets per
second and grows its rate ~x1.2 per 50 ms sample of what it actually sent (~x1.5/s in
practice), so a bulk transfer needs ~10 s to reach speed. We want the link in well under a
second, and we must not spiral on loss or starve a toxcore peer sharing the path.

Theory of operation (rate based, one control step per ``interval = clamp(srtt, 25 ms, 200 ms)``):

* **Startup**: the pacing rate starts at ``INITIAL_RATE_PKT_S`` and is multiplied by
  ``STARTUP_GAIN`` every interval in which no loss was reported.
* **Loss** (the peer's request packet lists a packet we sent more than ``resend_delay_s`` ago):
  at most once per interval the rate is cut to ``LOSS_BACKOFF`` x the delivery rate measured
  over the last interval (never below ``MIN_RATE_PKT_S``), and startup ends. Cutting to a
  fraction of what was actually *delivered* (not of what we offered) is what prevents loss
  spirals: the rate lands just under the path's capacity instead of halving again and again.
* **Probe**: without loss, the rate grows by ``PROBE_GAIN`` per interval, but never beyond
  ``HEADROOM`` x the delivery rate (so an application- or receiver-limited flow does not
  build an unbounded rate it could then dump on the network in a burst).
* **Pacing**: a token bucket refilled at the rate, with a burst of ``BURST_S`` seconds of
  rate (at least ``MIN_BURST_PKTS``), so packets leave evenly even when the driver wakes late.

Fairness: with a toxcore flow on the same bottleneck, both see loss; we back off to a fraction
of our delivered rate and then probe additively-ish (x1.05 per interval), comparable to
toxcore's x1.2 growth over a 600 ms window, so neither flow starves the other.
"""

from __future__ import annotations

INITIAL_RATE_PKT_S = 1000.0
MIN_RATE_PKT_S = 8.0
MAX_RATE_PKT_S = 400_000.0
STARTUP_GAIN = 2.0
PROBE_GAIN = 1.1
LOSS_THRESHOLD = 0.1
LOSS_MIN_PKTS = 2
LOSS_BACKOFF = 0.85
HEADROOM = 2.0
MIN_INTERVAL_S = 0.025
MAX_INTERVAL_S = 0.2
BURST_S = 0.01
MIN_BURST_PKTS = 32.0
INITIAL_RTT_S = 0.2
MIN_PACING_STEP_S = 0.0005


class Congestion:
    """Rate controller + pacer for one session. ``now`` is seconds on the driver's clock."""

    __slots__ = (
        "_delivered_in_interval",
        "_interval_start",
        "_last_refill",
        "_lost_in_interval",
        "_sent_in_interval",
        "delivery_rate",
        "loss_events",
        "min_rtt",
        "rate",
        "rate_cap",
        "rttvar",
        "srtt",
        "startup",
        "tokens",
    )

    def __init__(self, now: float) -> None:
        self.rate = INITIAL_RATE_PKT_S
        self.rate_cap = MAX_RATE_PKT_S
        self.delivery_rate = 0.0
        self.startup = True
        self.srtt = INITIAL_RTT_S
        self.rttvar = INITIAL_RTT_S / 2
        self.min_rtt = 0.0
        self.tokens = MIN_BURST_PKTS
        self.loss_events = 0
        self._last_refill = now
        self._interval_start = now
        self._delivered_in_interval = 0
        self._lost_in_interval = 0
        self._sent_in_interval = 0

    # ------------------------------------------------------------------ feedback

    def on_rtt_sample(self, rtt: float) -> None:
        """A round-trip sample (seconds) from a newly acknowledged, never-resent packet."""
        rtt = max(rtt, 0.0)
        if self.min_rtt == 0.0 or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt == INITIAL_RTT_S and self.rttvar == INITIAL_RTT_S / 2:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def on_delivered(self, count: int) -> None:
        """``count`` packets newly known to have reached the peer."""
        self._delivered_in_interval += count

    def on_loss(self, count: int = 1) -> None:
        """The peer reported ``count`` packets missing that we sent long enough ago."""
        self._lost_in_interval += count

    def on_sent(self, count: int) -> None:
        """``count`` data packets left (new or resent)."""
        self._sent_in_interval += count

    @property
    def interval_s(self) -> float:
        """Length of one control step."""
        return min(max(self.srtt, MIN_INTERVAL_S), MAX_INTERVAL_S)

    @property
    def resend_delay_s(self) -> float:
        """How long after sending a packet a request for it means it was lost."""
        return max(self.srtt + 2 * self.rttvar, 0.002)

    # ------------------------------------------------------------------ control

    def _control(self, now: float) -> None:
        elapsed = now - self._interval_start
        if elapsed < self.interval_s:
            return
        measured = self._delivered_in_interval / elapsed
        lost = self._lost_in_interval
        if lost > max(LOSS_MIN_PKTS, LOSS_THRESHOLD * self._sent_in_interval):
            # Congestion (random loss below the threshold is not): land just under what the
            # path actually delivered, but never cut more than half in one step.
            basis = max(measured, self.delivery_rate)
            self.rate = max(MIN_RATE_PKT_S, self.rate * 0.5, min(self.rate, basis) * LOSS_BACKOFF)
            self.startup = False
            self.loss_events += 1
        else:
            gain = STARTUP_GAIN if self.startup else PROBE_GAIN
            ceiling = max(HEADROOM * max(measured, self.delivery_rate), INITIAL_RATE_PKT_S)
            self.rate = min(self.rate * gain, max(ceiling, self.rate), MAX_RATE_PKT_S)
        self.delivery_rate = (
            measured if self.delivery_rate == 0 else 0.5 * self.delivery_rate + 0.5 * measured
        )
        self._interval_start = now
        self._delivered_in_interval = 0
        self._sent_in_interval = 0
        self._lost_in_interval = 0

    # ------------------------------------------------------------------ pacing

    def set_rate_cap(self, cap: float) -> None:
        """Upper bound for the rate (the path's own limit, e.g. over a TCP relay)."""
        self.rate_cap = cap
        self.rate = min(self.rate, cap)

    def available(self, now: float) -> int:
        """Whole packets that may be sent now (runs the control step and refills tokens)."""
        self._control(now)
        self.rate = min(self.rate, self.rate_cap)
        dt = now - self._last_refill
        if dt > 0:
            burst = max(MIN_BURST_PKTS, self.rate * BURST_S)
            self.tokens = min(burst, self.tokens + dt * self.rate)
            self._last_refill = now
        return int(self.tokens)

    def consume(self, count: int) -> None:
        """``count`` packets were sent (may drive tokens slightly negative)."""
        self.tokens -= count
        self._sent_in_interval += count

    def next_send_time(self) -> float:
        """When at least one token will be available (as of the last refill)."""
        if self.tokens >= 1:
            return self._last_refill
        return self._last_refill + max((1 - self.tokens) / self.rate, MIN_PACING_STEP_S)
