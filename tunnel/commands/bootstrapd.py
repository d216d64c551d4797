"""``tunnel bootstrapd -c FILE``: a Tox DHT bootstrap node, like c-toxcore's tox-bootstrapd.

It answers DHT pings and nodes requests, keeps a close list, replies to bootstrap info (0xf0)
with the MOTD and joins the network through its own ``bootstrap_nodes``. The keys file is
tox-bootstrapd's format (64 bytes: public key then secret key), created if absent.

Like tox-bootstrapd it also plays the onion roles for clients (``onion: true``: relay of the
three request/response layers and announce store, tox-protocol.md 5) and runs a TCP relay on
``tcp_relay_ports`` with the same key pair (tox-protocol.md 7), which carries onion requests
from TCP-only clients too (node A over TCP), so a toxcore client with UDP disabled can use us
as its only bootstrap node and relay.

Plug-in design: one UDP socket, one :class:`tunnel.io.udp.PacketDispatcher`; the DHT core
registers its packet kinds, and every factory in :data:`CORE_FACTORIES` may add another core
for its own kinds. Factories see a :class:`BootstrapdContext` (config, key pair, DHT core,
rng). ``TASK_FACTORIES`` are started as extra Trio tasks. The built-in onion roles and TCP
relay fill in whatever the plug-ins left: a plug-in that registers the onion relay's packet
kinds replaces the built-in onion roles, and any ``TASK_FACTORIES`` replace the built-in TCP
relay.

SIGTERM and SIGINT stop the daemon cleanly (exit status 0).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import trio

from tunnel.config import BootstrapdConfig, load_bootstrapd_config
from tunnel.core import DatagramCore
from tunnel.crypto import KeyPair, Rng
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.errors import ConfigError
from tunnel.io.tcp_relay import TcpOnionBridge, serve_tcp_relay
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.onion.announce_store import ANNOUNCE_STORE_PACKET_KINDS
from tunnel.onion.relay import RELAY_PACKET_KINDS
from tunnel.onion.stack import OnionStack, relay_and_store

HELP = "run a Tox DHT bootstrap node (like tox-bootstrapd)"
KEYS_FILE_SIZE_BYTES = 64
CONNECTED_POLL_INTERVAL_S = 1.0

log = logging.getLogger("tunnel.bootstrapd")


@dataclass(frozen=True, slots=True)
class BootstrapdContext:
    """What a core or task factory gets to build its part of the daemon."""

    config: BootstrapdConfig
    keypair: KeyPair
    dht: DhtCore
    rng: Rng
    udp_port: int


CoreFactory = Callable[[BootstrapdContext], tuple[Iterable[int], DatagramCore] | None]
TaskFactory = Callable[[BootstrapdContext], Callable[[], Awaitable[None]] | None]
CORE_FACTORIES: list[CoreFactory] = []
"""Extra UDP cores (onion relay, announce store ...): return ``(kinds, core)`` or None."""
TASK_FACTORIES: list[TaskFactory] = []
"""Extra long-running tasks (TCP relay server ...): return an async callable or None."""


def load_or_create_keys(path: Path, rng: Rng = os.urandom) -> KeyPair:
    """Read a 64-byte keys file, or create one (mode 0600) with a fresh key pair.

    Raises:
        ConfigError: the file exists but is not 64 bytes or its halves do not match.
    """
    if path.exists():
        data = path.read_bytes()
        if len(data) != KEYS_FILE_SIZE_BYTES:
            raise ConfigError(f"keys_file {path}: expected 64 bytes, got {len(data)}")
        keypair = KeyPair.from_secret_key(data[32:])
        if keypair.public_key != data[:32]:
            raise ConfigError(f"keys_file {path}: public key does not match the secret key")
        return keypair
    keypair = KeyPair.generate(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keypair.public_key + keypair.secret_key)
    return keypair


def build_dht(config: BootstrapdConfig, keypair: KeyPair, rng: Rng, now: float) -> DhtCore:
    """The bootstrap node's DHT core (MOTD in bootstrap info replies)."""
    return DhtCore(
        keypair,
        rng,
        lan_discovery=config.lan_discovery,
        lan_discovery_ipv6=config.ipv6,
        # tox-bootstrapd sends the MOTD with its terminating NUL byte (measured).
        bootstrap_info=config.motd.encode()[:255] + b"\0",
        now=now,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c FILE``."""
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config")


def run(args: argparse.Namespace) -> int:
    """Load the config and keys, then serve until SIGTERM/SIGINT."""
    config = load_bootstrapd_config(args.config)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    keypair = load_or_create_keys(config.keys_file)
    return trio.run(serve, config, keypair)


async def serve(
    config: BootstrapdConfig,
    keypair: KeyPair,
    *,
    rng: Rng = os.urandom,
    host: str | None = None,
    banner: bool = True,
    task_status: trio.TaskStatus[tuple[int, DhtCore]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run the daemon; ``task_status.started((udp_port, dht))`` once it is listening."""
    try:
        bound = await open_udp_socket(host, config.port, config.port, ipv6=config.ipv6)
    except OSError as exc:
        raise ConfigError(f"port: cannot bind UDP port {config.port}: {exc}") from exc
    now = trio.current_time()
    dht = build_dht(config, keypair, rng, now)
    dispatcher = PacketDispatcher()
    dispatcher.register(PACKET_KINDS, dht)
    context = BootstrapdContext(config, keypair, dht, rng, bound.port)
    for factory in CORE_FACTORIES:
        made = factory(context)
        if made is not None:
            dispatcher.register(*made)
    onion_bridge: TcpOnionBridge | None = None
    onion: OnionStack | None = None
    if config.onion and not any(dispatcher.handles(kind) for kind in RELAY_PACKET_KINDS):
        onion = relay_and_store(keypair, rng, dht, now)
        assert onion.relay is not None
        assert onion.store is not None
        onion_bridge = TcpOnionBridge(onion.relay)
        dispatcher.register(RELAY_PACKET_KINDS, onion_bridge)
        dispatcher.register(ANNOUNCE_STORE_PACKET_KINDS, onion.store)
    builtin_tcp_relay = bool(config.tcp_relay_ports) and not TASK_FACTORIES
    for node in config.bootstrap_nodes:
        try:
            addresses = await trio.socket.getaddrinfo(
                node.host, node.port, type=trio.socket.SOCK_DGRAM
            )
        except OSError as exc:
            log.warning("bootstrap node %s: %s", node.host, exc)
            continue
        for family, *_, sockaddr in addresses:
            if family == trio.socket.AF_INET6 and not config.ipv6:
                continue
            dht.bootstrap(node.public_key, (str(sockaddr[0]), int(sockaddr[1])), now)
    driver = UdpDriver(dispatcher, bound)
    signal_name = ""
    try:
        # Install the signal handlers before announcing readiness: a SIGTERM right after the
        # "Public Key" line must still mean a clean exit.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            if banner:
                print(f"Public Key: {keypair.public_key.hex().upper()}", flush=True)
                print(f"Listening on UDP port {bound.port}", flush=True)
                if not config.bootstrap_nodes:
                    print("No bootstrap nodes found. Skipping bootstrapping.", flush=True)
            async with trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                if builtin_tcp_relay:
                    try:
                        relay = await nursery.start(
                            functools.partial(
                                serve_tcp_relay,
                                keypair,
                                config.tcp_relay_ports,
                                host=host,
                                rng=rng,
                                on_onion_request=(
                                    onion_bridge.on_onion_request if onion_bridge else None
                                ),
                            )
                        )
                    except OSError as exc:
                        raise ConfigError(
                            f"tcp_relay_ports: cannot listen on {list(config.tcp_relay_ports)}: "
                            f"{exc}"
                        ) from exc
                    if onion_bridge is not None:
                        onion_bridge.server = relay
                        onion_bridge.kick = driver.kick
                    if banner:
                        ports = ", ".join(str(p) for p in relay.ports)
                        print(f"TCP relay listening on port(s) {ports}", flush=True)
                if banner:
                    nursery.start_soon(_report_connected, dht)
                for task_factory in TASK_FACTORIES:
                    task = task_factory(context)
                    if task is not None:
                        nursery.start_soon(task)
                task_status.started((bound.port, dht))
                async for signum in signals:
                    signal_name = f"{signal.Signals(signum).name} ({signum})"
                    break
                nursery.cancel_scope.cancel()
    finally:
        bound.close()
    if banner:
        print(f"Received {signal_name} signal. Exiting.", flush=True)
    stats = dht.statistics()
    log.info(
        "received %d, sent %d, dropped %d packets",
        stats.packets_received,
        stats.packets_sent,
        stats.dropped,
    )
    return 0


async def _report_connected(dht: DhtCore) -> None:
    connected = False
    while True:
        await trio.sleep(CONNECTED_POLL_INTERVAL_S)
        now_connected = dht.is_connected(trio.current_time())
        if now_connected and not connected:
            print("Connected to another bootstrap node successfully.", flush=True)
        connected = now_connected
