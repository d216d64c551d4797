"""Fixtures for the Tor tests: one private Tor network per session, and this area's ports.

Port range 48000-48999: the lab owns 48000-48099 (see :mod:`tunnel.testing.torlab`), tests hand
out the rest from :data:`TOR_TEST_PORTS`. Starting the lab costs 15-35 s, so it is
session-scoped and every test using it is marked ``slow``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from functools import partial

import pytest
import trio

from tunnel.testing.ports import PortPool
from tunnel.testing.torlab import TorLab, tor_available

TOR_LAB_PORT_BASE = 48000
TOR_TEST_PORTS = (48100, 48999)

needs_tor = pytest.mark.skipif(
    not tor_available(), reason="tor/tor-gencert not installed (scripts/install.sh --dev)"
)


@pytest.fixture(scope="session")
def tor_ports() -> PortPool:
    """Free loopback ports from the Tor tests' range (outside the lab's block)."""
    return PortPool(*TOR_TEST_PORTS)


@pytest.fixture(scope="session")
def tor_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TorLab]:
    """A ready private Tor network (1 authority, 3 exits, 2 clients) on 127.0.0.1:48000+.

    Stopped at the end of the session; its work directory (logs) is kept when a test failed.
    """
    if not tor_available():
        pytest.skip("tor/tor-gencert not installed (scripts/install.sh --dev)")
    workdir = tmp_path_factory.mktemp("torlab")
    lab = TorLab(workdir, TOR_LAB_PORT_BASE)
    with lab:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"tor lab: keys {lab.setup_s:.1f} s, ready {lab.ready_s:.1f} s after start"
            )
        yield lab
    if request.session.testsfailed == 0:
        shutil.rmtree(workdir, ignore_errors=True)


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        try:
            async for data in stream:
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass


@pytest.fixture
async def echo_port(tor_ports: PortPool, nursery: trio.Nursery) -> int:
    """A Trio TCP echo server on 127.0.0.1 (a port from the Tor tests' range)."""
    (port,) = tor_ports.allocate(1)
    await nursery.start(partial(trio.serve_tcp, _echo, port, host="127.0.0.1"))
    return port
