"""Tor mode settings: the ``tor:`` config section, ``--tor``, and what Tor mode does to the
node's options; plus the fast startup errors of :class:`TorNode` (no Tor needed)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from tunnel.errors import ConfigError
from tunnel.io.tor_node import TorNode, tor_node_options
from tunnel.node_types import NodeOptions
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.testing.tor_node_harness import toxcore_profile
from tunnel.tor.config import TorConfig
from tunnel.tor.errors import TorNotSocksError, TorSocksClosedError

MY_PORTS = (48900, 48999)


@pytest.fixture(scope="module")
def my_ports() -> PortPool:
    return PortPool(*MY_PORTS)


def test_parse_full_section(tmp_path: Path) -> None:
    config = TorConfig.parse(
        {
            "socks": "127.0.0.1:9150",
            "control": "127.0.0.1:9151",
            "cookie": "tor/cookie",
            "bootstrap_wait_s": 10,
            "connect_timeout_s": 20,
            "check_interval_s": 3,
            "isolate": False,
        },
        base_dir=tmp_path,
    )
    assert config == TorConfig(
        "127.0.0.1:9150", "127.0.0.1:9151", None, tmp_path / "tor/cookie", 10.0, 20.0, 3.0, False
    )
    endpoints = config.endpoints()
    assert (endpoints.socks_port, endpoints.control_port, endpoints.has_control) == (
        9150,
        9151,
        True,
    )


def test_parse_minimal_and_flag() -> None:
    assert TorConfig.parse({"socks": "127.0.0.1:9050"}) == TorConfig()
    assert TorConfig.from_flag(None) == TorConfig(control="127.0.0.1:9051")
    assert TorConfig.from_flag("127.0.0.1:9150").socks == "127.0.0.1:9150"
    with pytest.raises(ConfigError, match=r"^--tor: "):
        TorConfig.from_flag("nonsense")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"^tor\.socks: required key is missing$"),
        ({"socks": "localhost"}, r"^tor\.socks: 'localhost' is not host:port$"),
        ({"socks": "127.0.0.1:1", "control": "x:0"}, r"^tor\.control: "),
        ({"socks": "127.0.0.1:1", "bootstrap_wait_s": -1}, r"^tor\.bootstrap_wait_s: "),
        ({"socks": "127.0.0.1:1", "connect_timeout_s": 0}, r"^tor\.connect_timeout_s: "),
        ({"socks": "127.0.0.1:1", "isolate": "yes"}, r"^tor\.isolate: "),
        ({"socks": "127.0.0.1:1", "sock": 1}, r"^tor\.sock: unknown key$"),
        ({"socks": "127.0.0.1:1", "password": "p", "cookie": "c"}, r"password or cookie"),
        ("127.0.0.1:9050", r"^tor: expected a mapping"),
    ],
)
def test_parse_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TorConfig.parse(data)


def test_tor_mode_options_turn_udp_off_and_use_the_socks_port() -> None:
    base = NodeOptions(lan_discovery=True)
    options = tor_node_options(base, TorConfig(socks="127.0.0.1:9150"), rng=SeededRng(1))
    assert not options.use_udp
    assert (options.udp_enabled, options.lan_discovery, options.hole_punching) == (
        False,
        False,
        False,
    )
    assert options.proxy is not None
    assert (options.proxy.kind, options.proxy.host, options.proxy.port) == (
        "socks5",
        "127.0.0.1",
        9150,
    )
    assert options.proxy.username is not None
    assert options.proxy.username.startswith("tunnel-")  # own circuits (IsolateSOCKSAuth)
    other = tor_node_options(base, TorConfig(socks="127.0.0.1:9150"), rng=SeededRng(2))
    assert other.proxy is not None
    assert other.proxy.username != options.proxy.username
    plain = tor_node_options(base, TorConfig(isolate=False))
    assert plain.proxy is not None
    assert plain.proxy.username is None


async def test_start_with_socks_port_closed_fails_at_once(
    my_ports: PortPool, tmp_path: Path
) -> None:
    port = my_ports.allocate_one()
    tor_node = TorNode(
        toxcore_profile(tmp_path / "a.tox"), NodeOptions(), TorConfig(socks=f"127.0.0.1:{port}")
    )
    t0 = trio.current_time()
    with pytest.raises(TorSocksClosedError, match=f"^Tor SOCKS port 127.0.0.1:{port} closed$"):
        await tor_node.run()
    assert trio.current_time() - t0 < 1.0
    assert tor_node.node is None  # nothing started
    assert tor_node.status is not None
    assert not tor_node.status.usable
    assert tor_node.startup_bound_s() == pytest.approx(3.0 + 30.0)


async def test_start_against_something_else_than_tor(
    my_ports: PortPool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = my_ports.allocate_one()

    async def http(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(100)
            await stream.send_all(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    await nursery.start(partial(trio.serve_tcp, http, port, host="127.0.0.1"))
    tor_node = TorNode(
        toxcore_profile(tmp_path / "a.tox"), NodeOptions(), TorConfig(socks=f"127.0.0.1:{port}")
    )
    with trio.fail_after(5), pytest.raises(TorNotSocksError, match="is not a Tor SOCKS5 port"):
        await tor_node.run()
    assert tor_node.node is None


async def test_wait_for_tor_reports_once_and_starts_when_tor_appears(
    my_ports: PortPool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    port = my_ports.allocate_one()
    statuses: list[str] = []
    tor_node = TorNode(
        toxcore_profile(tmp_path / "a.tox"),
        NodeOptions(),
        TorConfig(socks=f"127.0.0.1:{port}", check_interval_s=0.05),
        on_tor_status=lambda s: statuses.append(s.message),
    )

    async def fake_tor(stream: trio.SocketStream) -> None:  # answers the SOCKS5 greeting only
        async with stream:
            await stream.receive_some(3)
            await stream.send_all(b"\x05\x00")

    async def tor_comes_back() -> None:
        await tor_node.wait_status(False)
        await trio.sleep(0.3)  # several failed checks meanwhile
        await nursery.start(partial(trio.serve_tcp, fake_tor, port, host="127.0.0.1"))

    nursery.start_soon(tor_comes_back)
    with trio.fail_after(10):
        node = await nursery.start(partial(tor_node.run, wait_for_tor=True))
    assert node is tor_node.node
    assert node.udp_port is None
    assert statuses == [f"Tor SOCKS port 127.0.0.1:{port} closed", "Tor usable"]
    await node.aclose()


def test_parse_onion_service(tmp_path: Path) -> None:
    config = TorConfig.parse(
        {
            "socks": "127.0.0.1:9050",
            "control": "127.0.0.1:9051",
            "onion_service": True,
            "onion_key": "keys/onion.key",
            "onion_port": 8443,
        },
        base_dir=tmp_path,
    )
    assert (config.onion_service, config.onion_key, config.onion_port) == (
        True,
        tmp_path / "keys/onion.key",
        8443,
    )
    assert TorConfig.parse({"socks": "127.0.0.1:9050"}).onion_port == 443
    with pytest.raises(ConfigError, match=r"^tor\.onion_service: needs tor\.control"):
        TorConfig.parse({"socks": "127.0.0.1:9050", "onion_service": True})
    with pytest.raises(ConfigError, match=r"^tor\.onion_port: "):
        TorConfig.parse({"socks": "127.0.0.1:9050", "onion_port": 0})
