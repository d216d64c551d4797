"""Running a Node from a command: what ``tunnel serve``, ``connect``, ``run`` and ``vpn`` share.

Node options from flags (``--bootstrap``, ports, Tor), the profile, logging, running a Node
with a driver on it until a signal, and the local status socket (``tunnel status`` reads it).

Status protocol: connect to the Unix socket, read one JSON object, the socket closes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from tunnel.config import BootstrapNode, NodeConfig, default_control_socket_path
from tunnel.config_toolkit import check_hex_key, check_host
from tunnel.errors import ConfigError
from tunnel.io.forward_common import MuxDriver
from tunnel.io.forward_node import NodeTransport
from tunnel.netcrypto.session import SessionStats
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.tor.config import TorConfig
from tunnel.tor.errors import TorError

if TYPE_CHECKING:
    from tunnel.io.tor_node import TorNode

log = logging.getLogger(__name__)

STATUS_WRITE_TIMEOUT_S = 2.0


def add_node_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that shape the Tox node (beyond what a config file says)."""
    group = parser.add_argument_group("Tox node")
    group.add_argument(
        "--profile", metavar="PATH", type=Path, help="identity file (created if missing)"
    )
    group.add_argument(
        "--bootstrap",
        metavar="HOST:PORT:KEY[:TCPPORT]",
        action="append",
        default=[],
        help="a bootstrap node (repeatable); KEY is its 64-hex DHT public key",
    )
    group.add_argument(
        "--udp-port",
        metavar="PORT[-PORT]",
        help="UDP port (range) for the node (default: 33445-33545, the first free one)",
    )
    group.add_argument("--udp-host", metavar="ADDR", help="bind the node's UDP socket to ADDR")
    group.add_argument(
        "--no-udp", action="store_true", help="TCP relays only (no UDP, no direct paths)"
    )
    group.add_argument("--no-ipv6", action="store_true", help="IPv4 only")
    add_tor_arguments(group)
    group.add_argument(
        "--status-socket",
        metavar="PATH",
        type=Path,
        help="Unix socket for `tunnel status` (default: <control socket dir>/<command>-<pid>.sock)",
    )
    group.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    group.add_argument("-q", "--quiet", action="store_true", help="errors only")


def add_tor_arguments(group: argparse._ActionsContainer) -> None:
    """``--tor [SOCKS]`` and ``--tor-control HOST:PORT|off`` (Tor mode, issue 10)."""
    group.add_argument(
        "--tor",
        metavar="HOST:PORT",
        nargs="?",
        const="",
        default=None,
        help="Tor mode: no UDP, every relay connection through Tor's SOCKS port (alone: "
        "127.0.0.1:9050 with the control port 127.0.0.1:9051; a config's tor: section "
        "also turns it on)",
    )
    group.add_argument(
        "--tor-control",
        metavar="HOST:PORT",
        help="Tor's control port for bootstrap checks and onion services ('off': none)",
    )


def tor_config(args: argparse.Namespace, config: NodeConfig | None) -> TorConfig | None:
    """Tor mode from the config file's ``tor:`` section and ``--tor``/``--tor-control``
    (None: not over Tor).

    Raises:
        ConfigError: a bad flag value, naming the flag.
    """
    base = config.tor if config is not None else None
    flag = getattr(args, "tor", None)
    control = getattr(args, "tor_control", None)
    if flag is None and control is None:
        return base
    if flag is None and base is None:
        raise ConfigError("--tor-control: needs --tor (or a tor: section in the config)")
    return TorConfig.from_flag(flag, control, base=base)


def parse_bootstrap(text: str) -> tuple[BootstrapNode, ...]:
    """``HOST:PORT:KEY[:TCPPORT]`` (IPv6 hosts in brackets).

    Raises:
        ConfigError: naming ``--bootstrap``.
    """
    host_part = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"--bootstrap {text!r}: unbalanced '['")
        host, rest = text[1:end], text[end + 1 :].lstrip(":").split(":")
    else:
        host, *rest = host_part.split(":")
    if len(rest) not in (2, 3):
        raise ConfigError(f"--bootstrap {text!r}: expected HOST:PORT:KEY[:TCPPORT]")
    try:
        host = check_host(host, "--bootstrap")
        key = check_hex_key(rest[1], "--bootstrap")
        port = int(rest[0])
        tcp = (int(rest[2]),) if len(rest) == 3 else ()
    except ValueError:
        raise ConfigError(f"--bootstrap {text!r}: bad port") from None
    for p in (port, *tcp):
        if not 1 <= p <= 65535:
            raise ConfigError(f"--bootstrap {text!r}: port {p} outside 1-65535")
    return (BootstrapNode(host, port, key, tcp),)


