"""Large IP packets between two of our own members (issue 9 data path, data-path.md).

Three ``tunnel vpn`` members behind NATs over real Tox: a and b configure ``mtu: 9000``, c
sets 1372 (toxcore's lossy packet size, large packets off). Their HELLOs announce the limits, so
a and b agree on 9000-byte IP packets (one net_crypto data packet each, IP-fragmented on the
wire) while everything to and from c stays within toxcore's 1400-byte packets: a packet too big
for c gets an ICMP "fragmentation needed" (DF set) or is split by the VPN (DF clear).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.testing.netlab import unavailable_reason

from .vpn_node_lab import VpnLab, vpn_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

MESH_TIMEOUT_S = 90.0
LARGE_MTU = 9000
SMALL_MTU = 1372


def _ping(vlab: VpnLab, source: object, target: str, *args: str) -> tuple[int, str]:
    result = vlab.lab.run(
        source.host,  # type: ignore[attr-defined]
        ["ping", "-n", "-c", "1", "-W", "2", *args, target],
        check=False,
        timeout=20,
    )
    return result.returncode, result.stdout + result.stderr


def _path(member: object, key: str) -> object:
    members = member.vpn().get("members")  # type: ignore[attr-defined]
    for entry in members if isinstance(members, list) else []:
        if isinstance(entry, dict) and entry.get("public_key") == key and entry.get("connected"):
            return entry.get("path")
    return None


def test_large_packets_only_between_members_that_agree(tmp_path: Path) -> None:
    with vpn_lab(tmp_path) as vlab:
        lab = vlab.lab
        a = vlab.add_member(
            "a", lab.add_nat_host("a"), {**vlab.founder_network(), "mtu": LARGE_MTU}
        )
        b = vlab.add_member(
            "b", lab.add_nat_host("b"), {"invite": vlab.invite(a), "mtu": LARGE_MTU}
        )
        c = vlab.add_member(
            "c", lab.add_nat_host("c"), {"invite": vlab.invite(a), "mtu": SMALL_MTU}
        )
        for member in (a, b, c):
            vlab.start(member)
        keys = {m.name: vlab.key(m) for m in (a, b, c)}
        vlab.wait_until(
            "full mesh",
            lambda: all(
                {keys[o] for o in keys if o != m.name} <= vlab.connected(m) for m in (a, b, c)
            ),
            MESH_TIMEOUT_S,
        )
        b4, c4 = vlab.address(b, 4), vlab.address(c, 4)
        vlab.wait_ping(a, b4)
        vlab.wait_ping(a, c4)
        # large packets go whole over the direct path once it is probed; before that (and
        # while relayed) a and b split them into VPN fragments, so no ICMP tells the kernel
        # a smaller MTU
        vlab.wait_until(
            "a and b on a direct path to each other",
            lambda: _path(a, keys["b"]) == "udp" and _path(b, keys["a"]) == "udp",
            MESH_TIMEOUT_S,
        )
        # a <-> b: an 8 KB ICMP echo with DF set passes whole, both ways
        vlab.wait_until(
            "a -> b 8000-byte ping (DF)",
            lambda: _ping(vlab, a, b4, "-M", "do", "-s", "8000")[0] == 0,
            30.0,
            0.2,
        )
        # a -> c: without DF the VPN splits the packet into fragments c can take ...
        vlab.wait_until(
            "a -> c 3000-byte ping (no DF)",
            lambda: _ping(vlab, a, c4, "-M", "dont", "-s", "3000")[0] == 0,
            20.0,
            0.2,
        )
        # ... with DF it answers "fragmentation needed" (c only takes 1372 bytes)
        code, out = _ping(vlab, a, c4, "-M", "do", "-s", "3000")
        assert code != 0, out
        router_a = a.vpn()["router"]
        assert isinstance(router_a, dict)
        assert router_a["out_too_big"] >= 1
        assert router_a["out_fragmented"] >= 1
        for member in (b, c):
            router = member.vpn()["router"]
            assert isinstance(router, dict)
            assert router["in_oversize"] == 0
