"""``tunnel connect ID ...``: reach a ``tunnel serve`` (or tuntox server) over Tox.

tuntox's client mode, compatible with its flags, with more at once::

    -L [bind:]lport:host:rport   local TCP port forward (repeatable; bind 127.0.0.1 by default)
    -W host:rport                stdin/stdout (ssh -o ProxyCommand='tunnel connect ID -W %h:%p')
    -D [bind:]port               local SOCKS5 server (CONNECT; names resolved by the server)
    -U [bind:]lport:host:rport   UDP port forward (repeatable; our servers only)
    -p                           ping mode: print the round-trip time every second

``-s`` is the shared secret (default ``$TUNTOX_SHARED_SECRET``). Without ``--profile`` the
client identity is throw-away, as tuntox's. Listeners stay up while the server is away; the
node reconnects by itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from pathlib import Path

import trio

from tunnel.config import NodeConfig, load_node_config
from tunnel.errors import ConfigError
from tunnel.forward.client_mux import OPEN_TIMEOUT_S, WAIT_ONLINE_S, ClientMux
from tunnel.forward.specs import (
    LocalForward,
    PipeForward,
    SocksListen,
    parse_local_forward,
    parse_pipe_forward,
    parse_socks_listen,
)
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_node import NodeTransport
from tunnel.io.node_runner import (
    add_node_arguments,
    default_status_socket,
    driver_status,
    load_or_create_profile,
    node_options,
    run_with_node,
    serve_status,
    setup_logging,
    tor_config,
)
from tunnel.node import Node
from tunnel.toxid import ToxId, ToxIdError

HELP = "forward local ports / stdin / SOCKS5 / UDP to a tunnel serve (tuntox-compatible client)"
SECRET_ENV = "TUNTOX_SHARED_SECRET"

log = logging.getLogger("tunnel.connect")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tox_id", metavar="ID", help="the server's Tox ID (76 hex characters)")
    parser.add_argument(
        "-L",
        dest="local",
        metavar="[BIND:]LPORT:HOST:RPORT",
        action="append",
        default=[],
        help="local TCP port forward (repeatable; BIND defaults to 127.0.0.1, '*' = all)",
    )
    parser.add_argument("-W", dest="pipe", metavar="HOST:RPORT", help="stdin/stdout forward")
    parser.add_argument(
        "-D",
        dest="socks",
        metavar="[BIND:]PORT",
        action="append",
        default=[],
        help="local SOCKS5 server",
    )
    parser.add_argument(
        "-U",
        dest="udp",
        metavar="[BIND:]LPORT:HOST:RPORT",
        action="append",
        default=[],
        help="local UDP port forward (repeatable)",
    )
    parser.add_argument("-p", dest="ping", action="store_true", help="ping mode")
    parser.add_argument(
        "-s", "--secret", help=f"shared secret the server expects (default: ${SECRET_ENV})"
    )
    parser.add_argument(
        "-c", "--config", metavar="FILE", type=Path, help="node config (bootstrap nodes, relays)"
    )
    parser.add_argument(
        "--open-timeout",
        metavar="SECONDS",
        type=float,
        default=OPEN_TIMEOUT_S,
        help="give up on a tunnel the server does not answer within SECONDS of asking "
        f"(default {OPEN_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--wait-online",
        metavar="SECONDS",
        type=float,
        default=WAIT_ONLINE_S,
        help="how long a connection waits for the server to be reachable "
        f"(default {WAIT_ONLINE_S:.0f})",
    )
    add_node_arguments(parser)


class Plan:
    """The parsed forwards of one ``tunnel connect``."""

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            self.server = ToxId.parse(args.tox_id)
        except ToxIdError as exc:
            raise ConfigError(f"ID {args.tox_id!r}: {exc}") from None
        self.local: list[LocalForward] = [parse_local_forward(s) for s in args.local]
        self.udp: list[LocalForward] = [parse_local_forward(s, udp=True) for s in args.udp]
        self.socks: list[SocksListen] = [parse_socks_listen(s) for s in args.socks]
        self.pipe: PipeForward | None = parse_pipe_forward(args.pipe) if args.pipe else None
        self.ping: bool = args.ping
        if not (self.local or self.udp or self.socks or self.pipe or self.ping):
            raise ConfigError("nothing to do: give -L, -W, -D, -U or -p")
        if self.pipe is not None and (self.local or self.udp or self.socks or self.ping):
            raise ConfigError("-W uses stdin/stdout: it cannot be combined with -L/-D/-U/-p")
        secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
        self.secret = secret.encode() if secret else None
        if args.open_timeout <= 0:
            raise ConfigError("--open-timeout: must be positive")
        self.open_timeout_s: float = args.open_timeout
        if args.wait_online <= 0:
            raise ConfigError("--wait-online: must be positive")
        self.wait_online_s: float = args.wait_online


def run(args: argparse.Namespace) -> int:
    plan = Plan(args)
    config: NodeConfig | None = load_node_config(args.config) if args.config else None
    # -W: stdout is the data stream; log errors only unless asked
    setup_logging(args, logging.ERROR if plan.pipe is not None else logging.INFO)
    profile_path = args.profile if args.profile is not None else None
    if profile_path is None and config is not None and args.config is not None:
        profile_path = config.profile
    profile = load_or_create_profile(profile_path)
    options = node_options(args, config)
    return trio.run(
        partial(run_with_node, tor=tor_config(args, config)),
        profile,
        options,
        partial(_connect, plan, args.status_socket or default_status_socket("connect")),
    )


async def _connect(
    plan: Plan, status_path: Path | None, node: Node, transport: NodeTransport
) -> int:
    mux = ClientMux(
        os.urandom, open_timeout_s=plan.open_timeout_s, offline_wait_s=plan.wait_online_s
    )
    client = ForwardClient(mux, transport, plan.server.to_bytes(), secret=plan.secret)
    talk = plan.pipe is None
    if talk:
        print(f"client {node.tox_id} -> server {plan.server}", file=sys.stderr, flush=True)
    result = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        if status_path is not None:
            nursery.start_soon(
                serve_status, status_path, partial(driver_status, "connect", node, client)
            )
        for forward in plan.local:
            port = await nursery.start(client.serve_tcp, forward)
            print(
                f"-L {forward.bind_host}:{port} -> {forward.host}:{forward.port}", file=sys.stderr
            )
        for forward in plan.udp:
            port = await nursery.start(client.serve_udp, forward)
            print(
                f"-U {forward.bind_host}:{port} -> {forward.host}:{forward.port}", file=sys.stderr
            )
        for listen in plan.socks:
            port = await nursery.start(client.serve_socks, listen)
            print(f"-D SOCKS5 on {listen.bind_host}:{port}", file=sys.stderr)
        if plan.ping:
            client.on_pong = _print_pong
            nursery.start_soon(client.ping_forever)
        if talk:
            nursery.start_soon(_announce_online, client)
        if plan.pipe is not None:
            result = await client.pipe_stdio(plan.pipe)
            nursery.cancel_scope.cancel()
    return result


def _target(forward: LocalForward) -> str:
    return f"{forward.host}:{forward.port}"


def _print_pong(rtt_s: float | None) -> None:
    if rtt_s is None:
        print("no PONG within the timeout", flush=True)
    else:
        print(f"GOT PONG! Time = {rtt_s:.3f}s", flush=True)


async def _announce_online(client: ForwardClient) -> None:
    """Tell the user when the server is reachable (and when it is lost and back)."""
    while True:
        await client.wait_online(client.server)
        print("server online", file=sys.stderr, flush=True)
        while client.server in client.online:
            await client.online_changed.wait()
        print("server offline; waiting for it to come back", file=sys.stderr, flush=True)
