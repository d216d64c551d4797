"""``tunnel demo``: a self-contained local Tox network, no internet needed.

Stage 1 (DHT): in a temporary directory, create an identity (a profile with a Tox ID), start a
bootstrap node on 127.0.0.1 (the same code as ``tunnel bootstrapd``) and a second node that
joins it through the DHT; print what happened and exit 0. Bounded to about 20 seconds. Later
stages (friends, tunnels) extend this command.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
from pathlib import Path

import trio

from tunnel.config import BootstrapdConfig
from tunnel.crypto import KeyPair
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.profile import Profile

HELP = "run a self-contained local demo network (no internet needed)"
DEMO_TIMEOUT_S = 20.0
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


def run(args: argparse.Namespace) -> int:
    """Run the demo in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="tunnel-demo-") as workdir:
        return trio.run(_demo, Path(workdir), int(args.port), float(args.timeout))


async def _demo(workdir: Path, port: int, timeout_s: float) -> int:
    # Imported here so the demo's bootstrap node is exactly the bootstrapd command's code.
    from tunnel.commands.bootstrapd import load_or_create_keys, serve

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
        onion=False,
    )
    joined = False
    node: DhtCore | None = None
    with trio.move_on_after(timeout_s) as scope:
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
            nursery.cancel_scope.cancel()
    if scope.cancelled_caught or not joined or node is None:
        print(f"demo: the second node did not join within {timeout_s:.0f} s")
        return 1
    known = len(node.close)
    print(f"second node joined: it knows {known} node{'s' if known != 1 else ''}")
    return 0


async def _wait_joined(node: DhtCore, bsd: DhtCore, bsd_pk: bytes, timeout_s: float) -> bool:
    """Each has the other in its close list. The cores are sans-IO state: poll them."""
    for _ in range(int(timeout_s / POLL_INTERVAL_S) + 1):
        if node.close.get(bsd_pk) is not None and bsd.close.get(node.public_key) is not None:
            return True
        await trio.sleep(POLL_INTERVAL_S)
    return False
