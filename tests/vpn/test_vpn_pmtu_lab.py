"""Path MTU probing end to end (issue 9): a large MTU is safe where IP fragments are dropped.

Two ``tunnel vpn`` members behind NATs over real Tox, both with ``mtu: 9000``. Their direct
UDP path goes through a's NAT router, which first DROPS every IP fragment (nftables
``netdev`` ingress on both its links, before conntrack could reassemble them), so a
9000-byte IP packet (one ~9 KB UDP datagram, fragmented on the 1500-byte links) never
arrives. The probes of 9000 bytes go unanswered, so the route stays capped below the
fragmenting size (the binary search finds the largest unfragmented probe): 8000-byte pings
with DF set and a few-MB TCP transfer through the TUN devices still work, both ways, because
packets above the cap are split into toxcore-sized VPN fragments; the VPN never answers
with ICMP "fragmentation needed", so the kernel keeps the 9000-byte MTU (no PMTU cache entry
for the peer). Without the drop rules the next search raises the cap to 9000 (statistics
show it); when fragments are dropped again, the periodic re-probe fails and the cap falls
back at once.

Ports 52700-52799 (bootstrapd 52700/52701, members from 52710, TCP test port 52750).
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest

from tunnel.testing.netlab import Host, unavailable_reason

from .vpn_node_lab import Member, VpnLab, vpn_lab

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

BASE_PORT = 52700
TCP_PORT = 52750
LARGE_MTU = 9000
UNFRAGMENTED_MAX = 1500 - 20 - 8  # the largest UDP payload a 1500-byte link carries whole
MESH_TIMEOUT_S = 90.0
FRAG_TABLE = "tnlfragdrop"
TRANSFER_BYTES = 4 << 20

SERVER = """
import hashlib, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
srv.settimeout(60)
print("listening", flush=True)
conn, _ = srv.accept()
conn.settimeout(60)
digest, total = hashlib.sha256(), 0
while chunk := conn.recv(1 << 16):
    digest.update(chunk)
    total += len(chunk)
