"""``tunnel genconf``: print a complete, commented configuration to start from.

The templates are the files in ``configs/`` of the source tree (a test keeps them identical):
every key with its default or an example value, loopback addresses and made-up keys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunnel.errors import ConfigError

HELP = "print a complete, commented config file (edit it, then check-config it)"

NODE_TEMPLATE = """\
# tunnel configuration, role "node": one Tox identity on the network.
#
# Check a file with `tunnel check-config FILE`; it prints the normalised configuration
# (every key, defaults filled in) or one line naming the first bad key.
# Any key may be left out (or set to null) to get its default. Unknown keys are errors.
# Relative paths are taken from this file's directory; "~" is your home directory.
# The addresses and keys below are examples (loopback, made-up keys): replace them.

# Which kind of program this file configures: "node" (default) or "bootstrapd".
role: node

# The identity file: key pair, nospam and friends, in c-toxcore's save format
# (compatible with qTox/toxic profiles that are not encrypted). Created by `tunnel id`
# if absent, always written with mode 0600.
# Default: $XDG_CONFIG_HOME/tunnel/profile.tox (~/.config/tunnel/profile.tox).
profile: ~/.config/tunnel/profile.tox

# Unix socket on which the running node accepts local control commands.
# Default: $XDG_RUNTIME_DIR/tunnel/control.sock, else ~/.config/tunnel/control.sock.
control_socket: ~/.config/tunnel/control.sock

# How much to log: debug, info, warning or error. Default: info.
log_level: info

# The UDP socket used for the DHT, the onion and direct friend connections.
udp:
  # false = TCP-only: reach the network only through the tcp_relays below. Default: true.
  enabled: true
  # Bind a dual-stack IPv6 socket (also reaches IPv4 peers). Default: true.
  ipv6: true
  # The first free port in port_start..port_end is used (toxcore: 33445..33545).
  port_start: 33445
  port_end: 33545

# Find peers on the local network with LAN discovery broadcasts (UDP port 33445).
# Default: false.
lan_discovery: false

# Try UDP hole punching towards friends behind NAT. Default: true.
hole_punching: true

# Send all TCP relay connections through a proxy (UDP is then usually disabled above).
# socks5://[user[:password]@]host:port or http://[user[:password]@]host:port, or null.
# Example: proxy: socks5://127.0.0.1:9050 (Tor). Default: null (no proxy).
proxy: null

# DHT nodes to join the network through (at least one is needed unless
# lan_discovery finds a peer). tcp_ports are the node's TCP relay ports, if it runs one.
bootstrap:
  - host: 127.0.0.1
    port: 33445
    public_key: A4E09292B651C278B9772C569F5FA9BB13D906B46AB68C9DF9DC2B4409F8A209
    tcp_ports: [3389, 33445]
  - host: "::1"
    port: 33446
    public_key: CE8D3AD1CCB633EC7B70C17814A5C76ECD029685050D344745BA05870E587D59
    tcp_ports: []

# TCP relays to keep connections to (used when UDP is blocked or disabled).
tcp_relays:
  - host: localhost
    port: 33445
    public_key: A4E09292B651C278B9772C569F5FA9BB13D906B46AB68C9DF9DC2B4409F8A209

# Friends: their long-term public key (64 hex characters) or full Tox ID
# (76 hex characters, as `tunnel id` prints) and a name for logs.
friends:
  - public_key: 5DFEDD3B6BD47F6FA28EE15D969D5BB0EA53774D488BDAF9DF1C6E0124B3EF220BADF00D94C0
    name: laptop
  - public_key: AC01B2209E86354FB853237B5DE0F4FAB13C7FCBF433A61C019369617FECF10B
    name: server
"""

BOOTSTRAPD_TEMPLATE = """\
# tunnel configuration, role "bootstrapd": a DHT bootstrap node and TCP relay, like
# c-toxcore's tox-bootstrapd. It has no friends and runs no Messenger.
#
# Check a file with `tunnel check-config FILE`. Any key may be left out (or set to null)
# to get its default. Unknown keys are errors. Relative paths are taken from this file's
# directory; "~" is your home directory. Addresses and keys below are examples.

role: bootstrapd

# The node's key pair: 64 bytes, public key then secret key (tox-bootstrapd's keys file
# format, so an existing tox-bootstrapd.keys works). Created if absent.
# Default: $XDG_CONFIG_HOME/tunnel/bootstrapd.keys (~/.config/tunnel/bootstrapd.keys).
keys_file: ~/.config/tunnel/bootstrapd.keys

# UDP port for the DHT and the onion. Default: 33445.
port: 33445

# Bind a dual-stack IPv6 socket (also serves IPv4). Default: true.
ipv6: true

# Message of the day, returned in bootstrap info replies: at most 256 bytes of UTF-8.
motd: tunnel bootstrapd example

# Other bootstrap nodes to join the DHT through (empty: wait to be contacted).
# tcp_ports may be given but are not used by a bootstrap node.
bootstrap_nodes:
  - host: 127.0.0.1
    port: 33446
    public_key: CE8D3AD1CCB633EC7B70C17814A5C76ECD029685050D344745BA05870E587D59

# TCP ports on which to run a TCP relay (same key pair as the DHT). An empty list []
# runs no relay. Default: [33445].
tcp_relay_ports: [3389, 33445]

# Answer and send LAN discovery packets. Default: false.
lan_discovery: false

# Relay onion packets and store onion announcements (what makes friends findable).
# Default: true.
onion: true

# How much to log: debug, info, warning or error. Default: info.
log_level: info
"""

TEMPLATES = {"node": NODE_TEMPLATE, "bootstrapd": BOOTSTRAPD_TEMPLATE}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--role``, ``-o FILE``, ``--force``."""
    parser.add_argument(
        "--role",
        choices=sorted(TEMPLATES),
        default="node",
        help="what to configure (default: node)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", type=Path, help="write to FILE instead of stdout"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing FILE")


def run(args: argparse.Namespace) -> int:
    """Print or write the template for ``--role``."""
    text = TEMPLATES[args.role]
    if args.output is None:
        sys.stdout.write(text)
        return 0
    path: Path = args.output
    try:
        with open(path, "w" if args.force else "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError as exc:
        raise ConfigError(f"{path}: already exists (use --force to overwrite)") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    print(f"wrote {args.role} config to {path}", file=sys.stderr)
    return 0