def _port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        start = int(low)
        end = int(high) if sep else start
    except ValueError:
        raise ConfigError(f"--udp-port {text!r}: expected PORT or PORT-PORT") from None
    if not 1 <= start <= end <= 65535:
        raise ConfigError(f"--udp-port {text!r}: expected ports 1-65535, low first")
    return start, end


def node_options(args: argparse.Namespace, config: NodeConfig | None) -> NodeOptions:
    """Node options: the config file's (if any), then the flags on top."""
    options = NodeOptions.from_config(config) if config is not None else NodeOptions()
    extra: tuple[BootstrapNode, ...] = ()
    for text in args.bootstrap:
        extra += parse_bootstrap(text)
    # (the node also keeps TCP relay connections to every bootstrap node's tcp_ports)
    options = replace(options, bootstrap=options.bootstrap + extra)
    if args.udp_port:
        start, end = _port_range(args.udp_port)
        options = replace(options, port_start=start, port_end=end)
    if args.udp_host:
        options = replace(options, udp_host=check_host(args.udp_host, "--udp-host"))
    if args.no_udp:
        options = replace(options, udp_enabled=False)
    if args.no_ipv6:
        options = replace(options, ipv6=False)
    return options


def setup_logging(args: argparse.Namespace, default: int = logging.INFO) -> None:
    level = default
    if args.quiet:
        level = logging.ERROR
    elif args.verbose:
        level = logging.DEBUG if args.verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if level > logging.DEBUG:
        # the protocol layers are chatty at INFO; keep the forwarding story readable
        for name in ("tunnel.node", "tunnel.io", "tunnel.onion", "tunnel.dht", "tunnel.friends"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
        logging.getLogger("tunnel.io.forward_client").setLevel(level)
        logging.getLogger("tunnel.io.forward_server").setLevel(level)
        logging.getLogger("tunnel.io.forward_common").setLevel(level)


def load_or_create_profile(path: Path | None) -> Profile:
    """The identity at ``path`` (created if missing), or a throw-away one for ``None``.

    (X25519 public keys always have the top bit of their last byte clear, so every generated
    key passes c-toxcore's ``public_key_valid``.)
    """
    if path is not None and path.exists():
        return Profile.load(path)
    profile = Profile.generate(os.urandom)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        profile.save(path)
    return profile


StatusFn = Callable[[], dict[str, object]]


async def serve_status(path: Path, status: StatusFn) -> None:
    """Answer every connection on the Unix socket ``path`` with ``status()`` as JSON."""
    _prepare_socket_path(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(STATUS_WRITE_TIMEOUT_S):
                await stream.send_all(json.dumps(status(), sort_keys=True).encode() + b"\n")

    try:
        await trio.serve_listeners(answer, [listener])
    finally:
        _remove(path)


def _prepare_socket_path(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


async def read_status(path: Path) -> dict[str, object]:
    """Read one status object from a running command's status socket.

    Raises:
        ConfigError: nobody listens there, or the answer is not JSON.
    """
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: no running tunnel serve/connect ({exc.strerror})") from None
    data = bytearray()
    async with stream:
        with trio.move_on_after(STATUS_WRITE_TIMEOUT_S):
            while chunk := await stream.receive_some(65536):
                data += chunk
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError(f"{path}: not a status answer") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a status answer")
    return value


def status_dir() -> Path:
    """Where ``tunnel serve``/``connect`` put their status sockets by default (next to the
    node's control socket): ``tunnel status`` looks there."""
    return default_control_socket_path().parent


def default_status_socket(role: str) -> Path:
    """``<status dir>/<role>-<pid>.sock``: one per running command."""
    return status_dir() / f"{role}-{os.getpid()}.sock"


def node_status(role: str, node: Node) -> dict[str, object]:
    """The node part of every command's status object: identity, connectivity, friends."""
    stats = node.statistics()
    return {
        "role": role,
        "pid": os.getpid(),
        "tox_id": str(node.tox_id),
        "udp_port": stats.udp_port,
        "dht_connected": stats.dht_connected,
        "onion_connected": stats.onion_connected,
        "tcp_relays_connected": stats.tcp_relays_connected,
        "nat": node.direct_paths.nat.name.lower(),  # our NAT's mapping as DHT nodes see it
        "friends": [
            {
                "public_key": f.public_key.hex().upper(),
                "online": f.online,
                "path": f.path,
                # issue 11: "direct udp ip:port[ (port prediction)]" or "relay (why)"; None:
                # the friend does not speak our extension (toxcore's own hole punching only)
                "direct_path": node.direct_path_status(f.public_key),
                "rtt_ms": None if f.rtt_s is None else round(f.rtt_s * 1000, 1),
                "sent_bytes": f.sent_bytes,
                "received_bytes": f.received_bytes,
                # issue 8: the largest lossless packet sent now (1373; up to 16384 to a
                # tunnel node over a direct path a probe proved)
                "packet_limit": node.lossless_limit(f.public_key),
                "session": _session_status(node.netcrypto.statistics(f.public_key)),
            }
            for f in stats.friends
        ],
    }


def driver_status(role: str, node: Node, driver: MuxDriver) -> dict[str, object]:
    """The status object: node, friends, tunnels, counters."""
    return {
        **node_status(role, node),
        "tunnels": driver.mux.tunnel_count(),
        "forward": driver.mux.statistics(),
        "driver": dict(driver.stats),
    }


async def run_with_node(
    profile: Profile,
    options: NodeOptions,
    body: Callable[[Node, NodeTransport], Awaitable[int]],
    tor: TorConfig | None = None,
) -> int:
    """Start a Node (in Tor mode with ``tor``), run ``body`` with it, stop the node (saving
    the profile).

    Raises:
        ConfigError: Tor is not usable (one line saying why, within
            ``TorNode.startup_bound_s()``).
    """
    result = 1
    tor_node = await check_tor_node(profile, options, tor) if tor is not None else None
    async with trio.open_nursery() as nursery:
        if tor_node is not None:
            node = await nursery.start(tor_node.run)
        else:
            node = Node(profile, options)
            await nursery.start(node.run)
        try:
            with trio.CancelScope() as scope:
                nursery.start_soon(_stop_on_signal, scope)
                result = await body(node, NodeTransport(node))
            if scope.cancelled_caught:
                result = 0
        finally:
            with trio.move_on_after(3) as scope:
                scope.shield = True
                await node.aclose()
            nursery.cancel_scope.cancel()
    return result


async def check_tor_node(profile: Profile, options: NodeOptions, tor: TorConfig) -> TorNode:
    """A :class:`TorNode` whose Tor passed the start-up check.

    Raises:
        ConfigError: Tor is not usable: ``Tor: <why> (checked within N s)``.
    """
    from tunnel.io.tor_node import TorNode  # Tor mode only: keeps other commands light

    tor_node = TorNode(profile, options, tor)
    try:
        await tor_node.check()
    except TorError as exc:
        raise ConfigError(f"Tor: {exc}") from None
    return tor_node


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGTERM/SIGINT: stop the command cleanly (the node says goodbye, exit status 0)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _signum in signals:
            scope.cancel()
            return


def _session_status(stats: SessionStats | None) -> dict[str, object] | None:
    """The friend's net_crypto session as ``tunnel status --json`` shows it (rates in packets
    per second: what congestion control allows and what the peer acknowledged lately)."""
    if stats is None:
        return None
    return {
        "state": stats.state,
        "rate_pkt_s": round(stats.rate_pkt_s, 1),
        "delivery_rate_pkt_s": round(stats.delivery_rate_pkt_s, 1),
        "srtt_ms": round(stats.srtt_s * 1000, 2),
        "send_queue": stats.send_queue,
        "unacked": stats.unacked,
        "sent_packets": stats.sent_packets,
        "resent_packets": stats.resent_packets,
        "received_packets": stats.received_packets,
        "loss_events": stats.loss_events,
        "dropped": stats.dropped,
    }
