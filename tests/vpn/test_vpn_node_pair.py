"""``tunnel vpn`` end to end, two members: real processes, real Tox (our Node) through a real
tox-bootstrapd, TUN devices in network namespaces behind NAT routers; ping over IPv4 and IPv6.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.testing.netlab import unavailable_reason

from .vpn_node_lab import vpn_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

MESH_TIMEOUT_S = 60.0


def test_two_members_join_by_invite_and_ping_v4_v6(tmp_path: Path) -> None:
    with vpn_lab(tmp_path) as vlab:
        lab = vlab.lab
        a = vlab.add_member("a", lab.add_nat_host("a"), vlab.founder_network())
        b = vlab.add_member("b", lab.add_nat_host("b"), {"invite": vlab.invite(a)})
        vlab.start(a)
        vlab.start(b)
        vlab.wait_until(
            "a and b connected",
            lambda: vlab.key(b) in vlab.connected(a) and vlab.key(a) in vlab.connected(b),
            MESH_TIMEOUT_S,
        )
        for version in (4, 6):
            vlab.wait_ping(a, vlab.address(b, version))
            vlab.wait_ping(b, vlab.address(a, version))
        # b learned the pools from a: both addresses come from the same pools
        assert vlab.address(a, 4).startswith("10.123.0.")
        assert vlab.address(b, 6).startswith("fd7e:57:")
        counters = a.vpn()["counters"]
        assert isinstance(counters, dict)
        assert counters["out_packets"] > 0
        assert counters["in_packets"] > 0
        # `tunnel status` shows the VPN: addresses, the member and how it is reached
        out = subprocess.run(
            [sys.executable, "-m", "tunnel", "status", str(a.status)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        assert vlab.address(a, 4) in out
        assert f"member {vlab.key(b)[:16]}... {vlab.address(b, 4)}" in out
        assert "connected via udp" in out
