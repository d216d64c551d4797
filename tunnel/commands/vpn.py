"""``tunnel vpn``: a full-mesh VPN over Tox (issue 9).

* ``tunnel vpn -c network.yaml [--join INVITE]`` (action ``up``, the default): create the TUN
  device, start the Tox node, join or found the network, route IP packets until SIGTERM/SIGINT
  (or until this member is removed: exit status 3). Prints our Tox ID and our invite on the
  first two lines of stdout. ``--join`` alone (no ``-c``) joins with nothing but the invite.
* ``tunnel vpn invite -c network.yaml``: print the invite through this machine (no network).
* ``tunnel vpn remove KEY``: ask the running ``tunnel vpn`` to revoke a member (public key or
  Tox ID; our own key: leave the network), through its control socket.

The running command answers ``tunnel status`` on ``<status dir>/vpn-<pid>.sock`` and takes
commands on ``<status dir>/vpn-<pid>.ctl`` (``--status-socket`` moves both: ``X.sock`` and
``X.ctl``). Member records and revocations are saved next to the profile.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

import trio

from tunnel.config import default_profile_path
from tunnel.config_toolkit import check_friend_key
from tunnel.errors import ConfigError
from tunnel.io.node_runner import (
    add_node_arguments,
    default_status_socket,
    load_or_create_profile,
    node_options,
    node_status,
    serve_status,
    setup_logging,
    status_dir,
)
from tunnel.io.tun import TunDevice, TunError, drop_privileges
from tunnel.io.vpn_node import VpnNode
from tunnel.io.vpn_setup import build_membership, invite_for, load_state, state_path_for
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.toxid import ToxId
from tunnel.vpn.config import Invite, VpnConfig, load_vpn_config, parse_vpn_config
from tunnel.vpn.state import VpnState

HELP = "full-mesh VPN over Tox (up / invite / remove)"
EXIT_REMOVED = 3
CONTROL_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 3.0

log = logging.getLogger("tunnel.vpn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("up", "invite", "remove"),
        default="up",
        help="up: run the VPN (default); invite: print an invite; remove: revoke a member",
    )
    parser.add_argument("member", nargs="?", help="remove: the member's public key or Tox ID")
    parser.add_argument("-c", "--config", metavar="FILE", type=Path, help="network file")
    parser.add_argument(
        "--join", metavar="INVITE", help="join through this invite (tunnel-vpn:<Tox ID>:<secret>)"
    )
    parser.add_argument(
        "--control-socket", metavar="PATH", type=Path, help="remove: the running VPN's .ctl socket"
    )
    add_node_arguments(parser)


def load_config(args: argparse.Namespace) -> tuple[VpnConfig, ToxId | None]:
    """The network file (or just the invite) and whom to join.

    Raises:
        ConfigError: a bad file, or an invite for another network.
    """
    invite = Invite.parse(args.join, "--join") if args.join else None
    if args.config is None:
        if invite is None:
            raise ConfigError("-c/--config: a network file is needed (or --join INVITE)")
        return parse_vpn_config({"invite": args.join}), invite.tox_id
    config = load_vpn_config(args.config)
    if invite is not None and invite.secret != config.secret:
        raise ConfigError("--join: the invite is for another network (its secret differs)")
    return config, invite.tox_id if invite is not None else None


def _profile_path(args: argparse.Namespace) -> Path:
    return Path(args.profile) if args.profile is not None else default_profile_path()


def run(args: argparse.Namespace) -> int:
    if args.action == "remove":
        return _run_remove(args)
    config, join = load_config(args)
    setup_logging(args)
    profile_path = _profile_path(args)
    profile = load_or_create_profile(profile_path)
    if args.action == "invite":
        print(invite_for(config, profile.tox_id))
        return 0
    options = node_options(args, None)
    if getattr(args, "tor", None) is not None or getattr(args, "tor_control", None) is not None:
        raise ConfigError("--tor: not supported by tunnel vpn (serve, connect and run have it)")
    state_path = state_path_for(profile_path, config)
    state = load_state(state_path, config)
    if profile.public_key in state.revoked:
        raise ConfigError(
            f"this member ({profile.public_key.hex().upper()[:16]}...) was removed from the "
            "network; a new identity (profile) is needed to join again"
        )
    try:
        tun = TunDevice(config.interface)
    except TunError as exc:
        raise ConfigError(f"interface {config.interface}: {exc}") from None
    try:
        if config.user is not None:
            # Codecs load lazily (getaddrinfo needs idna), and once we are another user the
            # Python installation may no longer be readable (e.g. under /root): load it now.
            importlib.import_module("encodings.idna")
            drop_privileges(config.user, keep_net_admin=True)
        status = args.status_socket or default_status_socket("vpn")
        return trio.run(_main, config, join, profile, options, tun, state_path, state, status)
    except TunError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        tun.close()


async def _main(
    config: VpnConfig,
    join: ToxId | None,
    profile: Profile,
    options: NodeOptions,
    tun: TunDevice,
    state_path: Path,
    state: VpnState,
    status_path: Path,
) -> int:
    node = Node(profile, options)
    membership = build_membership(config, node.tox_id, state, join)
    vpn = VpnNode(node, config, membership, tun, state_path=state_path)
    print(node.tox_id, flush=True)
    print(invite_for(config, node.tox_id), flush=True)
    result = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            with trio.CancelScope() as scope:
                nursery.start_soon(_stop_on_signal, scope)
                nursery.start_soon(serve_status, status_path, lambda: _status(node, vpn))
                nursery.start_soon(_serve_control, _control_path(status_path), vpn)
                await vpn.run()
                if vpn.removed_by is not None:
                    result = EXIT_REMOVED
                elif vpn.failure is not None:
                    print(f"tunnel vpn: error: {vpn.failure}", file=sys.stderr)
                    result = 1
        finally:
            with trio.move_on_after(SHUTDOWN_TIMEOUT_S) as shutdown:
                shutdown.shield = True
                await node.aclose()
            nursery.cancel_scope.cancel()
    return result


def _control_path(status_path: Path) -> Path:
    return status_path.with_suffix(".ctl")


def _status(node: Node, vpn: VpnNode) -> dict[str, object]:
    return {**node_status("vpn", node), "vpn": vpn.statistics()}


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _signum in signals:
            scope.cancel()
            return


async def _serve_control(path: Path, vpn: VpnNode) -> None:
    """One command line per connection: ``remove <key hex>``; the answer is one line."""
    _prepare(path)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(4)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(CONTROL_TIMEOUT_S):
                while b"\n" not in data and len(data) < 1024:
                    chunk = await stream.receive_some(1024)
                    if not chunk:
                        break
                    data += chunk
            words = data.decode(errors="replace").split()
            reply = "error: expected: remove <public key>"
            if len(words) == 2 and words[0] == "remove":
                try:
                    key = check_friend_key(words[1], "member")
                except ConfigError as exc:
                    reply = f"error: {exc}"
                else:
                    vpn.remove_member(key)
                    reply = f"removed {key.hex().upper()}"
            with trio.move_on_after(CONTROL_TIMEOUT_S):
                await stream.send_all(reply.encode() + b"\n")

    try:
        await trio.serve_listeners(answer, [trio.SocketListener(sock)])
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _prepare(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.unlink(path)


def _run_remove(args: argparse.Namespace) -> int:
    if not args.member:
        raise ConfigError("remove: give the member's public key or Tox ID")
    key = check_friend_key(args.member, "member")
    path = args.control_socket
    if path is None:
        found = sorted(status_dir().glob("vpn-*.ctl"))
        if len(found) != 1:
            raise ConfigError(
                f"--control-socket: {len(found)} running VPNs in {status_dir()}; name one"
            )
        path = found[0]
    reply = trio.run(_send_command, Path(path), f"remove {key.hex()}\n")
    print(reply)
    return 0 if reply.startswith("removed") else 1


async def _send_command(path: Path, line: str) -> str:
    try:
        stream = await trio.open_unix_socket(str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: no running tunnel vpn ({exc.strerror})") from None
    data = b""
    async with stream:
        await stream.send_all(line.encode())
        with trio.move_on_after(CONTROL_TIMEOUT_S):
            while chunk := await stream.receive_some(1024):
                data += chunk
    return data.decode(errors="replace").strip()


__all__ = ["HELP", "add_arguments", "run"]
