"""Fixtures for the TCP relay tests: this area's own port range (43000-43999)."""

from __future__ import annotations

import pytest

from tunnel.testing.ports import PortPool

TCP_RELAY_TEST_PORTS = (43000, 43999)


@pytest.fixture(scope="session")
def relay_ports() -> PortPool:
    """Free loopback ports from the TCP relay tests' range."""
    return PortPool(*TCP_RELAY_TEST_PORTS)
