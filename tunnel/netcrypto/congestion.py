"""Our sender-side congestion control and pacing for net_crypto (tox-protocol.md 6.8, App. C).

The wire format is toxcore's; how fast we send is ours. toxcore starts at a few packets per
second and grows ~x1.5/s from ~0.3 MB/s, so a bulk transfer needs ~10 s to reach speed. We
want the link within a fraction of a second, without loss spirals, and without starving a
toxcore flow on the same path.

Theory of operation: a model-based controller in the spirit of BBR. Every control step
(``interval = clamp(srtt, MIN_INTERVAL_S, MAX_INTERVAL_S)``, 200 ms: shorter steps make the
samples noisy, because peers acknowledge in batches every 20-50 ms, and the max filter then
overestimates the bottleneck and overflows shallow queues) turns the packets the peer newly
acknowledged
(cumulative ``buffer_start`` plus what its request packets report as received) into a
delivery-rate sample. ``btl_bw`` is the maximum sample over the last ``BW_WINDOW`` steps; the
pacing rate is ``gain * btl_bw``.

* **Startup** (gain 2): the rate doubles per step while samples keep growing; when ``btl_bw``
  has not grown 25 % in 3 steps (the pipe is full) or loss is heavy, go to **drain**.
* **Drain** (gain 0.75) for one step empties the queue startup built, then **probe**.
* **Probe** cycles gains ``1.15, 0.9, 1.05, 1.05, 1.05, 1.05``: gentle probing for spare
  capacity, and a step that gives back the queue we made (so the base RTT stays measurable).
* **Queue delay** (the delay component, LEDBAT-like): ``min_rtt`` is the base RTT, the minimum
  over 60 s (buckets of 10 s; forgotten on a path change or outage restart); ``queue_delay`` is
  the fastest RTT sample of the step minus it. Above ``queue_target_s`` (15 ms or a quarter of
  the base RTT) a queue stands: ours or a competitor's. Then the rate follows what we actually
  delivered in the step times 0.9 (not the max filter), but not below ``SHARE_FLOOR_FRACTION``
  of what the path carried for us lately. With no queue at all the gain is 1.15 every step.
  Probing and startup stop within the step when ``QUEUE_SAMPLES`` sample(s) in a row show
  the queue rising (half the target for probing), so our probes do not overflow a shallow
  buffer; only in steps of at least ``IN_STEP_MIN_PKTS`` packets (at low rates a sample also
  carries the peer's acknowledgement delay). Requiring 2 samples cost toxcore most of its
  share against real libtoxcore (0.31-0.36 instead of ~0.5).
  The 15 ms floor of the target is what a CPU-bound receiver on loopback shows as queueing
  (it reads in batches of up to 256 datagrams): 5 ms cost ours-to-ours half its bench speed.
* **Loss** (the peer's request packet lists packets we sent more than ``resend_delay`` ago):
  random loss below ``LOSS_THRESHOLD`` of a step's packets is ignored (it says nothing about
  capacity); heavier loss scales ``btl_bw`` down to ``LOSS_BACKOFF`` of its value once per step,
  never more, so a burst of loss cannot spiral the rate down.
* **Inflight cap**: new packets beyond what the peer reported received are limited to
  ``cwnd_pkts`` (two round trips of the rate plus the peer's acknowledgement delay), so a
  path that dies does not swallow the whole 32768-packet window.
* **Outages** (path switch, blackout): intervals with nothing acknowledged are not samples of
  zero capacity; when deliveries resume after ``OUTAGE_S`` the controller re-enters startup;
  packets reported lost long after they were sent are resent but not counted as congestion
  (the session decides that), and one RTT sample can at most double ``srtt``.
* **Application-limited steps** (direct UDP only): a step in which the sender ran dry
  (:meth:`Congestion.note_starved`) and sent under ``APP_LIMITED_FRACTION`` of its budget
  measures the application, not the path: its sample may raise ``btl_bw`` but never lower
  it, and it does not count as a flat startup step. Over TCP relays the rate decays as
  before (a burst at the relay cap after an idle period can flood a toxcore client), unless
  the peer is one of ours (:attr:`Congestion.peer_is_ours`, set when its extension Hello
  arrives).
* **Pacing**: a token bucket at the rate with a burst of ``BURST_S`` seconds of it.

Fairness: two of our flows on one bottleneck converge to comparable shares (tested). A toxcore
flow is loss-averse (a resend within a second makes it send 0.9x what got through, per 50 ms),
so what starves it is loss we cause; keeping the queue below the target leaves it the losses
it makes itself and it takes 30-60 % of a shallow bottleneck next to us (simulator test with
a model of toxcore 0.2.18's policy, ``tunnel/testing/toxcore_cc.py``). Limits: on some shallow
paths toxcore alone latches at a few tens of packets per second (its requested-token quirk)
and nothing we do changes that.

``rate_cap`` bounds paths with their own limits (TCP relays). The delay component runs on
direct UDP paths only (:attr:`Congestion.delay_based`): over TCP relays and Tor, TCP shares the
bottleneck, and relay/Tor queueing and jitter are not a queue of ours (reading them as one held
a 10 MB Tor transfer at the rate floor for minutes).
"""

