"""Reading a running ``VpnNode``'s statistics in tests: one member's row, one section."""

from __future__ import annotations

from tunnel.io.vpn_node import VpnNode


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
