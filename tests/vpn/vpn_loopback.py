"""Two VPN members as in-process Nodes on loopback (no TUN, no root), and reading their
statistics: shared by the tests that drive ``VpnNode`` over real Tox."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from tunnel.io.node_runner import load_or_create_profile
from tunnel.io.vpn_node import VpnNode
from tunnel.io.vpn_setup import build_membership, load_state
from tunnel.node import Node
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.node_options import loopback_options
from tunnel.testing.ports import PortPool
from tunnel.vpn.config import parse_vpn_config


def two_members(
    tmp_path: Path,
    port_pool: PortPool,
    bootstrapd: Bootstrapd,
    network: Mapping[str, object],
    *,
    mtu: int,
    udp_b: bool = True,
) -> tuple[list[Node], list[VpnNode]]:
    """Member a founds ``network`` (a fresh secret is added), b joins by invite; both with
    ``mtu``; b without UDP unless ``udp_b``. Not started: run the nodes, then the VPNs."""
    secret = secrets.token_hex(32)
    profiles = [load_or_create_profile(tmp_path / f"{n}.tox") for n in ("a", "b")]
    configs = [
        parse_vpn_config({**network, "secret": secret, "mtu": mtu}),
        parse_vpn_config({"invite": f"tunnel-vpn:{profiles[0].tox_id}:{secret}", "mtu": mtu}),
    ]
    nodes = [
        Node(profiles[0], loopback_options(port_pool, bootstrapd)),
        Node(profiles[1], loopback_options(port_pool, bootstrapd, udp_enabled=udp_b)),
    ]
    vpns = [
        VpnNode(node, config, build_membership(config, node.tox_id, load_state(None, config)), None)
        for node, config in zip(nodes, configs, strict=True)
    ]
    return nodes, vpns


def member_row(vpn: VpnNode, key: bytes) -> dict[str, object]:
    """The ``members`` row of the member with public key ``key``."""
    members = vpn.statistics()["members"]
    assert isinstance(members, list)
    [entry] = [m for m in members if m["public_key"] == key.hex().upper()]
    assert isinstance(entry, dict)
    return entry


def section(vpn: VpnNode, name: str) -> dict[str, object]:
    """One section of the statistics (``router``, ``pmtu``, ``fragments``...)."""
    value = vpn.statistics()[name]
    assert isinstance(value, dict)
    return value
