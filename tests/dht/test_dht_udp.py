"""The Trio UDP driver, the packet dispatcher and ``tunnel bootstrapd`` on loopback."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from tunnel.commands.bootstrapd import load_or_create_keys, serve
from tunnel.config import BootstrapdConfig, BootstrapNode
from tunnel.crypto import KeyPair
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.io.udp import PacketDispatcher, UdpDriver, normalise_addr, open_udp_socket
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.wire.dht import BootstrapInfo, bootstrap_info_request

PORTS = PortPool(42000, 42199)
TIMEOUT_S = 15.0


async def wait_until(predicate: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    """Poll ``predicate`` (state inside sans-IO cores has no event to await)."""
    with trio.fail_after(timeout_s):
        for _ in range(int(timeout_s / 0.02) + 1):
            if predicate():
                return
            await trio.sleep(0.02)
    raise AssertionError("condition not reached")


class _Echo:
    """A minimal DatagramCore that echoes what it gets."""

    def __init__(self) -> None:
        self.out: list[tuple[tuple[str, int], bytes]] = []

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        self.out.append((addr, b"echo:" + data))

    def datagrams_to_send(self) -> list[tuple[tuple[str, int], bytes]]:
        out, self.out = self.out, []
        return out

    def next_deadline(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def test_normalise_addr() -> None:
    assert normalise_addr(("::ffff:127.0.0.1", 5, 0, 0)) == ("127.0.0.1", 5)
    assert normalise_addr(("::1", 5, 0, 0)) == ("::1", 5)
    assert normalise_addr(("fe80::1%eth0", 5, 0, 1)) == ("fe80::1", 5)


async def test_port_range_skips_taken_ports() -> None:
    first, second = PORTS.allocate(2)
    a = await open_udp_socket("127.0.0.1", first, second, ipv6=False)
    b = await open_udp_socket("127.0.0.1", first, second, ipv6=False)
    try:
        assert (a.port, b.port) == (first, second)
    finally:
        a.close()
        b.close()


async def test_dispatcher_routes_by_first_byte_dual_stack() -> None:
    port = PORTS.allocate_one()
    bound = await open_udp_socket(None, port, port, ipv6=True)
    dispatcher = PacketDispatcher()
    echo = _Echo()
    dispatcher.register([0x42], echo)
    driver = UdpDriver(dispatcher, bound)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            for family, host in ((trio.socket.AF_INET, "127.0.0.1"), (trio.socket.AF_INET6, "::1")):
                client = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
                await client.sendto(b"\x99dropped", (host, port))
                await client.sendto(b"\x42hi", (host, port))
                data, _ = await client.recvfrom(100)
                assert data == b"echo:\x42hi"
                client.close()
            nursery.cancel_scope.cancel()
    bound.close()
    assert dispatcher.dropped_unknown_kind == 2


async def test_two_dht_nodes_over_loopback() -> None:
    ports = PORTS.allocate(2)
    cores = []
    drivers = []
    for i, port in enumerate(ports):
        rng = SeededRng(f"udp{i}")
        core = DhtCore(KeyPair.generate(rng), rng, now=trio.current_time())
        bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
        dispatcher = PacketDispatcher()
        dispatcher.register(PACKET_KINDS, core)
        cores.append(core)
        drivers.append(UdpDriver(dispatcher, bound))
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for driver in drivers:
                await nursery.start(driver.run)
            cores[1].bootstrap(cores[0].public_key, ("127.0.0.1", ports[0]), trio.current_time())
            drivers[1].kick()
            await wait_until(
                lambda: bool(
                    cores[0].close.get(cores[1].public_key)
                    and cores[1].close.get(cores[0].public_key)
                )
            )
            nursery.cancel_scope.cancel()
    for driver in drivers:
        driver.bound.close()
    assert all(core.stats.dropped == 0 for core in cores)


async def test_bootstrapd_serve_answers_bootstrap_info_and_joins(tmp_path: Path) -> None:
    p1, p2 = PORTS.allocate(2)
    k1 = load_or_create_keys(tmp_path / "a.keys")
    assert (tmp_path / "a.keys").stat().st_mode & 0o777 == 0o600
    assert load_or_create_keys(tmp_path / "a.keys") == k1
    k2 = load_or_create_keys(tmp_path / "b.keys")
    cfg1 = BootstrapdConfig(
        keys_file=tmp_path / "a.keys", port=p1, ipv6=False, motd="hello", tcp_relay_ports=()
    )
    cfg2 = BootstrapdConfig(
        keys_file=tmp_path / "b.keys",
        port=p2,
        ipv6=False,
        motd="two",
        tcp_relay_ports=(),
        bootstrap_nodes=(BootstrapNode("127.0.0.1", p1, k1.public_key),),
    )
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            _, dht1 = await nursery.start(serve, cfg1, k1)
            _, dht2 = await nursery.start(serve, cfg2, k2)
            client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await client.sendto(bootstrap_info_request(), ("127.0.0.1", p1))
            data, _ = await client.recvfrom(1000)
            info = BootstrapInfo.decode(data)
            assert info.motd == b"hello\0"  # NUL-terminated, as tox-bootstrapd sends it
            assert info.version == 1_000_002_018
            client.close()
            await wait_until(
                lambda: bool(dht1.close.get(k2.public_key) and dht2.close.get(k1.public_key))
            )
            nursery.cancel_scope.cancel()


def test_bootstrapd_command_sigterm(tmp_path: Path) -> None:
    port = PORTS.allocate_one()
    config = tmp_path / "bsd.yaml"
    config.write_text(
        f"role: bootstrapd\nkeys_file: {tmp_path}/k.keys\nport: {port}\nipv6: false\n"
        "motd: hi\nbootstrap_nodes: []\ntcp_relay_ports: []\nlan_discovery: false\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunnel", "bootstrapd", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        keys = (tmp_path / "k.keys").read_bytes()
        assert line.strip() == f"Public Key: {keys[:32].hex().upper()}"
        assert proc.stdout.readline().strip() == f"Listening on UDP port {port}"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, err
        assert "Received SIGTERM (15) signal. Exiting." in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_dual_stack_bootstrapd_serves_ipv4_and_ipv6_nodes(tmp_path: Path) -> None:
    bsd_port, v4_port, v6_port = PORTS.allocate(3)
    keys = load_or_create_keys(tmp_path / "ds.keys")
    config = BootstrapdConfig(
        keys_file=tmp_path / "ds.keys",
        port=bsd_port,
        ipv6=True,
        motd="ds",
        tcp_relay_ports=(),
        onion=False,
    )
    nodes = []
    drivers = []
    for label, host, port in (("v4", "127.0.0.1", v4_port), ("v6", "::1", v6_port)):
        rng = SeededRng(f"ds-{label}")
        core = DhtCore(KeyPair.generate(rng), rng, now=trio.current_time())
        bound = await open_udp_socket(host, port, port, ipv6=host == "::1")
        dispatcher = PacketDispatcher()
        dispatcher.register(PACKET_KINDS, core)
        nodes.append((core, host))
        drivers.append(UdpDriver(dispatcher, bound))
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            _, dht = await nursery.start(serve, config, keys)
            for driver, (core, host) in zip(drivers, nodes, strict=True):
                await nursery.start(driver.run)
                core.bootstrap(keys.public_key, (host, bsd_port), trio.current_time())
                driver.kick()
            v4, v6 = nodes[0][0], nodes[1][0]
            # One dual-stack socket answers both families (the two nodes cannot reach each
            # other: one is IPv4-only, the other bound to ::1).
            await wait_until(lambda: v6.close.get(keys.public_key) is not None)
            await wait_until(lambda: v4.close.get(keys.public_key) is not None)
            await wait_until(
                lambda: (
                    dht.close.get(v4.public_key) is not None
                    and dht.close.get(v6.public_key) is not None
                )
            )
            entry = dht.close.get(v6.public_key)
            assert entry is not None
            assert str(entry.assoc6.ip_port) == f"[::1]:{v6_port}"
            entry = dht.close.get(v4.public_key)
            assert entry is not None
            assert str(entry.assoc4.ip_port) == f"127.0.0.1:{v4_port}"
            nursery.cancel_scope.cancel()
    for driver in drivers:
        driver.bound.close()


class _Queue(_Echo):
    """A DatagramCore whose output the test queues directly."""


async def test_flush_sends_runs_with_gso_as_ordinary_datagrams() -> None:
    """The core's runs of equal-size datagrams to one address leave as one GSO send each; a
    plain socket (no GRO, like toxcore's) still receives every datagram whole and in order."""
    bound = await open_udp_socket("127.0.0.1", *PORTS.allocate(1) * 2, ipv6=False)
    plain = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    other = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    (port,) = PORTS.allocate(1)
    (other_port,) = PORTS.allocate(1)
    await plain.bind(("127.0.0.1", port))
    await other.bind(("127.0.0.1", other_port))
    to_plain = [bytes([i]) * 1400 for i in range(80)] + [b"short tail"]
    core = _Queue()
    core.out = [(("127.0.0.1", port), d) for d in to_plain[:40]]
    core.out.append((("127.0.0.1", other_port), b"elsewhere"))
    core.out += [(("127.0.0.1", port), d) for d in to_plain[40:]]
    driver = UdpDriver(core, bound)
    with bound.sock, plain, other:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            driver.flush()
            with trio.fail_after(TIMEOUT_S):
                got = [await plain.recv(2048) for _ in to_plain]
                assert await other.recv(2048) == b"elsewhere"
            nursery.cancel_scope.cancel()
    assert got == to_plain
    assert driver.sent == len(to_plain) + 1
    if driver.gso:  # the kernel took GSO: 40 | 1 | 40 + tail -> 64 + rest
        assert 2 <= driver.gso_sends <= 4
