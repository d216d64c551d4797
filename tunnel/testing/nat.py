"""Simulated NAT boxes for :mod:`tunnel.testing.simnet` (UDP only).

The behaviour follows RFC 4787 ("NAT Behavioral Requirements for Unicast UDP"), which splits a
NAT into two independent choices:

* **mapping** (RFC 4787 section 4.1): which outbound flows share one public ``(ip, port)``:
  endpoint-independent (every destination), address-dependent (per destination IP) or
  address-and-port-dependent (per destination IP and port);
* **filtering** (section 5): which inbound packets sent to a mapped public port pass:
  endpoint-independent (anyone), address-dependent (only IPs the inside host has sent to
  through that mapping) or address-and-port-dependent (only exact ``(ip, port)`` endpoints it
  has sent to).

The classic names (RFC 3489) are presets of the two, :class:`NatKind`:

================== ========================= =========================
kind               mapping                   filtering
================== ========================= =========================
FULL_CONE          endpoint-independent      endpoint-independent
ADDRESS_RESTRICTED endpoint-independent      address-dependent
PORT_RESTRICTED    endpoint-independent      address-and-port-dependent
SYMMETRIC          address-and-port-dep.     address-and-port-dependent
================== ========================= =========================

Theory of operation: a mapping is created by the first outbound packet of a flow (keyed by the
inside endpoint and, for dependent mappings, the destination), gets a public port from the
allocator (:class:`PortAllocation`: sequential, random from the network's seeded rng, or
"preserve the inside port if free"), records every destination it sent to (its filter
permissions) and is refreshed by outbound traffic (RFC 4787 REQ-6; inbound refresh is optional,
``inbound_refresh``). A mapping idle for longer than ``mapping_timeout_s`` expires together with
its permissions (checked lazily when it is next used, so expiry costs nothing per packet).
``flush()`` forgets every mapping (router restart); ``change_public_ip()`` also renumbers the
box (a new address from the ISP). Hairpinning (RFC 4787 section 6, REQ-9) is optional: a packet
from inside to the NAT's own public address is translated like an outbound packet and then
filtered like an inbound one.

The NAT itself never schedules anything: :class:`tunnel.testing.simnet.SimNetwork` calls
:meth:`SimNat.outbound` when a packet leaves the private side and :meth:`SimNat.inbound` when one
arrives at the public address, both with the virtual ``now``.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunnel.wire.ip_port import Addr

if TYPE_CHECKING:
    from tunnel.testing.rng import SeededRng
    from tunnel.testing.simhost import SimHost

DEFAULT_MAPPING_TIMEOUT_S = 120.0
"""RFC 4787 REQ-5: a UDP mapping must not expire in less than two minutes."""
DEFAULT_LAN_LATENCY_S = 0.0005
FIRST_PUBLIC_PORT = 1024
LAST_PUBLIC_PORT = 65535
DEFAULT_SEQUENTIAL_START_PORT = 20000
_RANDOM_PORT_TRIES = 64


class MappingBehaviour(enum.Enum):
    """RFC 4787 section 4.1: what one public port is shared by."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class FilteringBehaviour(enum.Enum):
    """RFC 4787 section 5: which outside endpoints may send to a mapped public port."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class NatKind(enum.Enum):
    """The classic NAT types as presets of mapping and filtering behaviour."""

    FULL_CONE = "full-cone"
    ADDRESS_RESTRICTED = "address-restricted"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"

    @property
    def mapping(self) -> MappingBehaviour:
        """The mapping behaviour of this kind."""
        if self is NatKind.SYMMETRIC:
            return MappingBehaviour.ADDRESS_AND_PORT_DEPENDENT
        return MappingBehaviour.ENDPOINT_INDEPENDENT

    @property
    def filtering(self) -> FilteringBehaviour:
        """The filtering behaviour of this kind."""
        if self is NatKind.FULL_CONE:
            return FilteringBehaviour.ENDPOINT_INDEPENDENT
        if self is NatKind.ADDRESS_RESTRICTED:
            return FilteringBehaviour.ADDRESS_DEPENDENT
        return FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT


class PortAllocation(enum.Enum):
    """How a new mapping picks its public port."""

    SEQUENTIAL = "sequential"
    """The next free port after the previous allocation (wraps around)."""
    RANDOM = "random"
    """A uniformly random free port, from the network's seeded rng."""
    PRESERVE = "preserve"
    """The inside port if it is free, else sequential."""


@dataclass(slots=True)
class NatStats:
    """Counters of one NAT box (mutable, read them directly)."""

    mappings_created: int = 0
    mappings_expired: int = 0
    translated_out: int = 0
    translated_in: int = 0
    filtered_in: int = 0
    no_mapping_in: int = 0
    hairpinned: int = 0
    hairpin_refused: int = 0
    ports_exhausted: int = 0


