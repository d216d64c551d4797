"""``tunnel serve``: expose local services to Tox friends (tuntox's server mode, compatible).

Prints the Tox ID alone on the first line of stdout (clients need it), then runs until
interrupted. Settings come from ``-c serve.yaml`` (see ``configs/serve.yaml``) with flags on
top: ``-s`` secret (or ``$TUNTOX_SHARED_SECRET``), ``-i`` allowed client IDs, ``-f`` rules file,
``--rule``. Identity and accepted friends persist in the profile.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from functools import partial
from pathlib import Path

import trio

from tunnel.config import read_yaml_file
from tunnel.config_toolkit import check_friend_key
from tunnel.errors import ConfigError
from tunnel.forward.auth import AuthPolicy
from tunnel.forward.config import ServeConfig, parse_serve_config
from tunnel.forward.rules import RuleSet, parse_rule, parse_rules_text
from tunnel.forward.server_mux import ServerMux
from tunnel.io.forward_node import NodeTransport
from tunnel.io.forward_server import ForwardServer
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

HELP = "expose local services to Tox friends (tuntox-compatible server)"
SECRET_ENV = "TUNTOX_SHARED_SECRET"

log = logging.getLogger("tunnel.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", type=Path, help="serve.yaml")
    parser.add_argument(
        "-s", "--secret", help=f"shared secret clients must send (default: ${SECRET_ENV})"
    )
    parser.add_argument(
        "-i",
        "--allow",
        metavar="TOXID",
        action="append",
        default=[],
        help="allow only these clients (Tox ID or public key; repeatable)",
    )
    parser.add_argument(
        "-f", "--rules-file", metavar="FILE", type=Path, help="rules file (host:port per line)"
    )
    parser.add_argument(
        "--rule",
        metavar="HOST:PORT",
        action="append",
        default=[],
        help="allow this destination (repeatable; any rule means: only what is listed)",
    )
    parser.add_argument("--id-file", metavar="FILE", type=Path, help="write our Tox ID here")
    add_node_arguments(parser)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot read: {exc}") from None


def build_settings(args: argparse.Namespace) -> tuple[ServeConfig, AuthPolicy, RuleSet]:
    """The config file (if any) with the flags applied.

    Raises:
        ConfigError: a bad file, key or flag (named).
    """
    if args.config is not None:
        base = Path(args.config).expanduser().absolute().parent
        config = parse_serve_config(read_yaml_file(args.config), base)
    else:
        config = parse_serve_config(None)
    secret = config.secret
    if config.secret_file is not None:
        secret = _read_text(config.secret_file, "auth.secret_file").splitlines()[0].encode()
    if args.secret is not None:
        secret = args.secret.encode()
    elif secret is None and os.environ.get(SECRET_ENV):
        secret = os.environ[SECRET_ENV].encode()
    allowed = list(config.allowed_clients) if config.allowed_clients is not None else None
    if args.allow:
        allowed = (allowed or []) + [check_friend_key(text, "-i") for text in args.allow]
    try:
        auth = AuthPolicy.build(secret, allowed)
    except ConfigError as exc:
        raise ConfigError(f"-s/auth: {exc}") from None
    rule_texts = list(config.rules) if config.rules is not None else None
    rules = [parse_rule(text) for text in rule_texts] if rule_texts is not None else None
    for path in [p for p in (config.rules_file, args.rules_file) if p is not None]:
        rules = (rules or []) + parse_rules_text(_read_text(Path(path), "rules file"))
    for text in args.rule:
        try:
            rules = (rules or []) + [parse_rule(text)]
        except ConfigError as exc:
            raise ConfigError(f"--rule: {exc}") from None
    return config, auth, RuleSet(rules)


def run(args: argparse.Namespace) -> int:
    config, auth, rules = build_settings(args)
    setup_logging(args)
    profile_path = args.profile if args.profile is not None else config.node.profile
    profile = load_or_create_profile(profile_path)
    options = node_options(args, config.node)
    if args.id_file is not None:
        Path(args.id_file).write_text(f"{profile.tox_id}\n")
    status_path = args.status_socket or default_status_socket("serve")
    return trio.run(
        partial(run_with_node, tor=tor_config(args, config.node)),
        profile,
        options,
        partial(_serve, config, auth, rules, status_path),
    )


async def _serve(
    config: ServeConfig,
    auth: AuthPolicy,
    rules: RuleSet,
    status_path: Path | None,
    node: Node,
    transport: NodeTransport,
) -> int:
    mux = ServerMux(
        os.urandom,
        rules=rules,
        auth=auth,
        window_bytes=config.window_bytes,
        connect_timeout_s=config.connect_timeout_s,
        legacy_refusal="silent" if config.legacy_refusal == "silent" else "ack_fin",
        allow_udp=config.allow_udp,
    )
    server = ForwardServer(mux, transport)
    print(node.tox_id, flush=True)
    mode = []
    if auth.secret is not None:
        mode.append("shared secret")
    if auth.allowlist is not None:
        mode.append(f"{len(auth.allowlist)} allowed client(s)")
    print(
        f"serving on Tox; auth: {' + '.join(mode) or 'anyone'}; "
        f"rules: {'restricted' if rules.restricted else 'everything allowed'}",
        file=sys.stderr,
        flush=True,
    )
    async with trio.open_nursery() as nursery:
        if status_path is not None:
            nursery.start_soon(
                serve_status, status_path, partial(driver_status, "serve", node, server)
            )
        await server.run()
        nursery.cancel_scope.cancel()
    return 0