from __future__ import annotations

from collections import deque

INITIAL_RATE_PKT_S = 1000.0
MIN_RATE_PKT_S = 8.0
MAX_RATE_PKT_S = 400_000.0
STARTUP_GAIN = 2.0
DRAIN_GAIN = 0.75
PROBE_GAINS = (1.15, 0.9, 1.05, 1.05, 1.05, 1.05)
PROBE_UP_GAIN = 1.15
QUEUE_GAIN = 0.9
STARTUP_GROWTH = 1.25
STARTUP_FLAT_STEPS = 3
BW_WINDOW = 5
LOSS_THRESHOLD = 0.2
LOSS_MIN_PKTS = 4
LOSS_BACKOFF = 0.85
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 0.2
BURST_S = 0.005
MIN_BURST_PKTS = 16.0
INITIAL_RTT_S = 0.2
MIN_PACING_STEP_S = 0.0005
BASE_RTT_BUCKET_S = 10.0
BASE_RTT_BUCKETS = 6
QUEUE_TARGET_MIN_S = 0.015
QUEUE_TARGET_FRACTION = 0.25
QUEUE_EMPTY_FRACTION = 0.25
EARLY_EXIT_FRACTION = 0.5
QUEUE_SAMPLES = 1
IN_STEP_MIN_PKTS = 32
SHARE_FLOOR_FRACTION = 0.3
OUTAGE_S = 1.0
MIN_CWND_PKTS = 64.0
ACK_DELAY_ALLOWANCE_S = 0.15
APP_LIMITED_FRACTION = 0.8


