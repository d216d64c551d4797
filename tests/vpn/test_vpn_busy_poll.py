"""The TUN pump's busy-poll window, keep-warm ticks and warm-ups ahead (no root: a pipe
stands in for the device, another pipe for the node's UDP socket). No timing assertions: the
tests wait for counters with generous deadlines and check which counters move."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from tunnel.errors import ConfigError
from tunnel.io.tun import PacketSlot, TunPump
from tunnel.io.warm_ahead import LATE_MAX_S, TICK_S
from tunnel.vpn.config import (
    DEFAULT_BUSY_POLL_WINDOW_US,
    DEFAULT_WARM_AHEAD_US,
    MAX_WARM_AHEAD_US,
    parse_vpn_config,
)

WAIT_S = 10.0
LONG_WINDOW_S = 600.0  # "forever" within a test


class FakeDevice:
    """What TunPump needs of a TunDevice: a non-blocking fd that stays empty, and a name."""

    name = "fake0"

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)

    def fileno(self) -> int:
        return self.r

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class Feed:
    """A pipe read on the pump thread; each byte read is one "packet". The callback returns
    whether data moved (as UdpReceiver.on_readable does: control traffic returns False)."""

    def __init__(self, moved: bool = True) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.moved = moved
        self.calls = 0

    def send(self) -> None:
        os.write(self.w, b"p")

    def on_readable(self) -> bool:
        os.read(self.r, 64)
        self.calls += 1
        return self.moved

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def _ignore(slots: list[PacketSlot]) -> None:
    pass


class WarmCalls:
    """A warm-up callback that counts its calls (``reached`` is set at ``target`` calls)."""

    def __init__(self, target: int = 0) -> None:
        self.calls = 0
        self.target = target
        self.reached = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.target and self.calls >= self.target:
            self.reached.set()


@pytest.fixture
def make_pump() -> Iterator[Callable[..., tuple[TunPump, Feed]]]:
    made: list[tuple[TunPump, Feed, FakeDevice]] = []

    def make(*, moved: bool = True, **kwargs: Any) -> tuple[TunPump, Feed]:
        device = FakeDevice()
        pump = TunPump(device, _ignore, batch_size=4, capacity=2048, **kwargs)  # type: ignore[arg-type]
        feed = Feed(moved)
        pump.add_reader(feed.r, feed.on_readable)
        pump.start()
        made.append((pump, feed, device))
        return pump, feed

    yield make
    for pump, feed, device in made:
        pump.stop()
        feed.close()
        device.close()


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def settle(pump: TunPump) -> None:
    """Wait until the pump thread has reached its first blocking wait."""
    wait_for(lambda: pump.blocking_polls >= 1)


def test_window_zero_blocks_right_after_data(
    make_pump: Callable[..., tuple[TunPump, Feed]],
) -> None:
    pump, feed = make_pump(busy_poll_window_s=0.0)
    settle(pump)
    before = pump.blocking_polls
    feed.send()
    wait_for(lambda: feed.calls == 1 and pump.blocking_polls > before)
    time.sleep(0.05)
    assert pump.busy_windows == 0
    assert pump.busy_polls == 0
    assert pump.blocking_polls == before + 1  # straight back to one blocking wait


def test_window_keeps_polling_and_serving(make_pump: Callable[..., tuple[TunPump, Feed]]) -> None:
    pump, feed = make_pump(busy_poll_window_s=LONG_WINDOW_S)
    settle(pump)
    feed.send()
    wait_for(lambda: feed.calls == 1)
    blocking = pump.blocking_polls
    wait_for(lambda: pump.busy_polls > 200)  # spinning, not sleeping
    assert pump.busy_windows == 1
    feed.send()  # served during the window, without a blocking wait
    wait_for(lambda: feed.calls == 2)
    polls = pump.busy_polls
    wait_for(lambda: pump.busy_polls > polls + 200)
    assert pump.blocking_polls == blocking
    assert pump.busy_windows == 1  # the second packet extended the same window


def test_trio_thread_runs_while_the_pump_spins(
    make_pump: Callable[..., tuple[TunPump, Feed]],
) -> None:
    pump, feed = make_pump(busy_poll_window_s=LONG_WINDOW_S)
    settle(pump)
    feed.send()
    wait_for(lambda: pump.busy_polls > 100)

    async def work() -> int:
        rounds = 0
        for _ in range(50):  # timer wake-ups and thread hand-offs need the GIL back
            await trio.sleep(0.001)
            await trio.to_thread.run_sync(lambda: None)
            rounds += 1
        return rounds

    polls = pump.busy_polls
    assert trio.run(work) == 50
    assert pump.busy_polls > polls  # and the pump kept spinning meanwhile
    assert pump.busy_windows == 1


def test_pump_blocks_again_after_the_window(
    make_pump: Callable[..., tuple[TunPump, Feed]],
) -> None:
    pump, feed = make_pump(busy_poll_window_s=0.02)
    settle(pump)
    before = pump.blocking_polls
    feed.send()
    wait_for(lambda: pump.blocking_polls > before)  # the window ended: blocked again
    assert pump.busy_windows == 1
    assert pump.busy_polls > 0
    polls = pump.busy_polls
    time.sleep(0.1)
    assert pump.busy_polls == polls  # no CPU spent while idle


def test_control_traffic_starts_no_window(make_pump: Callable[..., tuple[TunPump, Feed]]) -> None:
    pump, feed = make_pump(moved=False, busy_poll_window_s=LONG_WINDOW_S)
    settle(pump)
    before = pump.blocking_polls
    feed.send()
    wait_for(lambda: feed.calls == 1 and pump.blocking_polls > before)
    time.sleep(0.05)
    assert pump.busy_windows == 0
    assert pump.busy_polls == 0


def test_keep_warm_ticks_after_data_then_stop(
    make_pump: Callable[..., tuple[TunPump, Feed]],
) -> None:
    warm = WarmCalls(target=5)
    pump, feed = make_pump(warm=warm, warm_interval_ms=1, warm_for_s=0.05)
    settle(pump)
    time.sleep(0.05)
    assert warm.calls == 0  # no traffic yet: no ticks
    feed.send()
    assert warm.reached.wait(WAIT_S)
    wait_for(lambda: pump.warm_calls == warm.calls and not _ticking(pump))
    assert pump.busy_polls == 0  # busy polling is off here


def _ticking(pump: TunPump) -> bool:
    calls = pump.warm_calls
    time.sleep(0.1)
    return pump.warm_calls != calls


def test_keep_warm_off_without_interval(make_pump: Callable[..., tuple[TunPump, Feed]]) -> None:
    warm = WarmCalls()
    pump, feed = make_pump(warm=warm, warm_interval_ms=0)
    settle(pump)
    feed.send()
    wait_for(lambda: feed.calls == 1)
    time.sleep(0.05)
    assert warm.calls == 0
    assert pump.warm_calls == 0


def test_warm_ahead_warms_up_before_a_regular_flow_then_stops(
    make_pump: Callable[..., tuple[TunPump, Feed]],
) -> None:
    warm = WarmCalls(target=1)
    lead_s = 0.005
    pump, feed = make_pump(warm=warm, warm_ahead_lead_s=lead_s)
    settle(pump)
    for _ in range(6):  # the rhythm is the input: a packet every 30 ms
        feed.send()
        time.sleep(0.03)
    assert warm.reached.wait(WAIT_S)  # warmed up ahead of a next packet, which never comes
    wait_for(lambda: not _ticking(pump))  # the window ended: blocked without ticks
    per_window = int((lead_s + 0.001 + LATE_MAX_S) / TICK_S) + 1
    assert 1 <= pump.warm_calls == warm.calls <= 4 * per_window  # a window per expected packet
    assert pump.busy_polls == 0


def test_warm_ahead_needs_a_rhythm(make_pump: Callable[..., tuple[TunPump, Feed]]) -> None:
    warm = WarmCalls()
    pump, feed = make_pump(warm=warm, warm_ahead_lead_s=0.005)
    settle(pump)
    for gap in (0.01, 0.08, 0.02):  # no two periods alike
        feed.send()
        time.sleep(gap)
    feed.send()
    wait_for(lambda: feed.calls == 4)
    time.sleep(0.15)  # longer than any period above: a predicted warm-up would have run
    assert warm.calls == 0


def test_negative_times_are_refused() -> None:
    device = FakeDevice()
    try:
        with pytest.raises(ValueError):
            TunPump(device, _ignore, busy_poll_window_s=-1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            TunPump(device, _ignore, warm_interval_ms=-1)  # type: ignore[arg-type]
    finally:
        device.close()


def test_config_keys() -> None:
    base = {"secret": "00" * 32, "ipv4_pool": "10.77.0.0/16"}
    config = parse_vpn_config(base)
    assert config.busy_poll_us == DEFAULT_BUSY_POLL_WINDOW_US
    assert config.keep_warm_ms == 0
    assert config.warm_ahead_us == DEFAULT_WARM_AHEAD_US > 0
    config = parse_vpn_config({**base, "busy_poll_us": 1000, "keep_warm_ms": 2, "warm_ahead_us": 0})
    assert config.busy_poll_us == 1000
    assert config.keep_warm_ms == 2
    assert config.warm_ahead_us == 0
    for bad in (-1, MAX_WARM_AHEAD_US + 1, "soon"):
        with pytest.raises(ConfigError, match="warm_ahead_us"):
            parse_vpn_config({**base, "warm_ahead_us": bad})