print(total, digest.hexdigest(), flush=True)
"""

CLIENT = """
import hashlib, socket, sys
data = bytes(hashlib.sha256(i.to_bytes(4, "big")).digest()[0] for i in range(1 << 16))
data = data * (int(sys.argv[3]) // len(data))
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
sock.recv(1)
print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""


def _drop_fragments(vlab: VpnLab, host: Host) -> None:
    """Drop every IP fragment (first ones with MF set, later ones with an offset) entering
    ``host``'s NAT router from either side, before conntrack reassembles them."""
    assert host.router is not None
    chains = "".join(
        f"  chain {dev} {{\n"
        f'    type filter hook ingress device "{dev}" priority -500; policy accept;\n'
        "    ip frag-off & 0x3fff != 0 counter drop\n"
        "  }\n"
        for dev in ("wan", "lan")
    )
    vlab.lab.nft(
        host.router.netns,
        f"table netdev {FRAG_TABLE}\ndelete table netdev {FRAG_TABLE}\n"
        f"table netdev {FRAG_TABLE} {{\n{chains}}}\n",
    )


def _allow_fragments(vlab: VpnLab, host: Host) -> None:
    assert host.router is not None
    vlab.lab.nft(host.router.netns, f"delete table netdev {FRAG_TABLE}\n")


def _fragments_dropped(vlab: VpnLab, host: Host) -> int:
    assert host.router is not None
    out = vlab.lab.exec(host.router.netns, ["nft", "list", "table", "netdev", FRAG_TABLE])
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def _pmtu(member: Member, peer_key: str) -> dict[str, object]:
    pmtu = member.vpn().get("pmtu")
    if not isinstance(pmtu, dict):
        return {}
    members = pmtu.get("members")
    if not isinstance(members, dict):
        return {}
    found = members.get(peer_key)
    return found if isinstance(found, dict) else {}


def _cap(member: Member, peer_key: str) -> int:
    cap = _pmtu(member, peer_key).get("path_cap")
    return cap if isinstance(cap, int) else 0


def _ping(vlab: VpnLab, source: Member, target: str, *args: str) -> bool:
    result = vlab.lab.run(
        source.host,
        ["ping", "-n", "-c", "1", "-W", "2", *args, target],
        check=False,
        timeout=20,
    )
    return result.returncode == 0


def _route_mtu(vlab: VpnLab, member: Member, address: str) -> int | None:
    """The path MTU the kernel of ``member``'s host keeps for ``address`` (None: no entry
    below the device's MTU, i.e. nobody told it a smaller one)."""
    out = vlab.lab.run(member.host, ["ip", "route", "get", address], timeout=10).stdout
    found = re.search(r"\bmtu (\d+)", out)
    return None if found is None else int(found.group(1))


def _transfer(vlab: VpnLab, source: Member, target: Member, address: str) -> None:
    """Copy TRANSFER_BYTES over TCP from ``source`` to ``target`` and compare the hashes."""
    server = vlab.lab.popen(
        target.host, [sys.executable, "-c", SERVER, address, str(TCP_PORT)], stderr=None
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"listening"
        sent = vlab.lab.python(
            source.host, CLIENT, address, str(TCP_PORT), str(TRANSFER_BYTES), timeout=90
        ).split()
        received = server.communicate(timeout=30)[0].decode().split()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert sent == received, (sent, received)
    assert int(sent[0]) == TRANSFER_BYTES
    assert len(sent[1]) == len(hashlib.sha256().hexdigest())


def test_large_mtu_survives_a_path_that_drops_fragments(tmp_path: Path) -> None:
    with vpn_lab(tmp_path, BASE_PORT) as vlab:
        lab = vlab.lab
        host_a = lab.add_nat_host("a")
        _drop_fragments(vlab, host_a)
        a = vlab.add_member("a", host_a, {**vlab.founder_network(), "mtu": LARGE_MTU})
        b = vlab.add_member(
            "b", lab.add_nat_host("b"), {"invite": vlab.invite(a), "mtu": LARGE_MTU}
        )
        for member in (a, b):
            vlab.start(member)
        key_a, key_b = vlab.key(a), vlab.key(b)
        vlab.wait_until(
            "a and b connected",
            lambda: key_b in vlab.connected(a) and key_a in vlab.connected(b),
            MESH_TIMEOUT_S,
        )
        a4, b4 = vlab.address(a, 4), vlab.address(b, 4)
        vlab.wait_ping(a, b4)

        # 1. fragments dropped: 9000-byte probes fail on both sides, the caps stay below
        #    the fragmenting size (what the search proved, or 1372)
        for member, peer in ((a, key_b), (b, key_a)):
            vlab.wait_until(
                f"{member.name}: a 9000-byte probe round failed",
                lambda m=member, p=peer: int(str(_pmtu(m, p).get("rounds_failed", 0))) >= 1,
                MESH_TIMEOUT_S,
            )
        assert _fragments_dropped(vlab, host_a) > 0
        for member, peer in ((a, key_b), (b, key_a)):
            assert 1372 <= _cap(member, peer) <= UNFRAGMENTED_MAX, _pmtu(member, peer)
        for source, target in ((a, b4), (b, a4)):
            vlab.wait_until(
                f"{source.name} -> {target} 8000-byte ping (DF)",
                lambda s=source, t=target: _ping(vlab, s, t, "-M", "do", "-s", "8000"),
                30.0,
                0.2,
            )
        _transfer(vlab, a, b, b4)
        _transfer(vlab, b, a, a4)
        for member, peer, address in ((a, key_b, b4), (b, key_a, a4)):
            assert _cap(member, peer) <= UNFRAGMENTED_MAX, _pmtu(member, peer)
            router = member.vpn()["router"]
            assert isinstance(router, dict)
            assert router["out_too_big"] == 0  # split instead: the kernel was never told less
            assert router["out_split"] >= 1
            fragments = member.vpn()["fragments"]
            assert isinstance(fragments, dict)
            assert fragments["in_reassembled"] >= 1
            assert _route_mtu(vlab, member, address) is None

        # 2. the path heals: the next search finds the whole 9000 bytes
        _allow_fragments(vlab, host_a)
        for member, peer in ((a, key_b), (b, key_a)):
            vlab.wait_until(
                f"{member.name}: cap raised to {LARGE_MTU}",
                lambda m=member, p=peer: _cap(m, p) == LARGE_MTU,
                120.0,
                0.5,
            )
        members = a.vpn()["members"]
        assert isinstance(members, list)
        [entry] = [m for m in members if isinstance(m, dict) and m["public_key"] == key_b]
        assert entry["path_cap"] == LARGE_MTU
        assert entry["packet_limit"] == LARGE_MTU
        pmtu = a.vpn()["pmtu"]
        assert isinstance(pmtu, dict)
        assert int(pmtu["probes_acked"]) >= 1
        assert int(pmtu["probes_answered"]) >= 1

        # 3. fragments dropped again: the periodic re-probe fails, the cap falls back at once
        _drop_fragments(vlab, host_a)
        vlab.wait_until(
            "a: fallback after a failed re-probe",
            lambda: (
                int(str(_pmtu(a, key_b).get("fallbacks", 0))) >= 1
                and _cap(a, key_b) <= UNFRAGMENTED_MAX
            ),
            90.0,
            0.5,
        )
        _transfer(vlab, a, b, b4)