@dataclass(frozen=True, slots=True)
class MappingInfo:
    """A snapshot of one mapping, for tests (:meth:`SimNat.mappings`)."""

    internal: Addr
    public: Addr
    destination: Addr | None
    """The destination the mapping is bound to: ``(ip, 0)`` for address-dependent mapping,
    ``None`` for endpoint-independent."""
    last_active: float


_MapKey = tuple[str, int, str, int]


class _Mapping:
    __slots__ = ("internal_ip", "internal_port", "key", "last_active", "ok_eps", "ok_ips", "port")

    def __init__(self, key: _MapKey, internal_ip: str, internal_port: int, port: int) -> None:
        self.key = key
        self.internal_ip = internal_ip
        self.internal_port = internal_port
        self.port = port
        self.last_active = 0.0
        # dicts used as ordered sets: membership only, but never a set of anything
        self.ok_ips: dict[str, None] = {}
        self.ok_eps: dict[tuple[str, int], None] = {}


class SimNat:
    """A NAT box: a public address on the outer network, private hosts behind it.

    Pass it to :meth:`tunnel.testing.simnet.SimNetwork.add_host` for each host behind it; it is
    registered with the network on first use. ``outer`` puts this NAT's public address inside
    another NAT (nested / carrier-grade NAT); it must then be a private address of ``outer``.
    """

    def __init__(
        self,
        public_ip: str,
        kind: NatKind = NatKind.PORT_RESTRICTED,
        *,
        mapping_timeout_s: float = DEFAULT_MAPPING_TIMEOUT_S,
        port_allocation: PortAllocation = PortAllocation.SEQUENTIAL,
        hairpinning: bool = False,
        inbound_refresh: bool = False,
        mapping: MappingBehaviour | None = None,
        filtering: FilteringBehaviour | None = None,
        lan_latency_s: float = DEFAULT_LAN_LATENCY_S,
        private_prefix: str = "192.168.0.0/16",
        outer: SimNat | None = None,
        sequential_start_port: int = DEFAULT_SEQUENTIAL_START_PORT,
        name: str | None = None,
    ) -> None:
        if mapping_timeout_s <= 0:
            raise ValueError("mapping_timeout_s must be positive")
        if lan_latency_s < 0:
            raise ValueError("lan_latency_s must not be negative")
        if not FIRST_PUBLIC_PORT <= sequential_start_port <= LAST_PUBLIC_PORT:
            raise ValueError("sequential_start_port out of range")
        self.public_ip = str(ipaddress.ip_address(public_ip))
        self.kind = kind
        self.mapping_behaviour = mapping if mapping is not None else kind.mapping
        self.filtering_behaviour = filtering if filtering is not None else kind.filtering
        self.mapping_timeout_s = mapping_timeout_s
        self.port_allocation = port_allocation
        self.hairpinning = hairpinning
        self.inbound_refresh = inbound_refresh
        self.lan_latency_s = lan_latency_s
        self.outer = outer
        self.name = name or f"nat-{self.public_ip}"
        self.stats = NatStats()
        # hosts (and nested NATs) on the private side, by private IP
        self.inside: dict[str, SimHost | SimNat] = {}
        self._private_net = ipaddress.ip_network(private_prefix)
        self._next_private = 2
        self._by_key: dict[_MapKey, _Mapping] = {}
        self._by_port: dict[int, _Mapping] = {}
        self._next_port = sequential_start_port
        self._rng: SeededRng | None = None
        self._outer_realm: dict[str, SimHost | SimNat] | None = None
        self._owner: object = None

    def __repr__(self) -> str:
        return f"SimNat({self.public_ip!r}, {self.kind.name}, mappings={len(self._by_port)})"

    # -- wiring (called by SimNetwork) ----------------------------------------------------

    @property
    def owner(self) -> object:
        """The network the NAT belongs to (None until its first host is added)."""
        return self._owner

    def _register(self, owner: object, realm: dict[str, SimHost | SimNat], rng: SeededRng) -> None:
        if self.public_ip in realm:
            raise ValueError(f"address {self.public_ip} is already in use")
        realm[self.public_ip] = self
        self._owner = owner
        self._outer_realm = realm
        self._rng = rng

    def allocate_private_ip(self) -> str:
        """The next unused address of the private prefix (for ``add_host(None, nat=...)``)."""
        while True:
            if self._next_private >= self._private_net.num_addresses - 1:
                raise ValueError("private address space exhausted")
            ip = str(self._private_net[self._next_private])
            self._next_private += 1
            if ip not in self.inside:
                return ip

    # -- operator actions -----------------------------------------------------------------

    def flush(self) -> None:
        """Forget every mapping (a router restart keeping its address)."""
        self._by_key.clear()
        self._by_port.clear()

    def change_public_ip(self, new_ip: str, *, flush: bool = True) -> None:
        """Renumber the box (the ISP hands out a new address); also flushes by default."""
        new_ip = str(ipaddress.ip_address(new_ip))
        realm = self._outer_realm
        if realm is not None:
            if new_ip in realm:
                raise ValueError(f"address {new_ip} is already in use")
            del realm[self.public_ip]
            realm[new_ip] = self
        self.public_ip = new_ip
        if flush:
            self.flush()

    def mappings(self, now: float | None = None) -> list[MappingInfo]:
        """The live mappings (all if ``now`` is None), by public port."""
        out: list[MappingInfo] = []
        for port in sorted(self._by_port):
            m = self._by_port[port]
            if now is not None and now - m.last_active > self.mapping_timeout_s:
                continue
            _, _, dip, dport = m.key
            dest: Addr | None = None if dip == "" else (dip, dport)
            out.append(
                MappingInfo(
                    (m.internal_ip, m.internal_port), (self.public_ip, port), dest, m.last_active
                )
            )
        return out

    # -- the data path ----------------------------------------------------------------------

    def _key(self, iip: str, iport: int, dip: str, dport: int) -> _MapKey:
        mb = self.mapping_behaviour
        if mb is MappingBehaviour.ENDPOINT_INDEPENDENT:
            return (iip, iport, "", 0)
        if mb is MappingBehaviour.ADDRESS_DEPENDENT:
            return (iip, iport, dip, 0)
        return (iip, iport, dip, dport)

    def _expire(self, m: _Mapping) -> None:
        del self._by_key[m.key]
        del self._by_port[m.port]
        self.stats.mappings_expired += 1

    def _port_free(self, port: int, now: float) -> bool:
        m = self._by_port.get(port)
        if m is None:
            return True
        if now - m.last_active > self.mapping_timeout_s:
            self._expire(m)
            return True
        return False

    def _allocate_port(self, iport: int, now: float) -> int | None:
        span = LAST_PUBLIC_PORT - FIRST_PUBLIC_PORT + 1
        if self.port_allocation is PortAllocation.PRESERVE and iport >= FIRST_PUBLIC_PORT:
            if self._port_free(iport, now):
                return iport
        elif self.port_allocation is PortAllocation.RANDOM and self._rng is not None:
            for _ in range(_RANDOM_PORT_TRIES):
                port = FIRST_PUBLIC_PORT + self._rng.randrange(span)
                if self._port_free(port, now):
                    return port
        for _ in range(span):
            port = self._next_port
            self._next_port = port + 1 if port < LAST_PUBLIC_PORT else FIRST_PUBLIC_PORT
            if self._port_free(port, now):
                return port
        return None

    def outbound(self, iip: str, iport: int, dip: str, dport: int, now: float) -> int | None:
        """Translate a packet leaving ``(iip, iport)`` for ``(dip, dport)``.

        Returns the public source port (the source IP is :attr:`public_ip`), or ``None`` when
        no port is free (the packet is dropped). Creates or refreshes the mapping and records
        the destination as permitted to answer.
        """
        key = self._key(iip, iport, dip, dport)
        m = self._by_key.get(key)
        if m is not None and now - m.last_active > self.mapping_timeout_s:
            self._expire(m)
            m = None
        if m is None:
            port = self._allocate_port(iport, now)
            if port is None:
                self.stats.ports_exhausted += 1
                return None
            m = _Mapping(key, iip, iport, port)
            self._by_key[key] = m
            self._by_port[port] = m
            self.stats.mappings_created += 1
        m.last_active = now
        m.ok_ips[dip] = None
        m.ok_eps[(dip, dport)] = None
        self.stats.translated_out += 1
        return m.port

    def inbound(self, sip: str, sport: int, port: int, now: float) -> Addr | None:
        """Filter a packet from ``(sip, sport)`` to public ``port``.

        Returns the inside ``(ip, port)`` to deliver to, or ``None`` if the packet is dropped
        (no live mapping, or the filter refuses the sender).
        """
        m = self._by_port.get(port)
        if m is None:
            self.stats.no_mapping_in += 1
            return None
        if now - m.last_active > self.mapping_timeout_s:
            self._expire(m)
            self.stats.no_mapping_in += 1
            return None
        fb = self.filtering_behaviour
        if fb is FilteringBehaviour.ADDRESS_DEPENDENT:
            if sip not in m.ok_ips:
                self.stats.filtered_in += 1
                return None
        elif fb is FilteringBehaviour.ADDRESS_AND_PORT_DEPENDENT and (sip, sport) not in m.ok_eps:
            self.stats.filtered_in += 1
            return None
        if self.inbound_refresh:
            m.last_active = now
        self.stats.translated_in += 1
        return (m.internal_ip, m.internal_port)