class Congestion:
    """Rate controller + pacer for one session. ``now`` is seconds on the driver's clock."""

    __slots__ = (
        "_base_buckets",
        "_bw_samples",
        "_cycle",
        "_delivered_in_interval",
        "_flat_steps",
        "_full_bw",
        "_gain",
        "_high_samples",
        "_interval_start",
        "_last_delivery",
        "_last_refill",
        "_link_buckets",
        "_lost_in_interval",
        "_rtt_seen",
        "_sent_in_interval",
        "_starved",
        "_step_min_rtt",
        "_step_rate",
        "app_limited",
        "btl_bw",
        "delivery_rate",
        "loss_events",
        "min_rtt",
        "mode",
        "peer_is_ours",
        "queue_delay",
        "rate",
        "rate_cap",
        "rttvar",
        "srtt",
        "tokens",
    )

    def __init__(self, now: float) -> None:
        self.rate = INITIAL_RATE_PKT_S
        self.rate_cap = MAX_RATE_PKT_S
        self.btl_bw = 0.0
        self.delivery_rate = 0.0
        self.mode = "startup"
        self.srtt = INITIAL_RTT_S
        self.rttvar = INITIAL_RTT_S / 2
        self.min_rtt = 0.0
        self.queue_delay = 0.0
        self.tokens = MIN_BURST_PKTS
        self.loss_events = 0
        self._rtt_seen = False
        self._base_buckets: deque[list[float]] = deque(maxlen=BASE_RTT_BUCKETS)
        self._step_min_rtt = float("inf")
        self._link_buckets: deque[list[float]] = deque(maxlen=BASE_RTT_BUCKETS)
        self._gain = STARTUP_GAIN
        self._high_samples = 0
        self._last_delivery = now
        self._bw_samples: deque[float] = deque(maxlen=BW_WINDOW)
        self._full_bw = 0.0
        self._flat_steps = 0
        self._cycle = 0
        self._last_refill = now
        self._interval_start = now
        self._delivered_in_interval = 0
        self._lost_in_interval = 0
        self._sent_in_interval = 0
        self._starved = False
        self._step_rate = self.rate
        self.app_limited = False
        self.peer_is_ours = False
        """The peer sent our extension Hello (it is a ``tunnel`` node, not a toxcore client):
        application-limited steps are recognised over TCP relays too (see ``_control``)."""

    @property
    def startup(self) -> bool:
        """True until the pipe is first found full."""
        return self.mode == "startup"

    # ------------------------------------------------------------------ feedback

    def on_rtt_sample(self, rtt: float, now: float) -> None:
        """A round-trip sample (seconds) from a newly acknowledged, never-resent packet."""
        rtt = max(rtt, 0.0)
        if not self._rtt_seen:
            self._rtt_seen = True
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # A packet acknowledged only after an outage would poison srtt (and with it the
            # resend delay) for many round trips: let one sample at most double it.
            rtt = min(rtt, 2 * self.srtt + MIN_INTERVAL_S)
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self._note_base_rtt(rtt, now)
        self._step_min_rtt = min(self._step_min_rtt, rtt)
        # In-step reactions need QUEUE_SAMPLES samples in a row above the threshold and a step
        # with enough packets: at low rates a sample also carries up to one request interval
        # (20-50 ms) of the peer's acknowledgement delay; those steps are left to the
        # end-of-step check.
        steady = self._sent_in_interval >= IN_STEP_MIN_PKTS and self.delay_based
        queued = rtt - self.min_rtt if steady else 0.0
        if self.mode == "startup" and self.btl_bw > 0:
            self._high_samples = self._high_samples + 1 if queued > self.queue_target_s else 0
            if self._high_samples >= QUEUE_SAMPLES:
                # The pipe is full (a queue formed): leave startup now, a step of doubling
                # more would overflow a shallow bottleneck.
                self.mode = "drain"
                self._gain = DRAIN_GAIN
                self._high_samples = 0
                self.rate = min(max(DRAIN_GAIN * self.btl_bw, MIN_RATE_PKT_S), self.rate_cap)
        elif self._gain > 1.0 and self.mode == "probe":
            threshold = EARLY_EXIT_FRACTION * self.queue_target_s
            self._high_samples = self._high_samples + 1 if queued > threshold else 0
            if self._high_samples >= QUEUE_SAMPLES:
                # Probing started a queue: stop at once, and give the queue back, instead of
                # waiting for the end of the step: a shallow bottleneck shared with a
                # loss-averse flow (toxcore) must not overflow.
                self._gain = QUEUE_GAIN
                self._high_samples = 0
                self.rate = min(max(QUEUE_GAIN * self.btl_bw, MIN_RATE_PKT_S), self.rate_cap)

    def _note_base_rtt(self, rtt: float, now: float) -> None:
        """Base RTT: the minimum over ``BASE_RTT_BUCKETS`` buckets of ``BASE_RTT_BUCKET_S``.

        Long enough that a competing flow keeping the queue full for a while does not turn
        queueing delay into "base"; a path change (:meth:`set_rate_cap`, outage restart)
        forgets it.
        """
        buckets = self._base_buckets
        if not buckets or now - buckets[-1][0] >= BASE_RTT_BUCKET_S:
            buckets.append([now, rtt])
        elif rtt < buckets[-1][1]:
            buckets[-1][1] = rtt
        self.min_rtt = min(b[1] for b in buckets)

    @property
    def delay_based(self) -> bool:
        """True when queueing delay steers the rate: on direct UDP paths only.

        Over a TCP relay (and so over Tor) the connection's own TCP congestion control
        shares the bottleneck with other flows, and the delay we see is the relay's and
        Tor's queueing and jitter (100 ms swings), not a queue we build: reading it as one
        held Tor transfers at the rate floor.
        """
        return self.rate_cap >= MAX_RATE_PKT_S

    @property
    def queue_target_s(self) -> float:
        """Queueing delay (RTT above the base) we accept before backing off."""
        return max(QUEUE_TARGET_MIN_S, QUEUE_TARGET_FRACTION * self.min_rtt)

    def on_delivered(self, count: int) -> None:
        """``count`` packets newly known to have reached the peer."""
        self._delivered_in_interval += count

    def note_starved(self) -> None:
        """The sender had nothing more to send while it still had budget this step."""
        self._starved = True

    def on_loss(self, count: int = 1) -> None:
        """The peer reported ``count`` packets missing that we sent long enough ago."""
        self._lost_in_interval += count

    @property
    def cwnd_pkts(self) -> float:
        """Most new packets in flight beyond what the peer reported received.

        Two round trips of the bottleneck rate plus the peer's acknowledgement delay (its
        request packets come every 20 ms from us, 50 ms or more from toxcore): enough to keep
        the pipe full, small enough that a dead path does not swallow the whole window.
        """
        rate = max(self.btl_bw, self.rate)
        return max(MIN_CWND_PKTS, rate * (2 * self.min_rtt + ACK_DELAY_ALLOWANCE_S))

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
        sample = self._delivered_in_interval / elapsed
        self.delivery_rate = sample
        sampled = self._step_min_rtt != float("inf")
        # Application-limited step: the sender ran dry and used well under its budget. What
        # it delivered measures the application, not the path: such a sample may raise the
        # bandwidth estimate but never lower it (else an interactive session's rate decays
        # to its message rate, and then pacing delays every message and the next bulk
        # transfer starts from a crawl).
        # Over a TCP relay only with a peer of ours: keeping the rate up through idle periods
        # lets the next burst go out at the relay cap at once, and a toxcore client flooded
        # by its relay can stop reading for good (toxcore-test-peers.md 5.2; seen in the
        # full suite with 300 packets to a libtoxcore peer sharing our process). Our peers
        # read whatever arrives; without the rule their relayed round trips were paced to
        # the decayed rate (7 ms through our relay instead of 1.5 ms).
        app_limited = (
            (self.delay_based or self.peer_is_ours)
            and self._starved
            and self._sent_in_interval < APP_LIMITED_FRACTION * self._step_rate * elapsed
        )
        self.app_limited = app_limited
        if self._delivered_in_interval:
            if now - self._last_delivery > OUTAGE_S:
                # (RTT samples of this step are of packets that waited out the outage.)
                sampled = False
                # Deliveries resume after an outage (path switch, blackout): the old model
                # says nothing about the new path, so search for its capacity again.
                self.mode = "startup"
                self._full_bw = 0.0
                self._flat_steps = 0
                self._bw_samples.clear()
                self._base_buckets.clear()
                self._link_buckets.clear()
            self._last_delivery = now
            # Only intervals that delivered something are samples: an outage with nothing
            # acknowledged is not a measurement of zero capacity.
            if not (app_limited and self._bw_samples and sample < self.btl_bw):
                self._bw_samples.append(sample)
                self.btl_bw = max(self._bw_samples)
                links = self._link_buckets
                if not links or now - links[-1][0] >= BASE_RTT_BUCKET_S:
                    links.append([now, sample])
                elif sample > links[-1][1]:
                    links[-1][1] = sample
        # The fastest packet of the step: if even it waited, a queue is standing. A step
        # without samples (everything acknowledged was resent: Karn) says nothing; a stale
        # value from before a blackout must not keep the rate down.
        if sampled:
            self.queue_delay = max(0.0, self._step_min_rtt - self.min_rtt)
        target = self.queue_target_s
        delay = sampled and self.delay_based
        queue_high = delay and self.queue_delay > target
        queue_empty = delay and self.queue_delay <= QUEUE_EMPTY_FRACTION * target
        lost = self._lost_in_interval
        heavy_loss = lost > max(LOSS_MIN_PKTS, LOSS_THRESHOLD * self._sent_in_interval)
        if heavy_loss:
            self.loss_events += 1
            cut = max(self.btl_bw * LOSS_BACKOFF, MIN_RATE_PKT_S)
            self._bw_samples.clear()
            self._bw_samples.append(cut)
            self.btl_bw = cut
            self._link_buckets.clear()  # the path is not what it was: no share floor from it
        if self.mode == "startup":
            if self.btl_bw >= self._full_bw * STARTUP_GROWTH:
                self._full_bw = self.btl_bw
                self._flat_steps = 0
            elif not app_limited:
                self._flat_steps += 1
            if heavy_loss or queue_high or self._flat_steps >= STARTUP_FLAT_STEPS:
                self.mode = "drain"
        elif self.mode == "drain":
            self.mode = "probe"
            self._cycle = 0
        else:
            self._cycle = (self._cycle + 1) % len(PROBE_GAINS)
        if self.mode == "startup":
            # Twice what the path delivered: doubles per step while the pipe is not full.
            self._gain = STARTUP_GAIN
            self.rate = max(INITIAL_RATE_PKT_S, STARTUP_GAIN * self.btl_bw)
        else:
            if self.mode == "drain":
                gain = DRAIN_GAIN
            elif queue_high:
                # A queue stands at the bottleneck: ours, or a competing flow's. Follow what
                # we actually got through (not the max filter) a little below it, so the
                # queue drains and a loss-based flow (toxcore) can grow without losses.
                if self._delivered_in_interval and not app_limited:
                    # ... but not below a share of what the path carried for us lately: a
                    # queue that stays although we yield is a loss-based flow's (it fills
                    # any buffer), and yielding everything would only starve us.
                    floor = SHARE_FLOOR_FRACTION * max(
                        (b[1] for b in self._link_buckets), default=0.0
                    )
                    self._bw_samples.clear()
                    self._bw_samples.append(max(sample, floor))
                    self.btl_bw = self._bw_samples[0]
                gain = QUEUE_GAIN
            elif queue_empty:
                gain = PROBE_UP_GAIN  # no queue at all: capacity may be idle, look for it
            else:
                gain = PROBE_GAINS[self._cycle]
            self._gain = gain
            self.rate = gain * self.btl_bw
        self.rate = min(max(self.rate, MIN_RATE_PKT_S), MAX_RATE_PKT_S, self.rate_cap)
        self._interval_start = now
        self._delivered_in_interval = 0
        self._sent_in_interval = 0
        self._lost_in_interval = 0
        self._step_min_rtt = float("inf")
        self._starved = False
        self._step_rate = self.rate

    # ------------------------------------------------------------------ pacing

    def set_rate_cap(self, cap: float) -> None:
        """Upper bound for the rate (the path's own limit, e.g. over a TCP relay).

        A different cap means the path changed (UDP <-> TCP relay): its base RTT and what it
        carried (the share floor) are learned again.
        """
        if cap != self.rate_cap:
            self._base_buckets.clear()
            self._link_buckets.clear()
            self._step_min_rtt = float("inf")  # samples of the old path are not queueing
        self.rate_cap = cap
        self.rate = min(self.rate, cap)

    def available(self, now: float) -> int:
        """Whole packets that may be sent now (runs the control step and refills tokens)."""
        self._control(now)
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
