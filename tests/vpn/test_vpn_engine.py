"""The VPN engine: membership events drive the routing table; framing in and out."""

from __future__ import annotations

import ipaddress

from tunnel.vpn.engine import OwnAddressesChanged, VpnEngine
from tunnel.vpn.ip import dst_address
from tunnel.vpn.membership import PeerDown, PeerUp
from tunnel.wire.vpn import VPN_DATA_PACKET_ID

from .test_vpn_ip import ipv4_packet, ipv6_packet
from .test_vpn_membership import PARAMS, build_mesh

HEADROOM = 8


def slot_with(packet: bytes) -> tuple[bytearray, int, int]:
    buffer = bytearray(HEADROOM + 2048)
    buffer[HEADROOM : HEADROOM + len(packet)] = packet
    return buffer, HEADROOM, len(packet)


def test_engines_agree_and_route_between_members() -> None:
    tox, nodes = build_mesh(3, seed=21, collect_events=False)
    engines = [VpnEngine(node, tun_mtu=1372) for node in nodes]
    own: list[OwnAddressesChanged] = []
    for engine in engines:
        events = engine.refresh()
        changes = [e for e in events if isinstance(e, OwnAddressesChanged)]
        assert len(changes) == 1
        own.append(changes[0])
        assert sum(isinstance(e, PeerUp) for e in events) == 2
    v4s = [change.ipv4 for change in own]
    assert all(v4 is not None and v4.network == PARAMS.ipv4_pool for v4 in v4s)
    assert len({str(v4) for v4 in v4s}) == 3
    assert engines[0].own_interfaces() == [str(own[0].ipv4), str(own[0].ipv6)]
    assert engines[0].assignment() == engines[1].assignment() == engines[2].assignment()

    a, b = engines[0], engines[1]
    a_v4, b_v4 = own[0].ipv4, own[1].ipv4
    assert a_v4 is not None
    assert b_v4 is not None
    packet = ipv4_packet(str(a_v4.ip), str(b_v4.ip), payload=b"over the mesh")
    buffer, offset, length = slot_with(packet)
    framed = a.outbound(buffer, offset, length)
    assert framed is not None
    key, data = framed
    assert key == nodes[1].own_key
    assert bytes(data) == bytes([VPN_DATA_PACKET_ID]) + packet
    assert data.obj is buffer  # framed in place, no copy
    delivered = b.inbound(nodes[0].own_key, bytes(data))
    assert delivered is not None
    assert bytes(delivered) == packet
    # c may not send from a's address
    assert b.inbound(nodes[2].own_key, bytes(data)) is None
    assert b.router.statistics().in_spoofed == 1
    assert b.inbound(nodes[0].own_key, b"\xc8" + packet) is None
    assert b.inbound_wrong_id == 1

    a_v6, b_v6 = own[0].ipv6, own[1].ipv6
    assert a_v6 is not None
    assert b_v6 is not None
    packet6 = ipv6_packet(str(a_v6.ip), str(b_v6.ip))
    framed6 = a.outbound(*slot_with(packet6))
    assert framed6 is not None
    assert dst_address(framed6[1][1:], 6) == b_v6.ip.packed

    # b goes away: a stops routing to it and counts the drops
    tox.go_down(nodes[1].own_key)
    tox.pump()
    events = a.refresh()
    assert PeerDown(nodes[1].own_key) in events
    assert a.outbound(*slot_with(packet)) is None
    assert a.router.statistics().out_offline == 1


