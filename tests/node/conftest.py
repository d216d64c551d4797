"""Fixtures for the Node tests: everything on ports 50000-50999 (this suite's own range)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tunnel.config import BootstrapNode
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool

NODE_PORT_RANGE = (50000, 50999)
LOCALHOST = "127.0.0.1"


@pytest.fixture(scope="session")
def port_pool() -> PortPool:
    """Overrides the shared harness pool: this suite's ports only."""
    return PortPool(*NODE_PORT_RANGE)


@pytest.fixture(scope="module")
def bootstrapd(
    port_pool: PortPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bootstrapd]:
    """A real tox-bootstrapd (DHT, onion, TCP relay) on 127.0.0.1 for the module."""
    udp_port, tcp_port = port_pool.allocate(2)
    with Bootstrapd(tmp_path_factory.mktemp("bootstrapd"), udp_port, (tcp_port,)) as bsd:
        yield bsd


def bootstrap_nodes(bsd: Bootstrapd) -> tuple[BootstrapNode, ...]:
    return (BootstrapNode(bsd.host, bsd.udp_port, bsd.public_key, tuple(bsd.tcp_ports)),)


def toxcore_valid_profile(path: Path | None = None) -> Profile:
    """A fresh profile whose key toxcore accepts (last byte < 128)."""
    import os

    while True:
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:
            if path is not None:
                profile.save(path)
            return profile


@pytest.fixture
def node_factory(
    port_pool: PortPool, bootstrapd: Bootstrapd, tmp_path: Path
) -> Callable[..., object]:
    """``async with make(name, udp=True) as node``: a running Node bootstrapped off bootstrapd."""

    @asynccontextmanager
    async def make(
        name: str, *, udp: bool = True, profile: Profile | None = None, **changes: Any
    ) -> AsyncIterator[Node]:
        if profile is None:
            profile = toxcore_valid_profile(tmp_path / f"{name}.tox")
        port = port_pool.allocate_one()
        options = NodeOptions(
            udp_enabled=udp,
            udp_host=LOCALHOST,
            ipv6=False,
            port_start=port,
            port_end=port,
            hole_punching=False,
            bootstrap=bootstrap_nodes(bootstrapd),
            name=name.encode(),
        )
        options = dataclasses.replace(options, **changes)
        node = Node(profile, options)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            finally:
                with trio.move_on_after(5):
                    await node.aclose()
                nursery.cancel_scope.cancel()

    return make
