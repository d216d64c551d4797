"""An in-process, deterministic UDP network on a virtual clock (style guide 5.4).

Every protocol core is tested on this: hundreds to 10,000 simulated nodes in one process, no
real sockets, no wall clock. Import from :mod:`tunnel.testing.sim`.

Quick tour::

    net = SimNetwork(seed=1)                       # net.now starts at START_TIME_S (1000.0)
    a = net.add_host("11.0.0.1")                   # a public host (also: add_host(None))
    nat = SimNat("11.0.0.254", NatKind.PORT_RESTRICTED)
    b = net.add_host("192.168.0.2", nat=nat)       # behind a NAT (or add_host(None, nat=nat))
    ep = net.attach(core, a, 33445)                # drive a tunnel.core.DatagramCore
    sock = b.bind(5000, handler=lambda data, addr: ...)   # or read sock.inbox
    sock.sendto(b"hi", ("11.0.0.1", 33445))
    net.set_link("11.0.0.1", "11.0.0.254", LinkParams(latency_s=0.05, loss=0.1))
    net.run_for(10.0)
    ok = net.run_until(lambda: core.done, timeout=30.0)
    net.trace_hash()                               # identical for identical seed and inputs

More: ``net.call_at(t, fn)`` / ``call_later``, ``run_until(t)``, ``run_until_idle(limit_s)``,
``net.block(a, b)`` / ``block(a)`` ("UDP blocked") / ``unblock``, ``clear_link``,
``add_natted_host(kind)``, ``remove_host`` (churn), ``fork_rng(label)`` (a seeded rng for a
node's core), ``allocate_ip()``, ``host.public_ip``, ``host.stats`` (:class:`HostStats`),
``net.drops``, ``ep.call_at(t, fn)`` / ``ep.flush()`` / ``ep.detach()``.
NATs: :mod:`tunnel.testing.nat`.

Theory of operation. One heap of events ``(time, seq, action)``; ``seq`` breaks ties in FIFO
order so equal-time events run in the order they were scheduled, and nothing ever compares
actions. ``run_*`` pops events, sets ``now`` to the event time and runs it; time never goes
backwards. Sending is immediate up to the wire: the packet goes through every NAT on the way out
(translation and mapping creation happen at send time), then link parameters of the (public
source IP, destination IP) pair decide its fate with the network's seeded rng: blocked, lost,
delayed by ``latency_s + jitter_s * U[0, 1)`` (jitter reorders), queued behind earlier packets
if the pair has a bandwidth, and maybe duplicated (an independent copy with its own jitter).
Arrival is an event: at the destination address it is either delivered to a host's bound
socket or filtered by a NAT's public side and passed (without delay) to the host behind it.
Packets between hosts behind the same NAT stay on its LAN (``lan_latency_s``, no loss).

Attaching a :class:`tunnel.core.DatagramCore` (:meth:`SimNetwork.attach`) binds a socket whose
datagrams go to ``core.receive(data, addr, now)``; after each delivery and each timer the
endpoint flushes ``core.datagrams_to_send()`` into the network and (re)schedules
``core.handle_timer(now)`` for ``core.next_deadline()``. Timer events are invalidated lazily by
a generation counter; when a deadline moves later, the old event fires early, re-reads the
deadline and reschedules. Commands called on a core from test code are picked up because every
``run_*`` call and every :meth:`SimNetwork.call_at` action flushes all endpoints
(``auto_flush=True``, the default). That costs about 0.5 µs per endpoint, so a 10,000-node
benchmark that scripts many small steps should pass ``auto_flush=False`` and use
:meth:`SimEndpoint.call_at` (runs a command, then flushes that endpoint only) or
:meth:`SimEndpoint.flush`.

Determinism: all randomness comes from :class:`tunnel.testing.rng.SeededRng` forks of the
seed; containers are dicts and lists (insertion order), never iterated sets. The trace is a
running BLAKE2b hash over every delivery and drop (time, kind, endpoints, payload), plus an
optional bounded list of :class:`TraceEntry` (``trace_limit``). ``trace=False`` skips both for
benchmarks.

Drops are counted three ways: ``net.drops[reason]``, the sending host's ``stats`` and the NAT's
``stats``. Reasons: ``blocked``, ``loss``, ``too_big``, ``queue``, ``no_route``,
``port_unreachable``, ``nat_filtered``, ``nat_ports``, ``hairpin``, ``no_ipv6``.

Addresses are strings as sockets give them (``Addr = (ip, port)``); IPv6 strings are normalised
to the compressed form and IPv4-mapped IPv6 to IPv4. IPv6 is never NATed: a host behind a NAT
may also have a public ``ip6``.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from tunnel.testing.nat import DEFAULT_MAPPING_TIMEOUT_S, NatKind, PortAllocation, SimNat
from tunnel.testing.rng import SeededRng
from tunnel.testing.simhost import HostStats, SimEndpoint, SimHost, SimSocket
from tunnel.wire.ip_port import Addr

if TYPE_CHECKING:
    from tunnel.core import DatagramCore

__all__ = [
    "DEFAULT_LATENCY_S",
    "START_TIME_S",
    "HostStats",
    "LinkParams",
    "SimEndpoint",
    "SimHost",
    "SimNetwork",
    "SimSocket",
    "TraceEntry",
]

START_TIME_S = 1000.0
DEFAULT_LATENCY_S = 0.01
PUBLIC_IP4_BASE = ipaddress.IPv4Address("11.0.0.1")
PUBLIC_IP6_BASE = ipaddress.IPv6Address("2001:db8::1")
MAX_EVENTS_AT_ONE_INSTANT = 1_000_000
"""Events at one virtual instant before the run is declared stuck (a zero-delay loop)."""

_Packet = tuple[str, int, str, int, bytes, "SimHost"]
"""(src_ip, src_port, dst_ip, dst_port, data, origin host) as seen on the current segment."""
_Action = Callable[[], None]


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Behaviour of the path between two public addresses (one direction or both)."""

    latency_s: float = DEFAULT_LATENCY_S
    jitter_s: float = 0.0
    """Extra delay, uniform in [0, jitter_s): packets overtake each other."""
    loss: float = 0.0
    """Probability that a packet is lost."""
    duplicate: float = 0.0
    """Probability that a delivered packet is delivered twice."""
    bandwidth_bytes_per_s: float | None = None
    """Serialisation rate of the directed pair; None is infinite."""
    max_queue_s: float = 1.0
    """With a bandwidth: packets that would wait longer than this are dropped (``queue``)."""
    max_datagram_bytes: int | None = None
    """Datagrams longer than this are dropped (``too_big``): a path that drops IP fragments."""

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency and jitter must not be negative")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("loss and duplicate are probabilities")
        if self.bandwidth_bytes_per_s is not None and self.bandwidth_bytes_per_s <= 0:
            raise ValueError("bandwidth must be positive")


