"""Shared pytest configuration: Hypothesis profiles and common fixtures."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("fuzz", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# --------------------------------------------------------------------------------------------
# Real c-toxcore harness (tunnel.testing.{ports,bootstrapd,toxcore}). Nothing here loads
# libtoxcore or starts a process unless a test asks for these fixtures; mark such tests
# ``@pytest.mark.toxcore``.

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tunnel.testing.bootstrapd import Bootstrapd  # noqa: E402
from tunnel.testing.ports import PortPool  # noqa: E402
from tunnel.testing.toxcore_factory import ToxPeerFactory  # noqa: E402

TOXCORE_PORT_RANGE = (41000, 41999)
"""Ports the toxcore harness fixtures hand out (never toxcore's 33445-33545)."""


@pytest.fixture(scope="session")
def port_pool() -> PortPool:
    """Blocks of free loopback ports from the toxcore harness range."""
    return PortPool(*TOXCORE_PORT_RANGE)


@pytest.fixture(scope="module")
def bootstrapd(
    port_pool: PortPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bootstrapd]:
    """One real tox-bootstrapd (DHT node + TCP relay on 127.0.0.1) shared by a module."""
    udp_port, tcp_port = port_pool.allocate(2)
    with Bootstrapd(tmp_path_factory.mktemp("bootstrapd"), udp_port, (tcp_port,)) as bsd:
        yield bsd


@pytest.fixture
def tox_peer_factory(port_pool: PortPool) -> Iterator[ToxPeerFactory]:
    """``make(name, bootstrap=bootstrapd, udp=..., ...) -> ToxPeer``; all killed at teardown."""
    factory = ToxPeerFactory(port_pool)
    try:
        yield factory
    finally:
        factory.kill_all()
