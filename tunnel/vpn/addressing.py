"""Deterministic VPN addresses: every member derives everyone's addresses from public keys.

Issue 9 "Addressing". Every member holds the same member records (public key plus optional
pinned IPv4/IPv6 address, spread by :mod:`tunnel.vpn.membership`), and runs the same pure
function :meth:`AddressPlan.assign` over them, so every member computes the same table without
any coordination messages.

Derivation (one address family at a time, pool of ``n`` usable addresses):

* candidate ``i`` of key ``pk`` is ``H(tag || family || i || pk) mod n`` (``H`` = SHA-256,
  first 8 bytes big-endian), mapped onto the usable addresses: for IPv4 everything in the pool
  but the network and broadcast addresses (a /31 or /32 pool uses all its addresses); for IPv6
  everything in the prefix but the all-zero interface id (the subnet-router anycast address,
  RFC 4291 section 2.6.1);
* pins first: members are taken in ascending public-key order; a pin inside the pool that is
  still free is granted; a pin that is taken (two members pinned the same address) or outside
  the pool is dropped and that member is derived like the others (recorded in ``conflicts``);
* then rounds ``i = 0, 1, 2, ...``: every member still without an address proposes candidate
  ``i``; an address proposed by several members goes to the smallest public key; the others
  try again next round. After :data:`MAX_DERIVATION_ROUNDS` rounds the remaining members (in
  key order) take the first free address at or after their candidate 0 (linear probe), so
  assignment always finishes while the pool has room; with no room left a member gets no
  address (``None``) and a conflict is recorded.

Properties: the result depends only on the set of records (not on their order), a member's
address never depends on members that do not collide with it, and with a /16 IPv4 pool or any
IPv6 prefix collisions are rare. A newcomer whose key wins a tie can move an existing member
to its next candidate; pin addresses to rule that out for members that need stable addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from tunnel.crypto import sha256

DERIVATION_TAG = b"tunnel-vpn-address-v1"
MAX_DERIVATION_ROUNDS = 32
IPV6_MAX_PREFIX_LEN = 64
IPV6_ULA = ipaddress.IPv6Network("fc00::/7")

IPv4Address = ipaddress.IPv4Address
IPv6Address = ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class MemberPins:
    """One member's input to the plan: its key and optional pinned addresses."""

    public_key: bytes
    ipv4: IPv4Address | None = None
    ipv6: IPv6Address | None = None


@dataclass(frozen=True, slots=True)
class MemberAddresses:
    """One member's result: ``None`` when its family's pool had no room."""

    public_key: bytes
    ipv4: IPv4Address | None
    ipv6: IPv6Address | None


@dataclass(frozen=True)
class Assignment:
    """The whole table plus what had to be resolved (for logs and ``tunnel vpn status``)."""

    members: dict[bytes, MemberAddresses]
    conflicts: tuple[str, ...] = field(default=())

    def by_ipv4(self) -> dict[bytes, bytes]:
        """Packed IPv4 address -> public key (routing-table form)."""
        return {m.ipv4.packed: k for k, m in self.members.items() if m.ipv4 is not None}

    def by_ipv6(self) -> dict[bytes, bytes]:
        """Packed IPv6 address -> public key (routing-table form)."""
        return {m.ipv6.packed: k for k, m in self.members.items() if m.ipv6 is not None}


