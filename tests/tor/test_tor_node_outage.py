"""Tor mode against a Tor that is not usable, on the private Tor lab: a Tor with DisableNetwork
makes the node refuse to start with a clear error at once; waiting for Tor starts the node as
soon as the network is enabled; a running node reports Tor stopping within its stated bound and
gets its relay back when Tor returns (ports 48700-48899)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from tunnel.io.tor_node import TorNode, TorStatus
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.tor_node_harness import bootstrap_options, toxcore_profile
from tunnel.testing.torlab import TorLab, TorProcess
from tunnel.tor.config import TorConfig
from tunnel.tor.control import open_tor_controller
from tunnel.tor.errors import TorNetworkUnreachableError

pytestmark = [pytest.mark.slow, pytest.mark.toxcore]

CHECK_INTERVAL_S = 1.0
BOOTSTRAP_WAIT_S = 60.0
RELAY_TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def my_ports() -> PortPool:
    return PortPool(48700, 48899)


@pytest.fixture(scope="module")
def bootstrapd(
    my_ports: PortPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bootstrapd]:
    udp_port, tcp_port = my_ports.allocate(2)
    with Bootstrapd(tmp_path_factory.mktemp("bsd-outage"), udp_port, (tcp_port,)) as bsd:
        yield bsd


async def _wait_for_file(path: Path, timeout_s: float = 10.0) -> None:
    """Tor writes its control cookie once the control port listens (no event to await)."""
    with trio.fail_after(timeout_s):
        while not await trio.Path(path).exists():  # noqa: ASYNC110
            await trio.sleep(0.05)


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a statistics predicate (relay counts change without a node event)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.1)


def _start_tor(lab: TorLab, socks: int, control: int, *, disabled: bool) -> TorProcess:
    proc_lines = [
        f"SocksPort 127.0.0.1:{socks} ExtendedErrors",
        f"ControlPort 127.0.0.1:{control}",
        "SocksTimeout 30",
    ]
    if disabled:
        proc_lines.insert(0, "DisableNetwork 1")
    return lab.start_extra_tor("tornode-outage", proc_lines)


async def test_tor_down_at_start_then_recovery_while_running(
    tor_lab: TorLab, bootstrapd: Bootstrapd, my_ports: PortPool, tmp_path: Path
) -> None:
    socks, control = my_ports.allocate(2)
    proc = _start_tor(tor_lab, socks, control, disabled=True)
    statuses: list[TorStatus] = []
    try:
        await _wait_for_file(proc.cookie_path)
        tor = TorConfig(
            socks=f"127.0.0.1:{socks}",
            control=f"127.0.0.1:{control}",
            cookie=proc.cookie_path,
            bootstrap_wait_s=BOOTSTRAP_WAIT_S,
            check_interval_s=CHECK_INTERVAL_S,
        )
        options = bootstrap_options(bootstrapd, "outage")
        profile = toxcore_profile(tmp_path / "outage.tox")

        # 1. DisableNetwork: a clear error at once, no node started.
        refused = TorNode(profile, options, tor)
        t0 = trio.current_time()
        with pytest.raises(
            TorNetworkUnreachableError,
            match=r"^cannot reach the Tor network \(bootstrap at 0%.*DisableNetwork is set\)$",
        ):
            await refused.run()
        assert trio.current_time() - t0 < 2.0
        assert refused.node is None

        # 2. Waiting for Tor: the error is reported once, the node starts when Tor can work.
        tor_node = TorNode(profile, options, tor, on_tor_status=statuses.append)
        async with trio.open_nursery() as nursery:

            async def enable_network() -> None:
                await tor_node.wait_status(False)
                await trio.sleep(2 * CHECK_INTERVAL_S)
                async with open_tor_controller(
                    "127.0.0.1", control, cookie_path=proc.cookie_path
                ) as ctl:
                    await ctl.setconf({"DisableNetwork": "0"})

            nursery.start_soon(enable_network)
            t0 = trio.current_time()
            with trio.fail_after(BOOTSTRAP_WAIT_S):
                node = await nursery.start(partial(tor_node.run, wait_for_tor=True))
            print(f"node started {trio.current_time() - t0:.1f} s after waiting for Tor")
            # (between the two, Tor may briefly have its network on and its SOCKS port not yet)
            assert [s.usable for s in statuses] == [False] * (len(statuses) - 1) + [True]
            assert "DisableNetwork is set" in statuses[0].message
            assert node.udp_port is None
            with trio.fail_after(RELAY_TIMEOUT_S):
                await _until(lambda: node.statistics().tcp_relays_connected >= 1)

            # 3. Tor stops: reported within the stated bound; the relay drops.
            proc.stop()
            t0 = trio.current_time()
            with trio.fail_after(tor_node.detect_bound_s() + 1.0):
                down = await tor_node.wait_status(False)
            print(f"Tor outage reported after {trio.current_time() - t0:.1f} s: {down.message}")
            assert down.message == f"Tor SOCKS port 127.0.0.1:{socks} closed"
            assert tor_node.outages == 1
            with trio.fail_after(RELAY_TIMEOUT_S):
                await _until(lambda: node.statistics().tcp_relays_connected == 0)

            # 4. Tor comes back: status usable again and the relay reconnects promptly.
            proc.cookie_path.unlink(missing_ok=True)
            proc = _start_tor(tor_lab, socks, control, disabled=False)
            t0 = trio.current_time()
            with trio.fail_after(BOOTSTRAP_WAIT_S):
                await tor_node.wait_status(True)
                await _until(lambda: node.statistics().tcp_relays_connected >= 1)
            print(f"relay back {trio.current_time() - t0:.1f} s after Tor restarted")
            assert tor_node.recoveries == 1
            await node.aclose()
    finally:
        proc.stop()
