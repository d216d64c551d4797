"""``tunnel vpn`` end to end, two members: real processes, real Tox (our Node) through a real
tox-bootstrapd, TUN devices in network namespaces behind NAT routers; ping over IPv4 and IPv6.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tunnel.testing.netlab import unavailable_reason

from .vpn_node_lab import Member, vpn_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

MESH_TIMEOUT_S = 60.0


def test_two_members_join_by_invite_and_ping_v4_v6(tmp_path: Path) -> None:
    # b's files live where "nobody" can reach them (pytest's tmp_path is root-only)
    nobody_dir = Path(tempfile.mkdtemp(prefix="tnlvpn-"))
    try:
        _two_members(tmp_path, nobody_dir)
    finally:
        shutil.rmtree(nobody_dir, ignore_errors=True)


def _two_members(tmp_path: Path, nobody_dir: Path) -> None:
    with vpn_lab(tmp_path) as vlab:
        lab = vlab.lab
        a = vlab.add_member("a", lab.add_nat_host("a"), vlab.founder_network())
        # b drops root for "nobody" right after creating its TUN device: its addresses are
        # only known once it met a, so it configures them with CAP_NET_ADMIN alone
        b = vlab.add_member(
            "b", lab.add_nat_host("b"), {"invite": vlab.invite(a), "user": "nobody"}, nobody_dir
        )
        nobody = pwd.getpwnam("nobody")
        for path in (b.workdir, b.profile, b.config):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
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

        # `tunnel status` shows the VPN: addresses, the member and how it is reached (the
        # pings above may have gone through the relay while hole punching was under way)
        def status_text() -> str:
            return subprocess.run(
                [sys.executable, "-m", "tunnel", "status", str(a.status)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout

        vlab.wait_until(
            "a's status shows b on a direct path",
            lambda: "connected via udp" in status_text(),
            MESH_TIMEOUT_S,
            1.0,
        )
        out = status_text()

        def fast_in(member: Member) -> int:
            counters = member.vpn().get("counters")
            assert isinstance(counters, dict)
            return int(counters.get("in_fast", 0))

        # on the direct path, b's replies are opened on a's TUN thread (no Trio round)
        vlab.wait_until(
            "b's ping replies reach a on the fast path",
            lambda: vlab.ping(a, vlab.address(b, 4)) and fast_in(a) > 0,
            MESH_TIMEOUT_S,
            0.5,
        )
        assert vlab.address(a, 4) in out
        assert f"member {vlab.key(b)[:16]}... {vlab.address(b, 4)}" in out
        assert "connected via udp" in out
        # b runs as nobody and could still save its state next to its profile
        assert b.proc is not None
        status = Path(f"/proc/{b.proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uids.split()[1] == str(nobody.pw_uid), uids
        assert list(b.workdir.glob("profile.tox.vpn-*.json"))
