"""Node options for tests on loopback: a port from the test's own pool, bootstrapped off one
local bootstrap daemon (a real tox-bootstrapd, :mod:`tunnel.testing.bootstrapd`, or ours,
:mod:`tunnel.testing.our_bootstrapd`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from tunnel.config import BootstrapNode
from tunnel.node_types import NodeOptions
from tunnel.testing.ports import PortPool

LOCALHOST = "127.0.0.1"


class BootstrapHost(Protocol):
    """What a node needs to know of a bootstrap daemon (both kinds have these)."""

    @property
    def host(self) -> str: ...

    @property
    def udp_port(self) -> int: ...

    @property
    def public_key(self) -> bytes: ...

    @property
    def tcp_ports(self) -> tuple[int, ...]: ...


def bootstrap_nodes(bsd: BootstrapHost) -> tuple[BootstrapNode, ...]:
    """``bsd`` as the only bootstrap node (its DHT/onion key and TCP relay ports)."""
    return (BootstrapNode(bsd.host, bsd.udp_port, bsd.public_key, tuple(bsd.tcp_ports)),)


def loopback_options(
    port_pool: PortPool, bsd: BootstrapHost | None = None, **changes: Any
) -> NodeOptions:
    """Options for a node on 127.0.0.1 with one UDP port from ``port_pool``, IPv4 only, no hole
    punching, bootstrapping off ``bsd`` alone (none without it); ``changes`` override fields."""
    port = port_pool.allocate_one()
    options = NodeOptions(
        udp_host=LOCALHOST,
        ipv6=False,
        port_start=port,
        port_end=port,
        hole_punching=False,
        bootstrap=() if bsd is None else bootstrap_nodes(bsd),
    )
    return dataclasses.replace(options, **changes)
