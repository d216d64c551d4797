"""Path MTU probing through ``VpnNode`` over real Tox, without root (issue 9).

Two in-process Nodes on loopback via a real tox-bootstrapd, each running the VPN control
plane only (no TUN: probes and acks arrive as node events, not through the session sinks),
both with ``mtu: 9000``. Once the HELLOs agreed on 9000 and the friends reach each other
by direct UDP, each side's 9000-byte probe is answered and the route's cap rises from 1372
to 9000; the statistics show it.

Ports 52760-52799 (this file's share of 52700-52799).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.wire.vpn import MAX_IP_PACKET_BYTES

from .vpn_loopback import member_row, section, two_members

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

PORTS = (52760, 52799)
LARGE_MTU = 9000
CONNECT_TIMEOUT_S = 60.0
PROBE_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def port_pool() -> PortPool:
    return PortPool(*PORTS)


async def test_probe_raises_the_cap_between_two_members(
    tmp_path: Path, port_pool: PortPool, bootstrapd: Bootstrapd
) -> None:
    (node_a, node_b), vpns = two_members(
        tmp_path, port_pool, bootstrapd, {"ipv4_pool": "10.125.0.0/24"}, mtu=LARGE_MTU
    )
    vpn_a, vpn_b = vpns
    async with trio.open_nursery() as nursery:
        for node in (node_a, node_b):
            await nursery.start(node.run)
        for vpn in vpns:
            await nursery.start(vpn.run)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await node_a.wait_for(
                lambda: (
                    node_b.public_key in vpn_a.membership.verified_peers()
                    and node_a.public_key in vpn_b.membership.verified_peers()
                )
            )
        # agreed on 9000, but capped until the path is proven
        for vpn, peer in ((vpn_a, node_b), (vpn_b, node_a)):
            entry = member_row(vpn, peer.public_key)
            assert entry["packet_limit"] == LARGE_MTU
            assert entry["path_cap"] in (MAX_IP_PACKET_BYTES, LARGE_MTU)
        with trio.fail_after(PROBE_TIMEOUT_S):
            for vpn, node, peer in ((vpn_a, node_a, node_b), (vpn_b, node_b, node_a)):
                await node.wait_for(
                    lambda v=vpn, p=peer: member_row(v, p.public_key)["path_cap"] == LARGE_MTU
                )
        for vpn, peer in ((vpn_a, node_b), (vpn_b, node_a)):
            pmtu = section(vpn, "pmtu")
            assert int(str(pmtu["probes_sent"])) >= 1
            assert int(str(pmtu["probes_acked"])) >= 1
            assert int(str(pmtu["probes_answered"])) >= 1
            assert pmtu["probe_bad"] == 0
            members = pmtu["members"]
            assert isinstance(members, dict)
            state = members[peer.public_key.hex().upper()]
            assert state["cap"] == state["limit"] == LARGE_MTU
            assert state["direct"] is True
            assert vpn.engine.negotiated_limit(peer.public_key) == LARGE_MTU
        nursery.cancel_scope.cancel()
