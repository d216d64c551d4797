"""``tunnel vpn`` end to end, issue 9's lab: three members, each behind its own NAT router, and
a bootstrap host (tox-bootstrapd: DHT node + TCP relay) on the lab's internet.

One invite each (b through a, c through b: c never hears of a except from the mesh); every
pair ends up directly connected and pings over IPv4 and IPv6 through the TUN devices; an
iperf3 TCP run completes; a stopped member disappears from the others' routes and comes back
when restarted (without an invite: from its saved state); a removed member is cut off. The
same mesh also forms with all UDP blocked on the internet (TCP relays only).
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunnel.testing.netlab import unavailable_reason

from .vpn_node_lab import Member, VpnLab, vpn_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

MESH_TIMEOUT_S = 90.0
IPERF_PORT = 52100
IPERF_SECONDS = 3


def _three_members(vlab: VpnLab) -> tuple[Member, Member, Member]:
    lab = vlab.lab
    a = vlab.add_member("a", lab.add_nat_host("a"), vlab.founder_network())
    b = vlab.add_member("b", lab.add_nat_host("b"), {"invite": vlab.invite(a)})
    c = vlab.add_member("c", lab.add_nat_host("c"), {"invite": vlab.invite(b)})
    return a, b, c


def _wait_full_mesh(vlab: VpnLab, members: list[Member]) -> None:
    def full() -> bool:
        return all(
            {vlab.key(o) for o in members if o is not m} <= vlab.connected(m) for m in members
        )

    vlab.wait_until("full mesh", full, MESH_TIMEOUT_S)


def _ping_all_pairs(vlab: VpnLab, members: list[Member], versions: tuple[int, ...]) -> None:
    for source, target in itertools.permutations(members, 2):
        for version in versions:
            vlab.wait_ping(source, vlab.address(target, version))


def _paths(vlab: VpnLab, member: Member) -> dict[str, object]:
    members = member.vpn().get("members")
    assert isinstance(members, list)
    return {str(m["public_key"]): m.get("path") for m in members if not m.get("self")}


def test_three_members_behind_nats_mesh_iperf_restart_remove(tmp_path: Path) -> None:
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 is not installed")
    with vpn_lab(tmp_path) as vlab:
        a, b, c = _three_members(vlab)
        for member in (a, b, c):
            vlab.start(member)
        members = [a, b, c]
        _wait_full_mesh(vlab, members)
        _ping_all_pairs(vlab, members, (4, 6))
        # every pair is connected directly (UDP through the NATs), not through a relay
        vlab.wait_until(
            "direct paths",
            lambda: all(
                _paths(vlab, m).get(vlab.key(o)) == "udp"
                for m in members
                for o in members
                if o is not m
            ),
            30.0,
        )

        # iperf3 TCP from a to c through the VPN
        server = vlab.lab.popen(
            c.host, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL
        )
        # wait (bounded) until the iperf3 server listens, instead of guessing with a sleep
        for _ in range(200):
            listening = vlab.lab.run(c.host, ["ss", "-ltnH", f"sport = :{IPERF_PORT}"]).stdout
            if listening.strip() or server.poll() is not None:
                break
            try:
                server.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        assert listening.strip(), "iperf3 server never listened"
        result = vlab.lab.run(
            a.host,
            [
                "iperf3",
                "-c",
                vlab.address(c, 4),
                "-p",
                str(IPERF_PORT),
                "-t",
                str(IPERF_SECONDS),
                "-J",
            ],
            timeout=IPERF_SECONDS + 30,
        )
        report = json.loads(result.stdout)
        assert "sum_received" in report.get("end", {}), report.get("error", result.stdout[-2000:])
        received = report["end"]["sum_received"]["bytes"]
        assert received > 0
        server.wait(10)

        # c stops: it disappears from a's and b's routes; restarted it comes back by itself
        c_v4 = vlab.address(c, 4)
        vlab.stop(c)
        for member in (a, b):
            vlab.wait_until(
                f"c gone from {member.name}",
                lambda m=member: vlab.key(c) not in vlab.connected(m),
                60.0,
            )
        assert not vlab.ping(a, c_v4)
        vlab.start(c)
        _wait_full_mesh(vlab, members)
        vlab.wait_ping(a, c_v4)
        vlab.wait_ping(c, vlab.address(b, 6))

        # a removes c: c learns it and stops (exit 3); nobody routes to it any more
        out = subprocess.run(
            [
                vlab.lab_python(),
                "-m",
                "tunnel",
                "vpn",
                "remove",
                vlab.key(c),
                "--control-socket",
                str(a.control),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert c.proc is not None
        assert c.proc.wait(30) == 3
        c.expect_running = False
        for member in (a, b):
            vlab.wait_until(
                f"{member.name} knows c is revoked",
                lambda m=member: vlab.key(c) in (m.vpn().get("revoked") or []),
                30.0,
            )
            assert vlab.key(c) not in vlab.connected(member)
        assert not vlab.ping(a, c_v4)
        assert not vlab.ping(b, c_v4)
        # started again, c refuses to run: it knows it was removed
        vlab.start(c)
        assert c.proc is not None
        assert c.proc.wait(30) != 0
        c.expect_running = False
        vlab.wait_ping(a, vlab.address(b, 4))  # the rest of the mesh is unaffected


def test_mesh_through_tcp_relays_when_udp_is_blocked(tmp_path: Path) -> None:
    with vpn_lab(tmp_path) as vlab:
        a, b, c = _three_members(vlab)
        members = [a, b, c]
        for member in members:
            vlab.lab.block_udp(member.host)
        for member in members:
            vlab.start(member)
        _wait_full_mesh(vlab, members)
        _ping_all_pairs(vlab, members, (4, 6))
        for member in members:
            assert set(_paths(vlab, member).values()) == {"tcp"}
        assert vlab.lab.udp_drop_count() > 0
