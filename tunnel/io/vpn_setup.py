"""Setting up a VPN member and reporting on it (issue 9): the parts of ``tunnel vpn`` around
:class:`tunnel.io.vpn_node.VpnNode` that are not its running data or control plane.

* where a member's state of a network lives, loading it, building the :class:`Membership`
  from the network file plus that state, the member's invite line;
* the member and network rows of ``tunnel status``.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path

from tunnel.errors import ConfigError
from tunnel.io.vpn_large import LargePackets
from tunnel.node import Node
from tunnel.toxid import ToxId
from tunnel.vpn.config import Invite, VpnConfig
from tunnel.vpn.engine import VpnEngine
from tunnel.vpn.membership import Membership, network_id
from tunnel.vpn.state import VpnState


def state_path_for(profile_path: Path, config: VpnConfig) -> Path:
    """Where a member keeps the state of this network: next to its profile."""
    return profile_path.with_name(f"{profile_path.name}.vpn-{network_id(config.secret).hex()}.json")


def load_state(path: Path | None, config: VpnConfig) -> VpnState:
    """The saved state (empty if none).

    Raises:
        ConfigError: the file exists but cannot be read or parsed.
    """
    net_id = network_id(config.secret)
    if path is None or not path.exists():
        return VpnState(net_id)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"VPN state {path}: cannot read: {exc}") from None
    return VpnState.from_json(text, net_id, f"VPN state {path}")


def build_membership(
    config: VpnConfig, tox_id: ToxId, state: VpnState, join: ToxId | None = None
) -> Membership:
    """Membership for ``tox_id`` from the network file plus what was saved; joins if asked."""
    own = state.own_record(config.own_record(tox_id, 1))
    membership = Membership(
        secret=config.secret,
        own=own,
        params=config.params,
        max_ip_packet=config.mtu,
        members=[*config.initial_records(), *state.members],
        revoked=state.revoked,
    )
    target = join if join is not None else config.join
    if target is not None:
        membership.join(target)
    return membership


def invite_for(config: VpnConfig, tox_id: ToxId) -> str:
    """The one-line invite to this network through the member ``tox_id``."""
    return Invite(tox_id, config.secret).encode()


def member_rows(
    membership: Membership, engine: VpnEngine, node: Node, large: LargePackets
) -> list[dict[str, object]]:
    """One row per member for ``tunnel status``: keys, addresses, path, packet sizes."""
    assignment = engine.assignment()
    verified = membership.verified_peers()
    rows: list[dict[str, object]] = []
    for key, record in membership.records().items():
        addresses = assignment.members.get(key)
        rows.append(
            {
                "public_key": key.hex().upper(),
                "tox_id": str(record.tox_id),
                "self": key == membership.own_key,
                "connected": key in verified,
                "path": node.friend_path(key),
                "packet_limit": engine.negotiated_limit(key),
                "path_cap": large.path_cap(key),
                "ipv4": None
                if addresses is None or addresses.ipv4 is None
                else str(addresses.ipv4),
                "ipv6": None
                if addresses is None or addresses.ipv6 is None
                else str(addresses.ipv6),
            }
        )
    return rows


def network_fields(membership: Membership) -> dict[str, object]:
    """The network's name, id, address ranges, revoked keys and whether we were removed."""
    params = membership.params
    return {
        "network": None if params is None else params.name,
        "network_id": membership.network_id.hex(),
        "ipv4_pool": None if params is None or params.ipv4_pool is None else str(params.ipv4_pool),
        "ipv6_prefix": None
        if params is None or params.ipv6_prefix is None
        else str(params.ipv6_prefix),
        "revoked": sorted(key.hex().upper() for key in membership.revoked()),
        "removed": membership.removed,
    }


def asdict_of(obj: object) -> dict[str, object]:
    """A dataclass instance's fields as a dict (statistics snapshots)."""
    assert is_dataclass(obj)
    assert not isinstance(obj, type)
    return asdict(obj)
