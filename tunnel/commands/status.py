"""``tunnel status``: live status of the running ``tunnel serve`` / ``tunnel connect`` commands.

Each of them answers on a Unix socket (``--status-socket``, default
``<control socket dir>/<command>-<pid>.sock``) with one JSON object; this command reads every
socket given, or all in the default directory, and prints a summary (``--json``: raw).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import trio

from tunnel.errors import ConfigError
from tunnel.io.node_runner import read_status, status_dir

HELP = "show the live status of running `tunnel serve` / `tunnel connect` / `tunnel vpn` commands"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sockets", metavar="SOCKET", nargs="*", type=Path, help="status sockets")
    parser.add_argument("--json", action="store_true", help="print the raw JSON objects")


def run(args: argparse.Namespace) -> int:
    paths: list[Path] = list(args.sockets)
    if not paths:
        directory = status_dir()
        paths = sorted(directory.glob("serve-*.sock")) + sorted(directory.glob("connect-*.sock"))
        paths += sorted(directory.glob("vpn-*.sock"))
        if not paths:
            raise ConfigError(f"no running tunnel serve/connect (no sockets in {directory})")
    found = 0
    for path in paths:
        try:
            status = trio.run(read_status, path)
        except ConfigError as exc:
            if args.sockets:
                raise
            print(f"{path}: {exc}")  # a stale socket of a command that died
            continue
        found += 1
        if args.json:
            print(json.dumps(status, sort_keys=True))
        else:
            print(format_status(path, status))
    return 0 if found else 1


def format_status(path: Path, status: dict[str, object]) -> str:
    """A few human-readable lines."""
    lines = [
        f"{status.get('role', '?')} (pid {status.get('pid', '?')}, {path})",
        f"  Tox ID {status.get('tox_id')}",
        f"  DHT {'up' if status.get('dht_connected') else 'down'}, onion "
        f"{'up' if status.get('onion_connected') else 'down'}, TCP relays "
        f"{status.get('tcp_relays_connected', 0)}, UDP port {status.get('udp_port')}",
    ]
    friends = status.get("friends")
    for friend in friends if isinstance(friends, list) else []:
        if not isinstance(friend, dict):
            continue
        state = f"online via {friend.get('path')}" if friend.get("online") else "offline"
        rtt = friend.get("rtt_ms")
        limit = friend.get("packet_limit")
        lines.append(
            f"  friend {str(friend.get('public_key'))[:16]}... {state}"
            + (f", rtt {rtt} ms" if rtt is not None else "")
            + (f", packets up to {limit} B" if isinstance(limit, int) and limit > 1373 else "")
            + f", sent {friend.get('sent_bytes')} B, received {friend.get('received_bytes')} B"
        )
    vpn = status.get("vpn")
    if isinstance(vpn, dict):
        lines.extend(format_vpn(vpn))
        return "\n".join(lines)
    forward = status.get("forward")
    counters = forward if isinstance(forward, dict) else {}
    lines.append(
        f"  tunnels open {status.get('tunnels')}, opened {counters.get('tunnels_opened', 0)}, "
        f"failed {counters.get('tunnels_failed', 0)}, denied {counters.get('denied', 0)}"
    )
    return "\n".join(lines)


def format_vpn(vpn: dict[str, object]) -> list[str]:
    """The ``tunnel vpn`` part: network, our addresses, members and their routes, drops."""
    addresses = vpn.get("addresses")
    own = ", ".join(map(str, addresses)) if isinstance(addresses, list) and addresses else "-"
    lines = [
        f"  network {vpn.get('network')!r} ({vpn.get('ipv4_pool')}, {vpn.get('ipv6_prefix')}), "
        f"interface {vpn.get('interface')}: {own}"
    ]
    members = vpn.get("members")
    for member in members if isinstance(members, list) else []:
        if not isinstance(member, dict) or member.get("self"):
            continue
        state = f"connected via {member.get('path')}" if member.get("connected") else "offline"
        where = " ".join(str(member[k]) for k in ("ipv4", "ipv6") if member.get(k))
        cap, limit = member.get("path_cap"), member.get("packet_limit")
        if member.get("connected") and cap is not None:
            if cap == limit:
                state += f", IP packets up to {cap} bytes"
            elif member.get("path") == "udp":
                state += f", IP packets up to {limit} bytes (path probed to {cap}, larger split)"
            else:
                state += f", IP packets up to {limit} bytes (split to {cap} over the relay)"
        lines.append(f"  member {str(member.get('public_key'))[:16]}... {where} {state}")
    revoked = vpn.get("revoked")
    if isinstance(revoked, list) and revoked:
        lines.append(f"  revoked {len(revoked)} member(s)")
    drops: dict[str, object] = {}
    for section in ("router", "counters", "fragments"):
        values = vpn.get(section)
        if isinstance(values, dict):
            drops.update(
                {k: v for k, v in values.items() if ("dropped" in k or k.startswith("in_")) and v}
            )
    lines.append("  packets " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "-"))
    return lines
