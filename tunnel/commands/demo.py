"""``tunnel demo``: a self-contained local Tox network, no internet needed.

Stage 1 (DHT): in a temporary directory, create an identity (a profile with a Tox ID), start a
bootstrap node on 127.0.0.1 (the same code as ``tunnel bootstrapd``, here with its onion relay
and announce store) and a second node that joins it through the DHT. Bounded to about 20
seconds.

Stage 2 (port forwarding, :mod:`tunnel.io.forward_demo`): a server node and a client node
join through the same bootstrap node, the client befriends the server (shared secret, found
through the onion) and one TCP connection is forwarded from the client's local port to a
service next to the server. Bounded to ``--forward-timeout`` seconds. Each step is printed;
exit 0 when both stages worked.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from pathlib import Path

import trio

from tunnel.config import BootstrapdConfig, BootstrapNode
from tunnel.crypto import KeyPair
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.profile import Profile

HELP = "run a self-contained local demo network (no internet needed)"
DEMO_TIMEOUT_S = 20.0
FORWARD_TIMEOUT_S = 30.0
LOCALHOST = "127.0.0.1"
POLL_INTERVAL_S = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--port`` for the bootstrap node (0: any free port) and ``--timeout``."""
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="UDP port of the local bootstrap node; the second node uses PORT+1 (default: any)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEMO_TIMEOUT_S, help="give up after this many seconds"
    )
    parser.add_argument(
        "--forward-timeout",
        type=float,
        default=FORWARD_TIMEOUT_S,
        help="give up on the forwarding stage after this many seconds",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="tunnel-demo-") as workdir:
        return trio.run(
            _demo,
            Path(workdir),
            int(args.port),
            float(args.timeout),
            float(getattr(args, "forward_timeout", FORWARD_TIMEOUT_S)),
        )


async def _demo(
    workdir: Path, port: int, timeout_s: float, forward_timeout_s: float = FORWARD_TIMEOUT_S
) -> int:
    # Imported here so the demo's bootstrap node is exactly the bootstrapd command's code.
    from tunnel.commands.bootstrapd import CORE_FACTORIES, load_or_create_keys, serve
    from tunnel.io.forward_demo import run_forward_demo
    from tunnel.onion.stack import bootstrapd_core_factory

    # stage 2 needs the onion (friends find each other through it): plug in relay + store
    CORE_FACTORIES.append(lambda ctx: bootstrapd_core_factory(ctx, trio.current_time()))

    profile = Profile.create(workdir / "demo.tox", os.urandom)
    print(f"identity created: {profile.tox_id}", flush=True)
    keys = load_or_create_keys(workdir / "bootstrapd.keys")
    config = BootstrapdConfig(
        keys_file=workdir / "bootstrapd.keys",
        port=port,
        ipv6=False,
        motd="tunnel demo",
        tcp_relay_ports=(),
        lan_discovery=False,
        onion=True,
    )
    joined = False
    forwarded = False
    node: DhtCore | None = None
    # stage 1 is bounded by _wait_joined(timeout_s), stage 2 by forward_timeout_s
    with trio.move_on_after(timeout_s + forward_timeout_s):
        async with trio.open_nursery() as nursery:
            bsd_port, bsd_dht = await nursery.start(
                functools.partial(serve, config, keys, host=LOCALHOST, banner=False)
            )
            print(f"local bootstrap node up on {LOCALHOST}:{bsd_port}", flush=True)
            node = DhtCore(KeyPair.generate(os.urandom), os.urandom, now=trio.current_time())
            node_port = port + 1 if port else 0
            bound = await open_udp_socket(LOCALHOST, node_port, node_port, ipv6=False)
            try:
                dispatcher = PacketDispatcher()
                dispatcher.register(PACKET_KINDS, node)
                driver = UdpDriver(dispatcher, bound)
                async with trio.open_nursery() as node_nursery:
                    await node_nursery.start(driver.run)
                    node.bootstrap(keys.public_key, (LOCALHOST, bsd_port), trio.current_time())
                    driver.kick()
                    joined = await _wait_joined(node, bsd_dht, keys.public_key, timeout_s)
                    node_nursery.cancel_scope.cancel()
            finally:
                bound.close()
            if joined:
                known = len(node.close)
                print(f"second node joined: it knows {known} node{'s' if known != 1 else ''}")
                print("stage 2: forwarding a TCP connection over Tox", flush=True)
                bootstrap = BootstrapNode(LOCALHOST, bsd_port, keys.public_key, ())
                forwarded = await run_forward_demo(workdir, bootstrap, forward_timeout_s)
            nursery.cancel_scope.cancel()
    if not joined or node is None:
        print(f"demo: the second node did not join within {timeout_s:.0f} s")
        return 1
    if not forwarded:
        return 1
    print("demo finished: a TCP connection went through the local Tox network")
    return 0


async def _wait_joined(node: DhtCore, bsd: DhtCore, bsd_pk: bytes, timeout_s: float) -> bool:
    """Each has the other in its close list. The cores are sans-IO state: poll them."""
    for _ in range(int(timeout_s / POLL_INTERVAL_S) + 1):
        if node.close.get(bsd_pk) is not None and bsd.close.get(node.public_key) is not None:
            return True
        await trio.sleep(POLL_INTERVAL_S)
    return False