class TraceEntry(NamedTuple):
    """One line of the flow log."""

    time: float
    kind: str
    """``deliver`` or ``drop:<reason>``."""
    src: Addr
    dst: Addr
    size: int


class SimNetwork:
    """The simulated internet: hosts, NATs, links, an event queue and a virtual clock."""

    def __init__(
        self,
        seed: int,
        *,
        default_link: LinkParams | None = None,
        start_time: float = START_TIME_S,
        trace: bool = True,
        trace_limit: int = 0,
        auto_flush: bool = True,
    ) -> None:
        self.seed = seed
        self.auto_flush = auto_flush
        self.now = start_time
        self.rng = SeededRng(seed)
        self._link_rng = self.rng.fork("links")
        self.default_link = default_link if default_link is not None else LinkParams()
        self.hosts: list[SimHost] = []
        self.nats: list[SimNat] = []
        self.endpoints: list[SimEndpoint] = []
        self.drops: dict[str, int] = {}
        self.delivered_packets = 0
        self.duplicated_packets = 0
        self.events_run = 0
        self._queue: list[tuple[float, int, _Action]] = []
        self._seq = 0
        self._internet: dict[str, SimHost | SimNat] = {}
        self._links: dict[tuple[str, str], LinkParams] = {}
        self._busy_until: dict[tuple[str, str], float] = {}
        self._blocked_ips: dict[str, None] = {}
        self._blocked_pairs: dict[tuple[str, str], None] = {}
        self._norm: dict[str, str] = {}
        self._next_ip4 = 0
        self._next_ip6 = 0
        self._tracing = trace
        self._hash = hashlib.blake2b(digest_size=16)
        self.trace: deque[TraceEntry] = deque(maxlen=max(trace_limit, 0))
        self._trace_list = trace and trace_limit > 0
        self._instant = start_time
        self._instant_events = 0

    # -- building the topology ------------------------------------------------------------------

    def fork_rng(self, label: int | str) -> SeededRng:
        """An independent seeded rng for a simulated node (``rng=net.fork_rng("node7")``)."""
        return self.rng.fork(f"user/{label}")

    def allocate_ip(self, *, v6: bool = False) -> str:
        """The next unused public address (11.0.0.1, 11.0.0.2, ... or 2001:db8::1, ...)."""
        while True:
            if v6:
                ip = str(PUBLIC_IP6_BASE + self._next_ip6)
                self._next_ip6 += 1
            else:
                ip = str(PUBLIC_IP4_BASE + self._next_ip4)
                self._next_ip4 += 1
            if ip not in self._internet:
                return ip

    def _register_nat(self, nat: SimNat) -> None:
        if nat.owner is not None:
            if nat.owner is not self:
                raise ValueError(f"{nat!r} belongs to another network")
            return
        if nat.outer is not None:
            self._register_nat(nat.outer)
            realm = nat.outer.inside
        else:
            realm = self._internet
        nat._register(self, realm, self.rng.fork(f"nat/{nat.public_ip}"))
        self.nats.append(nat)

    def add_host(
        self,
        ip: str | None = None,
        nat: SimNat | None = None,
        *,
        ip6: str | None = None,
        name: str | None = None,
    ) -> SimHost:
        """Add a host. ``ip`` None allocates one (public, or private if behind ``nat``).

        ``ip`` may be an IPv6 address (then the host has no IPv4 and must not be behind a NAT);
        ``ip6`` gives a dual-stack host a public IPv6 address (never NATed).
        """
        ip4: str | None = None
        if nat is not None:
            self._register_nat(nat)
        if ip is None:
            ip = nat.allocate_private_ip() if nat is not None else self.allocate_ip()
        parsed = ipaddress.ip_address(ip)
        if parsed.version == 6:
            if nat is not None:
                raise ValueError("IPv6 is not NATed: give it as ip6=")
            if ip6 is not None:
                raise ValueError("two IPv6 addresses")
            ip6 = ip
        else:
            ip4 = str(parsed)
        if ip6 is not None:
            ip6 = self._normalise(ip6)
            if ":" not in ip6:
                raise ValueError("ip6 must be an IPv6 address")
            if ip6 in self._internet:
                raise ValueError(f"address {ip6} is already in use")
        realm = nat.inside if nat is not None else self._internet
        if ip4 is not None and ip4 in realm:
            raise ValueError(f"address {ip4} is already in use")
        host = SimHost(self, ip4, ip6, nat, name or f"host{len(self.hosts)}")
        if ip4 is not None:
            realm[ip4] = host
        if ip6 is not None:
            self._internet[ip6] = host
        self.hosts.append(host)
        return host

    def add_natted_host(
        self,
        kind: NatKind = NatKind.PORT_RESTRICTED,
        *,
        port_allocation: PortAllocation = PortAllocation.SEQUENTIAL,
        mapping_timeout_s: float = DEFAULT_MAPPING_TIMEOUT_S,
        hairpinning: bool = False,
        ip6: str | None = None,
        name: str | None = None,
    ) -> SimHost:
        """A host alone behind its own new NAT (public address from :meth:`allocate_ip`)."""
        nat = SimNat(
            self.allocate_ip(),
            kind,
            port_allocation=port_allocation,
            mapping_timeout_s=mapping_timeout_s,
            hairpinning=hairpinning,
        )
        return self.add_host(None, nat, ip6=ip6, name=name)

    def remove_host(self, host: SimHost) -> None:
        """Take a host off the network (churn): its cores stop, packets to it are ``no_route``.

        Packets already in flight from it are still delivered.
        """
        for endpoint in [ep for ep in self.endpoints if ep.host is host]:
            endpoint.detach()
        for sock in list(host.sockets.values()):
            sock.close()
        realm = host.nat.inside if host.nat is not None else self._internet
        if host.ip4 is not None and realm.get(host.ip4) is host:
            del realm[host.ip4]
        if host.ip6 is not None and self._internet.get(host.ip6) is host:
            del self._internet[host.ip6]
        self.hosts.remove(host)

    def attach(self, core: DatagramCore, host: SimHost, port: int = 0) -> SimEndpoint:
        """Drive ``core`` from a socket bound on ``host:port`` (see the module docstring)."""
        endpoint = SimEndpoint(self, core, host, port)
        self.endpoints.append(endpoint)
        endpoint.flush()
        return endpoint

    def set_link(self, a_ip: str, b_ip: str, params: LinkParams, *, both_ways: bool = True) -> None:
        """Link parameters between two public addresses (a NATed host: its NAT's address)."""
        a, b = self._normalise(a_ip), self._normalise(b_ip)
        self._links[(a, b)] = params
        if both_ways:
            self._links[(b, a)] = params

    def clear_link(self, a_ip: str, b_ip: str) -> None:
        """Back to ``default_link`` for the pair (both directions)."""
        a, b = self._normalise(a_ip), self._normalise(b_ip)
        self._links.pop((a, b), None)
        self._links.pop((b, a), None)

    def link(self, a_ip: str, b_ip: str) -> LinkParams:
        """The parameters that apply from ``a_ip`` to ``b_ip``."""
        return self._links.get((self._normalise(a_ip), self._normalise(b_ip)), self.default_link)

    def block(self, a: str, b: str | None = None) -> None:
        """Drop all UDP between public addresses ``a`` and ``b``, or to and from ``a``.

        With one address, it may be any host's own address (private ones too): that host's
        UDP is cut off entirely ("UDP blocked"); a NAT's public address cuts off all behind it.
        """
        if b is None:
            self._blocked_ips[self._normalise(a)] = None
        else:
            x, y = self._normalise(a), self._normalise(b)
            self._blocked_pairs[(x, y)] = None
            self._blocked_pairs[(y, x)] = None

    def unblock(self, a: str, b: str | None = None) -> None:
        """Undo :meth:`block` with the same arguments."""
        if b is None:
            self._blocked_ips.pop(self._normalise(a), None)
        else:
            x, y = self._normalise(a), self._normalise(b)
            self._blocked_pairs.pop((x, y), None)
            self._blocked_pairs.pop((y, x), None)

    # -- scheduling and running -------------------------------------------------------------------

    def _schedule(self, t: float, action: _Action) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, action))

    def call_at(self, t: float, fn: Callable[[], object]) -> None:
        """Run ``fn()`` at virtual time ``t`` (clamped to now), then flush every endpoint.

        Without ``auto_flush`` nothing is flushed: use :meth:`SimEndpoint.call_at`.
        """

        def action() -> None:
            fn()
            if self.auto_flush:
                self.flush_all()

        self._schedule(t if t > self.now else self.now, action)

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> None:
        """:meth:`call_at` relative to now."""
        self.call_at(self.now + delay_s, fn)

    def flush_all(self) -> None:
        """Flush every attached endpoint (commands given to cores outside the simulation)."""
        for endpoint in list(self.endpoints):
            endpoint.flush()

    @property
    def pending_events(self) -> int:
        """Events in the queue (including stale timer events)."""
        return len(self._queue)

    def _step(self) -> None:
        t, _, action = heapq.heappop(self._queue)
        if t == self._instant:
            self._instant_events += 1
            if self._instant_events > MAX_EVENTS_AT_ONE_INSTANT:
                raise RuntimeError(f"simulation stuck: too many events at t={t}")
        else:
            self._instant = t
            self._instant_events = 1
        self.now = t
        self.events_run += 1
        action()

    def run_until(self, target: float | Callable[[], bool], timeout: float | None = None) -> bool:
        """Run to virtual time ``target``, or until ``target()`` is true (within ``timeout``).

        With a time, returns True once ``now == target``. With a predicate (checked before the
        first event and after each one), returns whether it became true; on timeout ``now`` is
        ``start + timeout``.
        """
        if self.auto_flush:
            self.flush_all()
        queue = self._queue
        if callable(target):
            if timeout is None:
                raise ValueError("run_until(predicate) needs a timeout")
            end = self.now + timeout
            if target():
                return True
            while queue and queue[0][0] <= end:
                self._step()
                if target():
                    return True
            self.now = max(self.now, end)
            return bool(target())
        end = target
        while queue and queue[0][0] <= end:
            self._step()
        self.now = max(self.now, end)
        return True

    def run_for(self, dt: float) -> None:
        """Run ``dt`` seconds of virtual time."""
        self.run_until(self.now + dt)

    def run_until_idle(self, limit_s: float = 3600.0) -> bool:
        """Run until nothing is scheduled, at most ``limit_s`` of virtual time.

        Returns True if the queue emptied (cores with periodic timers never go idle).
        """
        if self.auto_flush:
            self.flush_all()
        end = self.now + limit_s
        queue = self._queue
        while queue and queue[0][0] <= end:
            self._step()
        if queue:
            self.now = max(self.now, end)
            return False
        return True

    # -- trace ------------------------------------------------------------------------------

    def trace_hash(self) -> str:
        """Hex digest of everything delivered and dropped so far."""
        return self._hash.hexdigest()

    def _record(self, kind: str, sip: str, sport: int, dip: str, dport: int, data: bytes) -> None:
        self._hash.update(f"{self.now!r} {kind} {sip} {sport} {dip} {dport} {len(data)}|".encode())
        self._hash.update(data)
        if self._trace_list:
            self.trace.append(TraceEntry(self.now, kind, (sip, sport), (dip, dport), len(data)))

    # -- the data path ----------------------------------------------------------------------

    def _normalise(self, ip: str) -> str:
        norm = self._norm.get(ip)
        if norm is None:
            parsed = ipaddress.ip_address(ip)
            if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
                parsed = parsed.ipv4_mapped
            norm = str(parsed)
            if len(self._norm) < 1_000_000:
                self._norm[ip] = norm
        return norm

    def _drop(self, reason: str, pkt: _Packet) -> None:
        sip, sport, dip, dport, data, origin = pkt
        self.drops[reason] = self.drops.get(reason, 0) + 1
        stats = origin.stats
        stats.dropped_packets += 1
        stats.dropped_bytes += len(data)
        if self._tracing:
            self._record("drop:" + reason, sip, sport, dip, dport, data)

    def _send(self, host: SimHost, sport: int, data: bytes, addr: Addr) -> None:
        dip = self._norm.get(addr[0]) or self._normalise(addr[0])
        dport = addr[1]
        stats = host.stats
        stats.sent_packets += 1
        stats.sent_bytes += len(data)
        if ":" in dip:
            sip = host.ip6
            if sip is None:
                self._drop("no_ipv6", (host.ip, sport, dip, dport, data, host))
                return
            nat = None
        else:
            sip = host.ip4
            if sip is None:
                self._drop("no_route", (host.ip, sport, dip, dport, data, host))
                return
            nat = host.nat
        pkt: _Packet = (sip, sport, dip, dport, data, host)
        if not 0 < dport <= 65535:
            self._drop("no_route", pkt)
            return
        if self._blocked_ips and sip in self._blocked_ips:
            self._drop("blocked", pkt)
            return
        while nat is not None:
            if dip in nat.inside:
                self._schedule(self.now + nat.lan_latency_s, partial(self._arrive, nat, pkt))
                return
            if dip == nat.public_ip:
                self._hairpin(nat, pkt)
                return
            port = nat.outbound(sip, sport, dip, dport, self.now)
            if port is None:
                self._drop("nat_ports", pkt)
                return
            sip, sport = nat.public_ip, port
            pkt = (sip, sport, dip, dport, data, host)
            nat = nat.outer
        self._transmit(pkt)

    def _hairpin(self, nat: SimNat, pkt: _Packet) -> None:
        sip, sport, dip, dport, data, origin = pkt
        if not nat.hairpinning:
            nat.stats.hairpin_refused += 1
            self._drop("hairpin", pkt)
            return
        port = nat.outbound(sip, sport, dip, dport, self.now)
        if port is None:
            self._drop("nat_ports", pkt)
            return
        nat.stats.hairpinned += 1
        # arrives at the public side of the same box, from its own public address
        hair: _Packet = (nat.public_ip, port, dip, dport, data, origin)
        realm_owner = nat.outer
        self._schedule(self.now + nat.lan_latency_s, partial(self._arrive, realm_owner, hair))

    def _transmit(self, pkt: _Packet) -> None:
        """Put a packet on the internet segment: link parameters decide its fate."""
        sip, _, dip, _, data, _ = pkt
        if self._blocked_pairs and (sip, dip) in self._blocked_pairs:
            self._drop("blocked", pkt)
            return
        if self._blocked_ips and (sip in self._blocked_ips or dip in self._blocked_ips):
            self._drop("blocked", pkt)
            return
        link = self._links.get((sip, dip), self.default_link) if self._links else self.default_link
        rng = self._link_rng
        if link.loss and rng.uniform() < link.loss:
            self._drop("loss", pkt)
            return
        if link.max_datagram_bytes is not None and len(data) > link.max_datagram_bytes:
            self._drop("too_big", pkt)
            return
        now = self.now
        depart = now
        if link.bandwidth_bytes_per_s is not None:
            key = (sip, dip)
            busy = self._busy_until.get(key, now)
            start = busy if busy > now else now
            if start - now > link.max_queue_s:
                self._drop("queue", pkt)
                return
            depart = start + len(data) / link.bandwidth_bytes_per_s
            self._busy_until[key] = depart
        arrive = depart + link.latency_s
        if link.jitter_s:
            arrive += link.jitter_s * rng.uniform()
        self._schedule(arrive, partial(self._arrive, None, pkt))
        if link.duplicate and rng.uniform() < link.duplicate:
            self.duplicated_packets += 1
            again = depart + link.latency_s
            if link.jitter_s:
                again += link.jitter_s * rng.uniform()
            self._schedule(again, partial(self._arrive, None, pkt))

    def _arrive(self, realm_owner: SimNat | None, pkt: _Packet) -> None:
        """A packet reaches ``pkt``'s destination address in a realm (None: the internet)."""
        sip, sport, dip, dport, data, origin = pkt
        now = self.now
        while True:
            realm = self._internet if realm_owner is None else realm_owner.inside
            target = realm.get(dip)
            if type(target) is SimHost:
                break
            if target is None:
                self._drop("no_route", pkt)
                return
            assert isinstance(target, SimNat)
            internal = target.inbound(sip, sport, dport, now)
            if internal is None:
                self._drop("nat_filtered", pkt)
                return
            dip, dport = internal
            pkt = (sip, sport, dip, dport, data, origin)
            realm_owner = target
        if self._blocked_ips and dip in self._blocked_ips:
            self._drop("blocked", pkt)
            return
        sock = target.sockets.get(dport)
        if sock is None:
            self._drop("port_unreachable", pkt)
            return
        stats = target.stats
        stats.received_packets += 1
        stats.received_bytes += len(data)
        self.delivered_packets += 1
        if self._tracing:
            self._record("deliver", sip, sport, dip, dport, data)
        handler = sock.handler
        if handler is None:
            sock.inbox.append((data, (sip, sport)))
        else:
            handler(data, (sip, sport))
