"""NAT hole punching: toxcore's port guessing (tox-protocol.md 4.9, ``DHT.c punch_holes``).

Pure functions; :class:`tunnel.dht.core.DhtCore` keeps the per-friend :class:`NatState` and
sends one DHT ping request to the friend's DHT key at each guessed address.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tunnel.wire.ip_port import IPAddress, IPPort

PUNCH_INTERVAL_S = 3.0
PUNCH_RESET_TIME_S = 40.0
MAX_PUNCHING_PORTS = 48
MAX_NORMAL_PUNCHING_TRIES = 5
NAT_PING_INTERVAL_S = PUNCH_INTERVAL_S


@dataclass(slots=True)
class NatState:
    """Per-friend NAT traversal state (toxcore ``NAT`` struct)."""

    hole_punching: bool = False
    punching_index: int = 0
    tries: int = 0
    punching_index2: int = 0
    punching_timestamp: float = float("-inf")
    recv_nat_ping_timestamp: float = float("-inf")
    nat_ping_id: bytes = bytes(8)
    nat_ping_timestamp: float = float("-inf")


def common_ip(addresses: list[IPPort], min_count: int) -> IPAddress | None:
    """The IP address reported at least ``min_count`` times, if any (first such in order)."""
    counts = Counter(a.ip for a in addresses)
    for address in addresses:
        if counts[address.ip] >= min_count:
            return address.ip
    return None


def guess_ports(ports: list[int], state: NatState, now: float) -> list[int]:
    """The ports to punch this round; advances the guessing counters in ``state``.

    All reported ports equal: just that port. Otherwise 48 guesses fanning out around each
    reported port, and after 5 tries also 48 ports counting up from 1024.
    """
    if not ports:
        return []
    if state.punching_timestamp + PUNCH_RESET_TIME_S < now:
        state.tries = 0
        state.punching_index = 0
        state.punching_index2 = 0
    if all(port == ports[0] for port in ports):
        guesses = [ports[0]]
    else:
        guesses = []
        numports = len(ports)
        for i in range(MAX_PUNCHING_PORTS):
            it = i + state.punching_index
            sign = -1 if it % 2 else 1
            delta = sign * (it // (2 * numports))
            guesses.append((ports[(it // 2) % numports] + delta) & 0xFFFF)
        state.punching_index += MAX_PUNCHING_PORTS
    if state.tries > MAX_NORMAL_PUNCHING_TRIES:
        for i in range(MAX_PUNCHING_PORTS):
            guesses.append((1024 + state.punching_index2 + i) & 0xFFFF)
        state.punching_index2 += MAX_PUNCHING_PORTS // 2
    state.tries += 1
    return guesses
