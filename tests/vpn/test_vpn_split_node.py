"""Large IP packets split into VPN fragments through ``VpnNode`` over real Tox, no root
(issue 9, large IP packets).

Two in-process Nodes on loopback via a real tox-bootstrapd, each running the VPN without a
TUN device, both with ``mtu: 9000``: the HELLOs agree on 9000 but the route stays capped at
1372 because the path is not proven (each side ignores the other's path MTU probes, so no
probe is ever acked) or because one member has no UDP at all (relayed over the bootstrap
node's TCP relay). An 8000-byte IP packet handed to one member's TUN callback arrives whole
at the other's TUN writer, both ways: split into toxcore-sized fragments, reassembled,
checked; no ICMP "too big" (the kernel would keep 1372 for 10 minutes).

Ports 52600-52639 (this file's share of 52600-52699).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import trio

from tunnel.io.tun import PacketSlot
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.wire.vpn import MAX_IP_PACKET_BYTES

from .test_vpn_ip import ipv4_packet, ipv6_packet
from .vpn_loopback import member_row, section, two_members

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

PORTS = (52600, 52639)
LARGE_MTU = 9000
PACKET_BYTES = 8000
CONNECT_TIMEOUT_S = 90.0
DELIVERY_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def port_pool() -> PortPool:
    return PortPool(*PORTS)


def _slot(packet: bytes) -> PacketSlot:
    slot = PacketSlot(len(packet), 16)
    slot.buffer[slot.offset :] = packet
    slot.length = len(packet)
    return slot


@pytest.mark.parametrize("path", ["unprobed", "relayed"])
async def test_capped_route_carries_8000_byte_packets_as_fragments(
    tmp_path: Path,
    port_pool: PortPool,
    bootstrapd: Bootstrapd,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    network = {"ipv4_pool": "10.126.0.0/24", "ipv6_prefix": "fd7e::/64"}
    (node_a, node_b), vpns = two_members(
        tmp_path, port_pool, bootstrapd, network, mtu=LARGE_MTU, udp_b=path != "relayed"
    )
    received: dict[str, list[bytes]] = {"a": [], "b": []}
    arrived = {"a": trio.Event(), "b": trio.Event()}

    def collect(name: str, packets: list[memoryview]) -> None:
        received[name].extend(bytes(p) for p in packets)
        if len(received[name]) >= 2:
            arrived[name].set()

    for name, vpn in zip("ab", vpns, strict=True):
        # no TUN device: collect what would be written into it
        monkeypatch.setattr(vpn, "_write_tun", lambda ps, n=name: collect(n, ps))
        # never answer the other's probes: its route to us stays capped at 1372
        monkeypatch.setattr(vpn.large, "handle_packet", lambda key, payload: None)
    vpn_a, vpn_b = vpns
    async with trio.open_nursery() as nursery:
        for node in (node_a, node_b):
            await nursery.start(node.run)
        for vpn in vpns:
            await nursery.start(vpn.run)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await node_a.wait_for(
                lambda: (
                    vpn_a.engine.negotiated_limit(node_b.public_key) == LARGE_MTU
                    and vpn_b.engine.negotiated_limit(node_a.public_key) == LARGE_MTU
                    and bool(vpn_a.engine.own_interfaces())
                    and bool(vpn_b.engine.own_interfaces())
                )
            )
        for vpn, peer in ((vpn_a, node_b), (vpn_b, node_a)):
            assert member_row(vpn, peer.public_key)["path_cap"] == MAX_IP_PACKET_BYTES
        if path == "relayed":
            assert member_row(vpn_a, node_b.public_key)["path"] == "tcp"
        v4 = [ipaddress.IPv4Interface(v.engine.own_interfaces()[0]).ip for v in vpns]
        v6 = [ipaddress.IPv6Interface(v.engine.own_interfaces()[1]).ip for v in vpns]
        payload = bytes(range(256)) * 40
        for sender, receiver, src, dst in ((0, 1, "a", "b"), (1, 0, "b", "a")):
            packets = [
                ipv4_packet(str(v4[sender]), str(v4[receiver]), payload[: PACKET_BYTES - 20]),
                ipv6_packet(str(v6[sender]), str(v6[receiver]), payload[: PACKET_BYTES - 40]),
            ]
            vpns[sender]._on_tun_packets([_slot(p) for p in packets])
            with trio.fail_after(DELIVERY_TIMEOUT_S):
                await arrived[dst].wait()
            assert sorted(received[dst]) == sorted(packets), src
        for vpn in vpns:
            router = section(vpn, "router")
            assert router["out_split"] == 2
            assert router["out_too_big"] == 0
            assert router["in_accepted"] == 2
            fragments = section(vpn, "fragments")
            assert fragments["in_reassembled"] == 2
            assert fragments["in_fragments"] == 2 * 6
            assert fragments["in_fragment_dropped"] == 0
        nursery.cancel_scope.cancel()
