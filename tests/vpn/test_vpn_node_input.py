"""Bad input from a member over real Tox is dropped and counted by ``VpnNode`` (issue 9).

Two in-process Nodes on loopback via a real tox-bootstrapd: ``a`` runs the VPN with a TUN
device (moved into a lab namespace), ``b`` is a verified member without a TUN that then sends
``a`` hand-made lossy packets: malformed IP, a spoofed source address, an oversize packet, a
wrong packet id, and one good echo request (the only one that reaches a's TUN).
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from pathlib import Path

import pytest
import trio

from tunnel.io.node_runner import load_or_create_profile
from tunnel.io.tun import TunDevice
from tunnel.io.vpn_node import VpnNode
from tunnel.io.vpn_setup import build_membership, load_state
from tunnel.node import Node
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.netlab import NetLab, unavailable_reason
from tunnel.testing.node_options import loopback_options
from tunnel.testing.ports import PortPool
from tunnel.vpn.config import parse_vpn_config
from tunnel.vpn.ip import internet_checksum
from tunnel.wire.vpn import VPN_DATA_PACKET_ID

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

PORTS = (52200, 52299)
TUN_MTU = 1280
CONNECT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def port_pool() -> PortPool:
    return PortPool(*PORTS)


def _ipv4(src: str, dst: str, payload: bytes, proto: int = 1) -> bytes:
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        0x1234,
        0x4000,
        64,
        proto,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    checksum = internet_checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + payload


def _echo(ident: int = 0x4242) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"tunnel-bad-input"
    checksum = internet_checksum(body)
    return body[:2] + struct.pack("!H", checksum) + body[4:]


async def test_bad_input_from_a_member_is_dropped_and_counted(
    tmp_path: Path, port_pool: PortPool, bootstrapd: Bootstrapd
) -> None:
    secret = secrets.token_hex(32)
    network = {"secret": secret, "ipv4_pool": "10.124.0.0/24", "mtu": TUN_MTU}
    config_a = parse_vpn_config({**network, "interface": "tnlbad0"})
    profiles = [load_or_create_profile(tmp_path / f"{n}.tox") for n in ("a", "b")]
    config_b = parse_vpn_config(
        {"invite": f"tunnel-vpn:{profiles[0].tox_id}:{secret}", "mtu": TUN_MTU}
    )
    with NetLab() as lab:
        host = lab.add_public_host("a")
        tun = TunDevice("tnlbad0", netns=host.netns)
        try:
            node_a = Node(profiles[0], loopback_options(port_pool, bootstrapd))
            node_b = Node(profiles[1], loopback_options(port_pool, bootstrapd))
            vpn_a = VpnNode(
                node_a,
                config_a,
                build_membership(config_a, node_a.tox_id, load_state(None, config_a)),
                tun,
            )
            vpn_b = VpnNode(
                node_b,
                config_b,
                build_membership(config_b, node_b.tox_id, load_state(None, config_b)),
                None,
            )
            async with trio.open_nursery() as nursery:
                for node in (node_a, node_b):
                    await nursery.start(node.run)
                await nursery.start(vpn_a.run)
                await nursery.start(vpn_b.run)
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await node_a.wait_for(
                        lambda: (
                            node_b.public_key in vpn_a.membership.verified_peers()
                            and bool(vpn_b.engine.own_interfaces())
                        )
                    )
                addr_a = vpn_a.engine.own_interfaces()[0].split("/")[0]
                addr_b = vpn_b.engine.own_interfaces()[0].split("/")[0]
                others = [
                    str(a)
                    for a in ipaddress.IPv4Network("10.124.0.0/24").hosts()
                    if str(a) not in (addr_a, addr_b)
                ]
                data = bytes([VPN_DATA_PACKET_ID])
                bad = {
                    "in_malformed": data + b"\x45\x00\x00\x10garbage",
                    "in_spoofed": data + _ipv4(others[0], addr_a, _echo()),
                    "in_oversize": data + _ipv4(addr_b, addr_a, _echo() + bytes(TUN_MTU)),
                }
                wrong_id = bytes([VPN_DATA_PACKET_ID + 1]) + _ipv4(addr_b, addr_a, _echo())
                good = data + _ipv4(addr_b, addr_a, _echo())

                def router() -> dict[str, int]:
                    stats = vpn_a.statistics()["router"]
                    assert isinstance(stats, dict)
                    return stats

                with trio.fail_after(20):
                    while True:
                        for packet in (*bad.values(), wrong_id, good):
                            node_b.send_lossy(node_a.public_key, packet)
                        await trio.sleep(0.2)
                        stats = router()
                        if (
                            all(stats[name] > 0 for name in bad)
                            and vpn_a.engine.inbound_wrong_id > 0
                            and stats["in_accepted"] > 0
                        ):
                            break
                counters = vpn_a.statistics()["counters"]
                assert isinstance(counters, dict)
                # every dropped packet is counted, and only good ones reach the TUN device
                assert counters["in_packets"] == stats["in_accepted"]
                assert counters["in_dropped"] >= sum(stats[name] for name in bad)
                # a's kernel answered the good echo request through the VPN
                with trio.fail_after(10):
                    await node_a.wait_for(lambda: _out_packets(vpn_a) > 0)
                # the TUN device disappears: a's VPN stops and says why
                lab.ip(host.netns, "link", "del", "tnlbad0")
                with trio.fail_after(10):
                    await node_a.wait_for(lambda: vpn_a.failure)
                assert vpn_a.failure is not None
                assert "tnlbad0" in vpn_a.failure
                nursery.cancel_scope.cancel()
        finally:
            tun.close()


def _out_packets(vpn: VpnNode) -> int:
    counters = vpn.statistics()["counters"]
    assert isinstance(counters, dict)
    return int(counters["out_packets"])
