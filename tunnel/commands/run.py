"""``tunnel run -c FILE``: run a node (one Tox identity) until SIGINT/SIGTERM.

Loads the ``role: node`` config, loads the profile (creating it on first use), starts a
:class:`tunnel.node.Node` and logs its Tox ID and friend events. The Tox ID is also printed
alone on one stdout line, ``Tox ID: <76 hex>``, for scripts. Friends listed in the config are
kept as confirmed friends; friend requests from anyone else are logged and, with
``--accept-all``, accepted. SIGINT/SIGTERM shut the node down gracefully (friends see us go
offline at once, the profile is saved) and exit with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from functools import partial

import trio

from tunnel.config import load_node_config
from tunnel.io.node_runner import add_tor_arguments, check_tor_node, tor_config
from tunnel.node import Node, load_or_create_profile
from tunnel.node_types import (
    FriendConnected,
    FriendDisconnected,
    FriendRequest,
    Message,
    NodeEvent,
    NodeOptions,
    SelfConnectionChanged,
)
from tunnel.profile import Profile
from tunnel.tor.config import TorConfig

HELP = "run a node: join the Tox network with this identity until interrupted"

log = logging.getLogger("tunnel.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``-c FILE``, ``--accept-all``."""
    parser.add_argument("-c", "--config", required=True, metavar="FILE", help="YAML config")
    parser.add_argument(
        "--accept-all",
        action="store_true",
        help="accept every friend request (default: only log them)",
    )
    add_tor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Load config and profile, then run the node until SIGTERM/SIGINT."""
    config = load_node_config(args.config)
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    tor = tor_config(args, config)
    profile = load_or_create_profile(config.profile)
    return trio.run(
        partial(serve, tor=tor), profile, NodeOptions.from_config(config), args.accept_all
    )


def _short(public_key: bytes) -> str:
    return public_key.hex().upper()[:16]


async def _log_events(node: Node, accept_all: bool) -> None:
    events = node.subscribe()
    async for event in events:
        _log_event(node, event, accept_all)


def _log_event(node: Node, event: NodeEvent, accept_all: bool) -> None:
    if isinstance(event, SelfConnectionChanged):
        state = "online" if event.connected else "offline"
        log.info("self %s%s", state, " (TCP)" if event.connected and event.tcp else "")
    elif isinstance(event, FriendRequest):
        who = event.public_key.hex().upper()
        text = event.message.decode("utf-8", "replace")
        if accept_all:
            node.accept_friend_request(event.public_key)
            log.info("friend request from %s accepted: %s", who, text)
        else:
            log.info("friend request from %s (not accepted): %s", who, text)
    elif isinstance(event, FriendConnected):
        log.info("friend %s online via %s", _short(event.public_key), event.path.upper())
    elif isinstance(event, FriendDisconnected):
        log.info("friend %s offline", _short(event.public_key))
    elif isinstance(event, Message):
        text = event.text.decode("utf-8", "replace")
        log.info("message from %s: %s", _short(event.public_key), text)


async def serve(
    profile: Profile,
    options: NodeOptions,
    accept_all: bool = False,
    *,
    tor: TorConfig | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run a node (in Tor mode with ``tor``) until SIGTERM/SIGINT; ``task_status.started(node)``
    once it is listening.

    Raises:
        ConfigError: Tor is not usable (with ``tor``).
    """
    tor_node = await check_tor_node(profile, options, tor) if tor is not None else None
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if tor_node is not None:
                node = await nursery.start(tor_node.run)
                nursery.start_soon(_log_events, node, accept_all)
            else:
                node = Node(profile, options)
                nursery.start_soon(_log_events, node, accept_all)
                await nursery.start(node.run)
            print(f"Tox ID: {node.tox_id}", flush=True)
            log.info("Tox ID %s, UDP port %s", node.tox_id, node.udp_port or "off (TCP only)")
            task_status.started(node)
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
            await node.aclose()
            nursery.cancel_scope.cancel()
    return 0
