"""Waiting for :class:`RelayPoolDriver` events, for the TCP relay tests on Trio."""

from __future__ import annotations

from collections.abc import Callable

import trio

from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.tcp_relay.connections import PoolEvent

EVENT_TIMEOUT_S = 10.0


async def wait_event(
    driver: RelayPoolDriver, match: Callable[[PoolEvent], bool], limit_s: float = EVENT_TIMEOUT_S
) -> PoolEvent:
    """The driver's next event that ``match`` accepts (others are dropped), within ``limit_s``."""
    with trio.fail_after(limit_s):
        while True:
            ev = await driver.next_event()
            if match(ev):
                return ev