class _Family:
    """The usable address range of one pool as integers ``first .. first + size - 1``."""

    def __init__(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
        self.network = network
        base = int(network.network_address)
        total = network.num_addresses
        if network.version == 4:
            self.name = b"4"
            if network.prefixlen >= 31:
                self.first, self.size = base, total
            else:
                self.first, self.size = base + 1, total - 2
        else:
            self.name = b"6"
            self.first, self.size = base + 1, total - 1

    def candidate(self, public_key: bytes, round_index: int) -> int:
        digest = sha256(DERIVATION_TAG + self.name + round_index.to_bytes(2, "big") + public_key)
        return self.first + int.from_bytes(digest[:8], "big") % self.size

    def usable(self, value: int) -> bool:
        return self.first <= value < self.first + self.size

    def assign(self, pins: dict[bytes, int | None], conflicts: list[str]) -> dict[bytes, int]:
        taken: dict[int, bytes] = {}
        result: dict[bytes, int] = {}
        family = self.name.decode()
        for key in sorted(pins):
            pin = pins[key]
            if pin is None:
                continue
            if not self.usable(pin):
                conflicts.append(f"{key.hex()[:16]}: pinned IPv{family} outside the pool, derived")
            elif pin in taken:
                conflicts.append(
                    f"{key.hex()[:16]}: pinned IPv{family} already pinned by "
                    f"{taken[pin].hex()[:16]}, derived"
                )
            else:
                taken[pin] = key
                result[key] = pin
        waiting = sorted(key for key in pins if key not in result)
        for round_index in range(MAX_DERIVATION_ROUNDS):
            if not waiting or len(taken) >= self.size:
                break
            proposals: dict[int, bytes] = {}
            for key in waiting:  # ascending keys: the first proposer of an address wins it
                value = self.candidate(key, round_index)
                if value not in taken and value not in proposals:
                    proposals[value] = key
            for value, key in proposals.items():
                taken[value] = key
                result[key] = value
            if round_index == 0 and len(proposals) < len(waiting):
                conflicts.append(f"IPv{family}: {len(waiting) - len(proposals)} derived collisions")
            waiting = [key for key in waiting if key not in result]
        for key in waiting:
            start = self.candidate(key, 0) - self.first
            for step in range(self.size):
                value = self.first + (start + step) % self.size
                if value not in taken:
                    taken[value] = key
                    result[key] = value
                    break
            else:
                conflicts.append(f"{key.hex()[:16]}: IPv{family} pool exhausted, no address")
        return result


class AddressPlan:
    """A network's pools; :meth:`assign` maps member records to addresses (pure).

    Raises:
        ValueError: an IPv6 prefix longer than /64 or outside fc00::/7 (ULA), or an IPv4
            pool without a usable address.
    """

    def __init__(self, ipv4_pool: str | None, ipv6_prefix: str | None) -> None:
        self.ipv4_pool = None if ipv4_pool is None else ipaddress.IPv4Network(ipv4_pool)
        self.ipv6_prefix = None if ipv6_prefix is None else ipaddress.IPv6Network(ipv6_prefix)
        if self.ipv6_prefix is not None:
            if self.ipv6_prefix.prefixlen > IPV6_MAX_PREFIX_LEN:
                raise ValueError("IPv6 prefix must be /64 or shorter")
            if not self.ipv6_prefix.subnet_of(IPV6_ULA):
                raise ValueError("IPv6 prefix must be a unique local prefix (fc00::/7)")
        self._v4 = None if self.ipv4_pool is None else _Family(self.ipv4_pool)
        self._v6 = None if self.ipv6_prefix is None else _Family(self.ipv6_prefix)
        if self._v4 is not None and self._v4.size < 1:
            raise ValueError("IPv4 pool has no usable address")

    def derive_ipv4(self, public_key: bytes) -> IPv4Address | None:
        """Candidate 0 for ``public_key`` (its address unless it collides)."""
        if self._v4 is None:
            return None
        return IPv4Address(self._v4.candidate(public_key, 0))

    def derive_ipv6(self, public_key: bytes) -> IPv6Address | None:
        """Candidate 0 for ``public_key`` (its address unless it collides)."""
        if self._v6 is None:
            return None
        return IPv6Address(self._v6.candidate(public_key, 0))

    def assign(self, records: Iterable[MemberPins]) -> Assignment:
        """Addresses for every record (duplicate keys: the last record wins)."""
        by_key = {record.public_key: record for record in records}
        conflicts: list[str] = []
        v4: dict[bytes, int] = {}
        v6: dict[bytes, int] = {}
        if self._v4 is not None:
            pins4 = {k: None if r.ipv4 is None else int(r.ipv4) for k, r in by_key.items()}
            v4 = self._v4.assign(pins4, conflicts)
        if self._v6 is not None:
            pins6 = {k: None if r.ipv6 is None else int(r.ipv6) for k, r in by_key.items()}
            v6 = self._v6.assign(pins6, conflicts)
        members = {
            key: MemberAddresses(
                key,
                IPv4Address(v4[key]) if key in v4 else None,
                IPv6Address(v6[key]) if key in v6 else None,
            )
            for key in sorted(by_key)
        }
        return Assignment(members, tuple(conflicts))