def test_fragments_and_icmp_replies_come_out_after_the_batch() -> None:
    _tox, nodes = build_mesh(2, seed=22, collect_events=False)
    a, b = (VpnEngine(node, tun_mtu=1372) for node in nodes)
    a.refresh()
    b.refresh()
    a_ip = ipaddress.IPv4Interface(a.own_interfaces()[0]).ip
    b_ip = ipaddress.IPv4Interface(b.own_interfaces()[0]).ip
    big = ipv4_packet(str(a_ip), str(b_ip), payload=b"f" * 2000, flags=0)
    assert a.outbound(*slot_with(big)) is None
    extra = a.take_extra_packets()
    assert len(extra) == 2
    for key, data in extra:
        assert key == nodes[1].own_key
        assert data[0] == VPN_DATA_PACKET_ID
        assert b.inbound(nodes[0].own_key, data) is not None
    big_df = ipv4_packet(str(a_ip), str(b_ip), payload=b"f" * 2000, flags=0x4000)
    assert a.outbound(*slot_with(big_df)) is None
    (reply,) = a.take_local_replies()
    assert reply[20] == 3
    assert a.take_extra_packets() == []


def test_engine_before_parameters_are_known() -> None:
    _tox, nodes = build_mesh(1, seed=23, collect_events=False)
    nodes[0].params = None
    engine = VpnEngine(nodes[0])
    assert engine.refresh() == []
    assert engine.own_interfaces() == []
    assert engine.refresh() == []


def test_split_for_a_capped_path_reassembled_and_checked_like_a_whole_packet() -> None:
    """Two members that agreed on 9000 while a's path to b is capped at 1372: a's 8000-byte
    packet goes as VPN fragments (no ICMP), b joins them and checks the source like any
    packet; a forged fragment set from a's key with c's address is dropped as spoofed."""
    tox, nodes = build_mesh(3, seed=24, collect_events=False)
    for node in nodes:
        node.max_ip_packet = 9000
    for node in nodes[1:]:  # HELLOs again, announcing 9000
        tox.go_down(node.own_key)
        tox.pump()
        tox.come_up(node.own_key)
        tox.pump()
    a, b, _c = (VpnEngine(node, tun_mtu=9000) for node in nodes)
    a.refresh()
    b.refresh()
    key_a, key_b = nodes[0].own_key, nodes[1].own_key
    assert a.negotiated_limit(key_b) == b.negotiated_limit(key_a) == 9000
    a.set_path_cap(key_b, 1372)
    own = [ipaddress.IPv4Interface(i).ip for e in (a, b) for i in e.own_interfaces()[:1]]
    c_ip = b.assignment().members[nodes[2].own_key].ipv4
    big = ipv4_packet(str(own[0]), str(own[1]), payload=b"s" * 7980, flags=0x4000)
    buffer = bytearray(HEADROOM + len(big))
    buffer[HEADROOM:] = big
    assert a.outbound(buffer, HEADROOM, len(big)) is None
    assert a.take_local_replies() == []
    extra = a.take_extra_packets()
    assert len(extra) == 6
    assert {key for key, _ in extra} == {key_b}
    results = [b.inbound_fragment(key_a, data, 0.0) for _, data in extra]
    assert results[:-1] == [None] * 5
    assert results[-1] is not None
    assert bytes(results[-1]) == big
    # the same from a's key but with c's source address: reassembled, then refused
    spoofed = ipv4_packet(str(c_ip), str(own[1]), payload=b"s" * 7980, flags=0x4000)
    buffer[HEADROOM:] = spoofed
    a.outbound(buffer, HEADROOM, len(spoofed))
    assert [b.inbound_fragment(key_a, data, 0.0) for _, data in a.take_extra_packets()] == [
        None
    ] * 6
    assert b.router.statistics().in_spoofed == 1
    assert b.reassembler.statistics().in_reassembled == 2
    assert a.router.statistics().out_split == 2
    # a packet routed whole whose path turned relayed later: split by the control plane
    pieces = a.split(bytes([VPN_DATA_PACKET_ID]) + big)
    assert b.inbound_fragment(key_a, pieces[-1], 1.0) is None
    assert [b.inbound_fragment(key_a, p, 1.0) for p in pieces[:-2]] == [None] * 4
    whole = b.inbound_fragment(key_a, pieces[-2], 1.0)
    assert whole is not None
    assert bytes(whole) == big
    assert a.router.statistics().out_split_late == 1
