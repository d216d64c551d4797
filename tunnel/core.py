"""The shape every sans-IO datagram core has, so one driver (Trio or the simulator) runs any.

A core never reads a clock, never touches a socket and never draws randomness of its own:

* ``receive(data, addr, now)`` feeds one datagram that arrived from ``addr``;
* ``datagrams_to_send()`` drains what the core wants sent, as ``(addr, bytes)`` pairs;
* ``next_deadline()`` is the earliest ``now`` at which ``handle_timer`` must be called
  (``None``: no timer pending);
* ``handle_timer(now)`` runs whatever periodic work is due.

``now`` is seconds on the driver's clock (``trio.current_time()`` or the simulator's virtual
clock); only differences between values matter.
"""

from __future__ import annotations

from typing import Protocol

from tunnel.wire.ip_port import Addr


class DatagramCore(Protocol):
    """A sans-IO protocol core driven by datagrams and timers."""

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Feed one datagram received from ``addr`` at time ``now``."""

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain and return the datagrams the core wants sent."""

    def next_deadline(self) -> float | None:
        """The time at which :meth:`handle_timer` is next due, or ``None``."""

    def handle_timer(self, now: float) -> None:
        """Run timers that are due at ``now``."""
