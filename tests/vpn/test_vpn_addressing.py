"""Deterministic address derivation, conflict resolution and pinning."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import sha256
from tunnel.testing.rng import SeededRng
from tunnel.vpn.addressing import (
    DERIVATION_TAG,
    AddressPlan,
    MemberPins,
)

KEY_A = bytes(range(32))


def keys(n: int, seed: int = 1) -> list[bytes]:
    rng = SeededRng(seed)
    return [rng(32) for _ in range(n)]


def test_golden_derivation() -> None:
    plan = AddressPlan("10.77.0.0/16", "fd12:3456:789a::/48")
    digest4 = sha256(DERIVATION_TAG + b"4" + b"\x00\x00" + KEY_A)
    expected4 = int(ipaddress.IPv4Address("10.77.0.1")) + int.from_bytes(digest4[:8], "big") % (
        65534
    )
    assert plan.derive_ipv4(KEY_A) == ipaddress.IPv4Address(expected4)
    digest6 = sha256(DERIVATION_TAG + b"6" + b"\x00\x00" + KEY_A)
    base6 = int(ipaddress.IPv6Address("fd12:3456:789a::"))
    expected6 = base6 + 1 + int.from_bytes(digest6[:8], "big") % (2**80 - 1)
    assert plan.derive_ipv6(KEY_A) == ipaddress.IPv6Address(expected6)
    # Frozen values: changing the derivation would renumber every deployed network.
    assert str(plan.derive_ipv4(KEY_A)) == "10.77.123.193"
    assert str(plan.derive_ipv6(KEY_A)) == "fd12:3456:789a:0:7126:9116:4180:37a2"


def test_addresses_inside_pool_and_usable() -> None:
    plan = AddressPlan("10.9.8.0/29", "fd00:1::/64")
    result = plan.assign(MemberPins(k) for k in keys(6))
    seen4 = set()
    for member in result.members.values():
        assert member.ipv4 is not None
        assert member.ipv6 is not None
        assert member.ipv4 in ipaddress.IPv4Network("10.9.8.0/29")
        assert member.ipv4 not in (
            ipaddress.IPv4Address("10.9.8.0"),
            ipaddress.IPv4Address("10.9.8.7"),
        )
        assert member.ipv6 in ipaddress.IPv6Network("fd00:1::/64")
        assert member.ipv6 != ipaddress.IPv6Address("fd00:1::")
        seen4.add(member.ipv4)
    assert len(seen4) == 6  # the whole /29 is used, no duplicates


def test_order_independent_and_same_everywhere() -> None:
    plan = AddressPlan("10.1.0.0/28", "fd00::/64")
    members = [MemberPins(k) for k in keys(12)]
    first = plan.assign(members)
    second = AddressPlan("10.1.0.0/28", "fd00::/64").assign(reversed(members))
    assert first == second
    assert len(first.by_ipv4()) == 12
    assert first.conflicts  # 12 in a pool of 14: the birthday paradox guarantees collisions


def test_pool_exhausted() -> None:
    plan = AddressPlan("10.1.0.0/30", None)  # 2 usable addresses
    result = plan.assign(MemberPins(k) for k in keys(3))
    got = [m.ipv4 for m in result.members.values()]
    assert got.count(None) == 1
    assert any("exhausted" in c for c in result.conflicts)
    assert all(m.ipv6 is None for m in result.members.values())


def test_pins_win_and_conflicting_pins_resolve_by_key() -> None:
    plan = AddressPlan("10.5.0.0/24", "fd00::/64")
    low, high, other = sorted(keys(3, seed=7))
    pin = ipaddress.IPv4Address("10.5.0.42")
    result = plan.assign(
        [
            MemberPins(high, ipv4=pin),
            MemberPins(low, ipv4=pin, ipv6=ipaddress.IPv6Address("fd00::42")),
            MemberPins(other, ipv4=ipaddress.IPv4Address("192.0.2.1")),
        ]
    )
    assert result.members[low].ipv4 == pin
    assert result.members[low].ipv6 == ipaddress.IPv6Address("fd00::42")
    assert result.members[high].ipv4 != pin
    assert result.members[other].ipv4 in ipaddress.IPv4Network("10.5.0.0/24")
    assert any("already pinned" in c for c in result.conflicts)
    assert any("outside the pool" in c for c in result.conflicts)


def test_pin_displaces_derived_member() -> None:
    plan = AddressPlan("10.5.0.0/24", None)
    a, b = keys(2, seed=3)
    a_addr = plan.derive_ipv4(a)
    result = plan.assign([MemberPins(a), MemberPins(b, ipv4=a_addr)])
    assert result.members[b].ipv4 == a_addr
    assert result.members[a].ipv4 != a_addr


def test_small_pools() -> None:
    only = AddressPlan("10.0.0.5/32", None).assign([MemberPins(KEY_A)])
    assert only.members[KEY_A].ipv4 == ipaddress.IPv4Address("10.0.0.5")
    pair = AddressPlan("10.0.0.4/31", None).assign(MemberPins(k) for k in keys(2))
    assert {m.ipv4 for m in pair.members.values()} == {
        ipaddress.IPv4Address("10.0.0.4"),
        ipaddress.IPv4Address("10.0.0.5"),
    }


@pytest.mark.parametrize(
    ("v4", "v6", "match"),
    [
        (None, "fd00::/80", "/64 or shorter"),
        (None, "2001:db8::/64", "unique local"),
        ("10.0.0.0/33", None, "netmask"),
    ],
)
def test_bad_pools(v4: str | None, v6: str | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AddressPlan(v4, v6)


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=10**6))
def test_unique_and_deterministic(n: int, seed: int) -> None:
    plan = AddressPlan("10.2.0.0/26", "fd00:2::/64")  # 62 usable IPv4 addresses
    members = [MemberPins(k) for k in keys(n, seed)]
    result = plan.assign(members)
    v4 = [m.ipv4 for m in result.members.values()]
    assert None not in v4
    assert len(set(v4)) == n
    assert result == plan.assign(list(reversed(members)))
