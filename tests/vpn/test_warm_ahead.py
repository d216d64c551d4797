"""The warm-up predictor of the TUN pump (tunnel.io.warm_ahead): pure, explicit times."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.io.warm_ahead import (
    LATE_MAX_S,
    LATE_MIN_S,
    MAX_PERIOD_S,
    TICK_S,
    WarmAhead,
)

PERIOD_S = 0.05
LEAD_S = 0.001


def _regular(ahead: WarmAhead, starts: int, period: float = PERIOD_S) -> float:
    """``starts`` moves ``period`` apart, each followed by its answer 0.7 ms later; returns
    the time of the last start."""
    now = 0.0
    for i in range(starts):
        now = 1.0 + i * period
        ahead.moved(now)
        ahead.moved(now + 0.0007)  # the answer: the same burst
    return now


def _window(ahead: WarmAhead, now: float) -> list[float]:
    """Run the warm-ups the predictor asks for from ``now`` while no packet comes; their
    times."""
    times = []
    for _ in range(1000):
        wait = ahead.wait_s(now)
        if wait is None:
            return times
        now += wait
        times.append(now)
        ahead.fired(now)
    raise AssertionError("the window never ends")


def test_no_warm_up_before_a_rhythm() -> None:
    ahead = WarmAhead(LEAD_S)
    assert ahead.wait_s(0.0) is None
    _regular(ahead, 2)  # one period seen: not yet a rhythm
    assert ahead.wait_s(1.06) is None


def test_regular_flow_warms_up_just_before_the_next_packet() -> None:
    ahead = WarmAhead(LEAD_S)
    last = _regular(ahead, 3)
    wait = ahead.wait_s(last + 0.001)
    assert wait == pytest.approx(PERIOD_S - LEAD_S - 0.001)
    times = _window(ahead, last + 0.001)
    expected = last + PERIOD_S
    assert times[0] == pytest.approx(expected - LEAD_S)
    assert all(b - a == pytest.approx(TICK_S) for a, b in itertools.pairwise(times))
    late = min(LATE_MAX_S, max(LATE_MIN_S, 0.2 * PERIOD_S))
    assert times[-1] <= expected + late
    assert times[-1] > expected + late - TICK_S  # ticks on while the packet may still come
    assert ahead.warmups == len(times)


def test_the_packet_ends_the_window_and_sets_up_the_next() -> None:
    ahead = WarmAhead(LEAD_S)
    last = _regular(ahead, 3)
    now = last + PERIOD_S - LEAD_S
    assert ahead.wait_s(now) == 0.0
    ahead.fired(now)
    ahead.moved(last + PERIOD_S)  # it came
    wait = ahead.wait_s(last + PERIOD_S + 0.001)
    assert wait == pytest.approx(PERIOD_S - LEAD_S - 0.001)


def test_one_late_packet_keeps_the_rhythm() -> None:
    ahead = WarmAhead(LEAD_S)
    last = _regular(ahead, 3)
    late = last + PERIOD_S + 0.006  # a timer on the host was late
    ahead.moved(late)
    # the shorter of the last two periods: the next one is expected on the old beat
    assert ahead.wait_s(late) == pytest.approx(PERIOD_S - LEAD_S)


def test_no_rhythm_no_warm_up() -> None:
    ahead = WarmAhead(LEAD_S)
    for now in (1.0, 1.05, 1.4, 1.42, 2.0, 2.9):
        ahead.moved(now)
        assert ahead.wait_s(now) is None


def test_slow_flows_get_none() -> None:
    ahead = WarmAhead(LEAD_S)
    for i in range(4):
        ahead.moved(10.0 + i * (MAX_PERIOD_S + 0.5))
    assert ahead.wait_s(20.0) is None


def test_a_stream_is_one_burst() -> None:
    ahead = WarmAhead(LEAD_S)
    for i in range(1000):  # a packet every millisecond: never idle long enough to go cold
        ahead.moved(1.0 + i * 0.001)
    assert ahead.wait_s(2.0) is None


def test_lead_must_be_positive() -> None:
    with pytest.raises(ValueError):
        WarmAhead(0.0)


@given(st.lists(st.floats(min_value=0.0, max_value=0.3, allow_nan=False), min_size=1, max_size=40))
def test_warm_ups_per_start_are_bounded(gaps: list[float]) -> None:
    """Whatever the traffic, each start buys at most one window of a few warm-ups, and no
    wait is negative."""
    ahead = WarmAhead(LEAD_S)
    now = 1.0
    for gap in gaps:
        now += gap
        ahead.moved(now)
        probe = now
        for _ in range(int((LEAD_S + LATE_MAX_S) / TICK_S) + 3):
            wait = ahead.wait_s(probe)
            if wait is None:
                break
            assert wait >= 0.0
            if probe + wait > now + gap:  # stop at the next packet's time... or not at all
                break
            probe += wait
            ahead.fired(probe)
    assert ahead.warmups <= len(gaps) * (int((LEAD_S + LATE_MAX_S) / TICK_S) + 2)
