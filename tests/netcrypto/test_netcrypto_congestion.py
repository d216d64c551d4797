"""Unit view of :class:`tunnel.netcrypto.congestion.Congestion` on synthetic feeds (no network).

Application-limited steps (the sender ran dry well under its budget) measure the application,
not the path: they must not drag the bandwidth estimate down, or an interactive session's rate
decays to its message rate, pacing then delays every message, and the next bulk transfer
starts from a crawl (bench/forward.py: 4 ms round trips and a download that took seconds to
ramp before this rule).
"""

from __future__ import annotations

from tunnel.netcrypto.congestion import INITIAL_RATE_PKT_S, Congestion

STEP_S = 0.02
RTT_S = 0.001


def feed(cc: Congestion, now: float, seconds: float, per_tick: int, *, starved: bool) -> float:
    """The path delivers ``per_tick`` packets per tick; ``starved``: the application offers
    only that many and the sender runs dry (else it always has more to send)."""
    for _ in range(round(seconds / STEP_S)):
        now += STEP_S
        cc.on_rtt_sample(RTT_S, now)
        cc.on_delivered(per_tick)
        cc.available(now)
        cc.consume(per_tick)
        if starved:
            cc.note_starved()
    return now


def bulk(cc: Congestion, now: float, seconds: float, per_tick: int) -> float:
    return feed(cc, now, seconds, per_tick, starved=False)


def interactive(cc: Congestion, now: float, seconds: float, per_tick: int) -> float:
    return feed(cc, now, seconds, per_tick, starved=True)


def test_app_limited_steps_keep_the_bandwidth_estimate() -> None:
    cc = Congestion(0.0)
    now = bulk(cc, 0.0, 4.0, 200)  # 10,000 pkt/s
    assert cc.mode == "probe"
    estimate = cc.btl_bw
    assert estimate > 8000
    now = interactive(cc, now, 5.0, 1)  # 50 messages/s for 5 s
    assert cc.app_limited
    assert cc.btl_bw >= estimate
    assert cc.rate >= 0.85 * estimate
    # A single message finds a token at once: no pacing delay.
    assert cc.available(now + 0.001) >= 1


def test_starved_but_path_limited_steps_still_count() -> None:
    """Running dry once while sending at the full rate is not application-limited."""
    cc = Congestion(0.0)
    now = bulk(cc, 0.0, 4.0, 200)
    estimate = cc.btl_bw
    # The path now carries half: each step the sender uses its whole budget and runs dry.
    for _ in range(round(3.0 / STEP_S)):
        now += STEP_S
        cc.on_rtt_sample(RTT_S, now)
        cc.on_delivered(100)
        budget = cc.available(now)
        cc.consume(max(budget, int(cc.rate * STEP_S)))
        cc.note_starved()
    assert not cc.app_limited
    assert cc.btl_bw < 0.7 * estimate


def test_startup_waits_for_the_application() -> None:
    """A session that idles right after its handshake stays in startup, ready to ramp."""
    cc = Congestion(0.0)
    now = interactive(cc, 0.0, 3.0, 1)
    assert cc.mode == "startup"
    assert cc.rate >= INITIAL_RATE_PKT_S
    bulk(cc, now, 0.4, 40)
    assert cc.mode == "startup"


def test_relayed_sessions_let_idle_rates_decay() -> None:
    """Over a TCP relay the rule is off: a burst after an idle period must not leave at the
    relay cap at once (a toxcore client flooded by its relay can stop reading for good)."""
    cc = Congestion(0.0)
    cc.set_rate_cap(1000.0)
    now = bulk(cc, 0.0, 4.0, 20)  # 1000 pkt/s, the cap
    estimate = cc.btl_bw
    interactive(cc, now, 5.0, 1)
    assert not cc.app_limited
    assert cc.btl_bw < 0.2 * estimate


def test_relayed_sessions_with_our_own_peers_keep_the_estimate() -> None:
    """A peer that sent our Hello reads whatever arrives: over a relay the rule is on again,
    so its interactive round trips are not paced to a decayed rate."""
    cc = Congestion(0.0)
    cc.set_rate_cap(1000.0)
    cc.peer_is_ours = True
    now = bulk(cc, 0.0, 4.0, 20)
    estimate = cc.btl_bw
    now = interactive(cc, now, 5.0, 1)
    assert cc.app_limited
    assert cc.btl_bw >= estimate
    assert cc.available(now + 0.001) >= 1
