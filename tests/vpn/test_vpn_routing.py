"""The VPN routing table: routes, drops and their counters, anti-spoofing, too-big handling."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from tunnel.vpn.addressing import AddressPlan, Assignment, MemberPins
from tunnel.vpn.ip import check_packet
from tunnel.vpn.routing import DEFAULT_MEMBER_PACKET_LIMIT_BYTES, Route, VpnRouter
from tunnel.wire.vpn import VPN_DATA_PACKET_ID
from tunnel.wire.vpn_fragment import decode_fragment_untrusted

from .test_vpn_ip import ipv4_packet, ipv6_packet

ME, ALICE, BOB = (bytes([i]) * 32 for i in (1, 2, 3))
V4 = {
    ME: ipaddress.IPv4Address("10.9.0.1"),
    ALICE: ipaddress.IPv4Address("10.9.0.2"),
    BOB: ipaddress.IPv4Address("10.9.0.3"),
}
V6 = {
    ME: ipaddress.IPv6Address("fd00::1"),
    ALICE: ipaddress.IPv6Address("fd00::2"),
    BOB: ipaddress.IPv6Address("fd00::3"),
}


def assignment() -> Assignment:
    plan = AddressPlan("10.9.0.0/24", "fd00::/64")
    return plan.assign(MemberPins(k, V4[k], V6[k]) for k in (ME, ALICE, BOB))


def router(
    online: tuple[bytes, ...] = (ALICE,), limits: dict[bytes, int] | None = None
) -> VpnRouter:
    r = VpnRouter(ME, tun_mtu=1400)
    r.update(assignment(), online, limits)
    return r


def test_outbound_routes_by_destination() -> None:
    r = router(online=(ALICE, BOB))
    pkt = ipv4_packet("10.9.0.1", "10.9.0.2")
    assert r.route_outbound(pkt, len(pkt)) == Route(ALICE, DEFAULT_MEMBER_PACKET_LIMIT_BYTES)
    pkt6 = ipv6_packet("fd00::1", "fd00::3")
    route = r.route_outbound(memoryview(pkt6), len(pkt6))
    assert route is not None
    assert route.public_key == BOB
    assert r.statistics().out_routed == 2


def test_outbound_drops_are_counted() -> None:
    r = router(online=(ALICE,))
    cases = [
        ipv4_packet("10.9.0.1", "10.9.0.3"),  # bob is offline
        ipv4_packet("10.9.0.1", "10.9.0.99"),  # nobody
        ipv4_packet("10.9.0.1", "224.0.0.251"),  # mDNS
        ipv6_packet("fd00::1", "ff02::2"),  # router solicitation
        b"\x45\x00",  # garbage
    ]
    for pkt in cases:
        assert r.route_outbound(pkt, len(pkt)) is None
    stats = r.statistics()
    assert (stats.out_offline, stats.out_no_route, stats.out_multicast, stats.out_malformed) == (
        1,
        1,
        2,
        1,
    )
    assert stats.out_routed == 0


def test_outbound_too_big_gives_icmp_or_fragments() -> None:
    r = router(online=(ALICE,), limits={ALICE: 600})
    df = ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 1000, flags=0x4000)
    assert r.route_outbound(df, len(df)) is None
    replies = r.take_local_replies()
    assert len(replies) == 1
    assert replies[0][20:22] == b"\x03\x04"
    assert r.take_local_replies() == []

    no_df = ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 1000, flags=0)
    route = r.route_outbound(no_df, len(no_df))
    assert route is not None
    assert route.public_key == ALICE
    fragments = r.take_fragments()
    assert len(fragments) == 2
    assert all(len(f) <= 1 + 600 and f[0] == VPN_DATA_PACKET_ID for f in fragments)
    assert r.fragments == []

    v6 = ipv6_packet("fd00::1", "fd00::2", payload=b"y" * 1000)
    assert r.route_outbound(v6, len(v6)) is None
    (reply6,) = r.take_local_replies()
    assert reply6[40] == 2
    stats = r.statistics()
    assert stats.out_too_big == 2
    assert stats.out_fragmented == 1


def test_members_that_agreed_get_vpn_fragments_instead_of_icmp() -> None:
    """ALICE agreed on 9000 but its path is capped at 1372 (relayed or not probed yet): a
    packet up to 9000 bytes is split into VPN fragments, never answered with ICMP (the
    kernel would keep 1372 for 10 minutes); only one above 9000 gets ICMP, telling 9000.
    BOB did not agree (1372): ICMP as before."""
    r = VpnRouter(ME, tun_mtu=9000)
    r.update(assignment(), (ALICE, BOB), {ALICE: 1372, BOB: 1372}, {ALICE: 9000, BOB: 1372})
    for packet in (
        ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 3000, flags=0x4000),
        ipv6_packet("fd00::1", "fd00::2", payload=b"y" * 8000),
    ):
        route = r.route_outbound(packet, len(packet))
        assert route == Route(ALICE, 1372, 9000)
        pieces = [decode_fragment_untrusted(f) for f in r.take_fragments()]
        assert len({f.number for f in pieces}) == 1
        assert b"".join(bytes(f.data) for f in pieces) == packet
        assert r.take_local_replies() == []
    # above the agreed limit: ICMP with the agreed limit, or IP fragments (no DF)
    huge = ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 9000, flags=0x4000)
    assert r.route_outbound(huge, len(huge)) is None
    (reply,) = r.take_local_replies()
    assert int.from_bytes(reply[26:28], "big") == 9000  # next-hop MTU
    huge_no_df = ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 9000, flags=0)
    assert r.route_outbound(huge_no_df, len(huge_no_df)) is not None
    ip_fragments = r.take_fragments()
    assert all(f[0] == VPN_DATA_PACKET_ID and len(f) <= 1373 for f in ip_fragments)
    # BOB did not agree: ICMP with its 1372
    df = ipv4_packet("10.9.0.1", "10.9.0.3", payload=b"x" * 3000, flags=0x4000)
    assert r.route_outbound(df, len(df)) is None
    (reply,) = r.take_local_replies()
    assert int.from_bytes(reply[26:28], "big") == 1372
    # ALICE's path proven: the cap lifted, no splitting
    r.update(assignment(), (ALICE,), {ALICE: 9000}, {ALICE: 9000})
    big = ipv4_packet("10.9.0.1", "10.9.0.2", payload=b"x" * 8000, flags=0x4000)
    assert r.route_outbound(big, len(big)) == Route(ALICE, 9000)
    assert r.fragments == []
    stats = r.statistics()
    assert (stats.out_split, stats.out_too_big, stats.out_fragmented) == (2, 2, 1)


def test_inbound_anti_spoofing_and_destination() -> None:
    r = router(online=(ALICE, BOB))
    good = ipv4_packet("10.9.0.2", "10.9.0.1")
    assert r.check_inbound(ALICE, good, len(good))
    good6 = ipv6_packet("fd00::2", "fd00::1")
    assert r.check_inbound(ALICE, bytearray(good6), len(good6))
    spoofed = ipv4_packet("10.9.0.3", "10.9.0.1")  # bob's address, sent by alice
    assert not r.check_inbound(ALICE, spoofed, len(spoofed))
    outside = ipv4_packet("192.0.2.7", "10.9.0.1")
    assert not r.check_inbound(ALICE, outside, len(outside))
    transit = ipv4_packet("10.9.0.2", "10.9.0.3")  # no forwarding through us
    assert not r.check_inbound(ALICE, transit, len(transit))
    stranger = bytes([9]) * 32
    assert not r.check_inbound(stranger, good, len(good))
    oversize = ipv4_packet("10.9.0.2", "10.9.0.1", payload=b"z" * 1400)
    assert not r.check_inbound(ALICE, oversize, len(oversize))
    assert not r.check_inbound(ALICE, b"\x60", 1)
    stats = r.statistics()
    assert stats.in_accepted == 2
    assert stats.in_spoofed == 2
    assert stats.in_not_for_us == 1
    assert stats.in_unknown_member == 1
    assert stats.in_oversize == 1
    assert stats.in_malformed == 1


def test_update_replaces_table() -> None:
    r = router(online=(ALICE,))
    pkt = ipv4_packet("10.9.0.1", "10.9.0.2")
    assert r.route_outbound(pkt, len(pkt)) is not None
    r.update(assignment(), online=())
    assert r.route_outbound(pkt, len(pkt)) is None
    assert r.member_addresses(ALICE) == {V4[ALICE].packed, V6[ALICE].packed}
    r.update(Assignment({}), online=())
    assert r.member_addresses(ALICE) == frozenset()


@given(st.binary(max_size=100))
def test_random_input_never_raises(data: bytes) -> None:
    r = router(online=(ALICE, BOB))
    r.route_outbound(data, len(data))
    accepted = r.check_inbound(ALICE, data, len(data))
    if accepted:
        assert check_packet(data, len(data)) in (4, 6)
