"""The network simulator's public API (issue 3 item 6): import everything from here.

* :class:`SimNetwork` (``tunnel/testing/simnet.py``): virtual clock, event queue, hosts, links,
  NAT traversal, :meth:`SimNetwork.attach` to drive any :class:`tunnel.core.DatagramCore`; its
  module docstring is the manual. Hosts, sockets and endpoints live in ``simhost.py``.
* :class:`SimNat` and its behaviour enums (``tunnel/testing/nat.py``): RFC 4787 NAT boxes.
"""

from __future__ import annotations

from tunnel.testing.nat import (
    DEFAULT_MAPPING_TIMEOUT_S,
    FilteringBehaviour,
    MappingBehaviour,
    MappingInfo,
    NatKind,
    NatStats,
    PortAllocation,
    SimNat,
)
from tunnel.testing.rng import SeededRng
from tunnel.testing.simhost import HostStats, SimEndpoint, SimHost, SimSocket
from tunnel.testing.simnet import (
    DEFAULT_LATENCY_S,
    START_TIME_S,
    LinkParams,
    SimNetwork,
    TraceEntry,
)

__all__ = [
    "DEFAULT_LATENCY_S",
    "DEFAULT_MAPPING_TIMEOUT_S",
    "START_TIME_S",
    "FilteringBehaviour",
    "HostStats",
    "LinkParams",
    "MappingBehaviour",
    "MappingInfo",
    "NatKind",
    "NatStats",
    "PortAllocation",
    "SeededRng",
    "SimEndpoint",
    "SimHost",
    "SimNat",
    "SimNetwork",
    "SimSocket",
    "TraceEntry",
]
