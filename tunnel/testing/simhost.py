"""Hosts, sockets and core endpoints of the network simulator (see :mod:`tunnel.testing.simnet`).

A :class:`SimHost` is a machine with addresses and bound :class:`SimSocket` ports; a
:class:`SimEndpoint` drives one :class:`tunnel.core.DatagramCore` from a socket: deliveries go to
``core.receive``, then ``core.datagrams_to_send()`` is flushed and ``core.handle_timer`` is
scheduled for ``core.next_deadline()`` (lazily invalidated by a generation counter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from tunnel.wire.ip_port import Addr

if TYPE_CHECKING:
    from tunnel.core import DatagramCore
    from tunnel.testing.nat import SimNat
    from tunnel.testing.simnet import SimNetwork

EPHEMERAL_PORT_FIRST = 49152
MAX_TIMER_FIRES_AT_ONE_INSTANT = 10_000
"""``handle_timer`` calls at one instant before a core is declared stuck (deadline <= now)."""


@dataclass(slots=True)
class HostStats:
    """Per-host counters (mutable; read the fields). Drops count the host's sent packets."""

    sent_packets: int = 0
    sent_bytes: int = 0
    received_packets: int = 0
    received_bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0


Handler = Callable[[bytes, Addr], None]


class SimSocket:
    """A bound UDP port of a :class:`SimHost`.

    Received datagrams go to ``handler(data, addr)`` if set, else are appended to ``inbox``.
    """

    __slots__ = ("closed", "handler", "host", "inbox", "port")

    def __init__(self, host: SimHost, port: int, handler: Handler | None) -> None:
        self.host = host
        self.port = port
        self.handler = handler
        self.inbox: list[tuple[bytes, Addr]] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"SimSocket({self.host.ip}:{self.port})"

    @property
    def addr(self) -> Addr:
        """The local address (the host's primary IP and the bound port)."""
        return (self.host.ip, self.port)

    def sendto(self, data: bytes, addr: Addr) -> None:
        """Send one datagram; it never blocks and never fails loudly (drops are counted)."""
        if self.closed:
            raise ValueError("socket is closed")
        self.host.net._send(self.host, self.port, bytes(data), addr)

    def close(self) -> None:
        """Unbind the port; later datagrams to it are dropped (``port_unreachable``)."""
        if not self.closed:
            self.closed = True
            if self.host.sockets.get(self.port) is self:
                del self.host.sockets[self.port]


class SimHost:
    """A machine with an IPv4 and/or IPv6 address, optionally behind a :class:`SimNat`."""

    __slots__ = ("_next_ephemeral", "ip", "ip4", "ip6", "name", "nat", "net", "sockets", "stats")

    def __init__(
        self, net: SimNetwork, ip4: str | None, ip6: str | None, nat: SimNat | None, name: str
    ) -> None:
        self.net = net
        self.ip4 = ip4
        self.ip6 = ip6
        primary = ip4 if ip4 is not None else ip6
        if primary is None:
            raise ValueError("a host needs an address")
        self.ip: str = primary
        self.nat = nat
        self.name = name
        self.sockets: dict[int, SimSocket] = {}
        self.stats = HostStats()
        self._next_ephemeral = EPHEMERAL_PORT_FIRST

    def __repr__(self) -> str:
        behind = f" behind {self.nat.public_ip}" if self.nat is not None else ""
        return f"SimHost({self.name}: {self.ip}{behind})"

    @property
    def public_ip(self) -> str:
        """The IPv4 address others see (the outermost NAT's), or the IPv6 address."""
        nat = self.nat
        if nat is None:
            return self.ip
        while nat.outer is not None:
            nat = nat.outer
        return nat.public_ip

    def bind(self, port: int = 0, handler: Handler | None = None) -> SimSocket:
        """Bind a UDP port (0: the next free ephemeral port) on all of the host's addresses."""
        if port == 0:
            for _ in range(65536 - EPHEMERAL_PORT_FIRST):
                candidate = self._next_ephemeral
                self._next_ephemeral = candidate + 1 if candidate < 65535 else EPHEMERAL_PORT_FIRST
                if candidate not in self.sockets:
                    port = candidate
                    break
            else:
                raise OSError("no free ephemeral port")
        if not 0 < port <= 65535:
            raise ValueError(f"port out of range: {port}")
        if port in self.sockets:
            raise OSError(f"{self.ip}:{port} is already bound")
        sock = SimSocket(self, port, handler)
        self.sockets[port] = sock
        return sock


class SimEndpoint:
    """A :class:`tunnel.core.DatagramCore` attached to a host's port (see the module doc)."""

    __slots__ = ("_fires", "_fires_at", "_gen", "_timer_due", "core", "host", "net", "socket")

    def __init__(self, net: SimNetwork, core: DatagramCore, host: SimHost, port: int) -> None:
        self.net = net
        self.core = core
        self.host = host
        self.socket = host.bind(port, self._on_datagram)
        self._gen = 0
        self._timer_due: float | None = None
        self._fires = 0
        self._fires_at = 0.0

    def __repr__(self) -> str:
        return f"SimEndpoint({type(self.core).__name__} at {self.host.ip}:{self.socket.port})"

    @property
    def addr(self) -> Addr:
        """The local address (private if the host is behind a NAT)."""
        return self.socket.addr

    def _on_datagram(self, data: bytes, addr: Addr) -> None:
        self.core.receive(data, addr, self.net.now)
        self.flush()

    def flush(self) -> None:
        """Send what the core has queued and reschedule its timer (after calling a command)."""
        if self.socket.closed:
            return
        sendto = self.socket.sendto
        for addr, data in self.core.datagrams_to_send():
            sendto(data, addr)
        self._update_timer()

    def _update_timer(self) -> None:
        deadline = self.core.next_deadline()
        if deadline is None:
            if self._timer_due is not None:
                self._gen += 1
                self._timer_due = None
            return
        net = self.net
        t = deadline if deadline > net.now else net.now
        due = self._timer_due
        if due is not None and due <= t:
            return  # the pending event fires first and re-reads the deadline
        self._gen += 1
        self._timer_due = t
        net._schedule(t, partial(self._fire, self._gen))

    def _fire(self, gen: int) -> None:
        if gen != self._gen or self.socket.closed:
            return
        self._timer_due = None
        net = self.net
        now = net.now
        deadline = self.core.next_deadline()
        if deadline is None:
            return
        if deadline > now:
            self._update_timer()
            return
        if now == self._fires_at:
            self._fires += 1
            if self._fires > MAX_TIMER_FIRES_AT_ONE_INSTANT:
                raise RuntimeError(
                    f"{self!r}: stuck, next_deadline() stays <= now={now} after handle_timer"
                )
        else:
            self._fires_at = now
            self._fires = 1
        self.core.handle_timer(now)
        self.flush()

    def call_at(self, t: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` (a command on the core) at virtual time ``t``, then flush this endpoint."""

        def action() -> None:
            fn()
            self.flush()

        net = self.net
        net._schedule(t if t > net.now else net.now, action)

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> None:
        """:meth:`call_at` relative to now."""
        self.call_at(self.net.now + delay_s, fn)

    def detach(self) -> None:
        """Stop driving the core and close its socket."""
        self._gen += 1
        self._timer_due = None
        self.socket.close()
        if self in self.net.endpoints:
            self.net.endpoints.remove(self)
