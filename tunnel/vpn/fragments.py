"""Reassembly of IP packets split into VPN fragments (issue 9, large IP packets).

Two of our own members that agreed on IP packets larger than toxcore's 1372 bytes split one
that is larger than the route's current cap (relayed, or a direct path not proven yet) into
lossy 0xE8 fragments (:mod:`tunnel.wire.vpn_fragment`) instead of answering with ICMP "too
big": the kernel would keep the smaller MTU for 10 minutes after the path is proven. The
receiver joins them here; the whole packet then goes through the same checks as one that
came whole (:meth:`tunnel.vpn.engine.VpnEngine.inbound_fragment`).

Sans-IO (``now`` passed in), called from one receiving thread; :meth:`Reassembler.forget`
may come from the control plane. Bounded memory: per member at most
``MAX_PARTIAL_PACKETS`` packets in reassembly (a new one evicts the oldest), each kept at
most ``REASSEMBLY_TIMEOUT_S`` after its first fragment, each no larger than the limit agreed
with that member. Garbage, duplicates, counts that disagree with the packet's first fragment
and packets above the agreed limit are dropped and counted, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tunnel.errors import BadPacket
from tunnel.wire.vpn import MAX_IP_PACKET_BYTES
from tunnel.wire.vpn_fragment import (
    FRAGMENT_DATA_BYTES,
    fragment_count,
    parse_fragment_untrusted,
)

MAX_PARTIAL_PACKETS = 8
"""Packets in reassembly per member at most (the oldest is dropped for a new one)."""
REASSEMBLY_TIMEOUT_S = 1.5
"""A packet whose fragments did not all arrive within this time is dropped."""


@dataclass(frozen=True)
class ReassemblyStats:
    """A snapshot of the reassembler's counters (fragments, except ``in_reassembled``)."""

    in_fragments: int = 0
    in_reassembled: int = 0
    """Whole packets put back together (then checked like any packet from the member)."""
    in_fragment_dropped: int = 0
    """Every fragment that did not end up in a packet, for one of the reasons below."""
    in_fragment_bad: int = 0
    in_fragment_unexpected: int = 0
    """From a member that did not agree on large packets."""
    in_fragment_duplicate: int = 0
    in_fragment_inconsistent: int = 0
    """Its count disagrees with the packet's earlier fragments (all of them dropped)."""
    in_fragment_oversize: int = 0
    """The packet would be larger than the limit agreed with the member."""
    in_fragment_expired: int = 0
    """In a packet that timed out or was evicted for a newer one."""


class _Partial:
    """One packet in reassembly."""

    __slots__ = ("buffer", "count", "deadline", "have", "length", "received")

    def __init__(self, count: int, deadline: float) -> None:
        self.buffer = bytearray(count * FRAGMENT_DATA_BYTES)
        self.count = count
        self.deadline = deadline
        self.have = 0  # bit i: fragment i arrived
        self.received = 0
        self.length = 0  # known once the last fragment arrived


class Reassembler:
    """Joins fragments per member (see module docstring)."""

    def __init__(
        self,
        *,
        timeout: float = REASSEMBLY_TIMEOUT_S,
        max_partial: int = MAX_PARTIAL_PACKETS,
    ) -> None:
        self.timeout = timeout
        self.max_partial = max_partial
        self._members: dict[bytes, dict[int, _Partial]] = {}
        self.in_fragments = 0
        self.in_reassembled = 0
        self.in_fragment_bad = 0
        self.in_fragment_unexpected = 0
        self.in_fragment_duplicate = 0
        self.in_fragment_inconsistent = 0
        self.in_fragment_oversize = 0
        self.in_fragment_expired = 0

    def receive_untrusted(
        self, public_key: bytes, data: bytes | memoryview, limit: int | None, now: float
    ) -> memoryview | None:
        """A lossy 0xE8 packet (id byte included) from a member with whom ``limit`` (None:
        no large limit) was agreed; the whole IP packet once its last fragment arrived."""
        self.in_fragments += 1
        if limit is None or limit <= MAX_IP_PACKET_BYTES:
            self.in_fragment_unexpected += 1
            return None
        try:
            number, index, count, body = parse_fragment_untrusted(data)
        except BadPacket:
            self.in_fragment_bad += 1
            return None
        if count > fragment_count(limit) or (
            index == count - 1 and index * FRAGMENT_DATA_BYTES + len(body) > limit
        ):
            self.in_fragment_oversize += 1 + self._drop(public_key, number)
            return None
        partials = self._members.get(public_key)
        if partials is None:
            partials = self._members[public_key] = {}
        partial = partials.get(number)
        if partial is not None and partial.deadline <= now:
            self.in_fragment_expired += self._drop(public_key, number)
            partial = None
        if partial is None:
            self._expire(partials, now)
            partial = partials[number] = _Partial(count, now + self.timeout)
        elif partial.count != count:
            self.in_fragment_inconsistent += 1 + self._drop(public_key, number)
            return None
        bit = 1 << index
        if partial.have & bit:
            self.in_fragment_duplicate += 1
            return None
        partial.have |= bit
        partial.received += 1
        offset = index * FRAGMENT_DATA_BYTES
        partial.buffer[offset : offset + len(body)] = body
        if index == count - 1:
            partial.length = offset + len(body)
        if partial.received < count:
            return None
        del partials[number]
        self.in_reassembled += 1
        return memoryview(partial.buffer)[: partial.length]

    def _expire(self, partials: dict[int, _Partial], now: float) -> None:
        """Before a new packet starts: drop the timed-out ones, and the oldest if full."""
        for number in [n for n, p in partials.items() if p.deadline <= now]:
            self.in_fragment_expired += partials.pop(number).received
        while len(partials) >= self.max_partial:
            self.in_fragment_expired += partials.pop(next(iter(partials))).received

    def _drop(self, public_key: bytes, number: int) -> int:
        """Drop a packet in reassembly; how many fragments it had."""
        partials = self._members.get(public_key)
        partial = None if partials is None else partials.pop(number, None)
        return 0 if partial is None else partial.received

    def forget(self, public_key: bytes) -> None:
        """The member went away: drop its packets in reassembly."""
        partials = self._members.pop(public_key, None)
        if partials:
            self.in_fragment_expired += sum(p.received for p in partials.values())

    def pending(self, public_key: bytes) -> int:
        """Packets in reassembly from this member."""
        return len(self._members.get(public_key, ()))

    def statistics(self) -> ReassemblyStats:
        """A frozen snapshot of every counter."""
        values = {
            f.name: getattr(self, f.name)
            for f in fields(ReassemblyStats)
            if f.name != "in_fragment_dropped"
        }
        dropped = sum(v for k, v in values.items() if k.startswith("in_fragment_"))
        return ReassemblyStats(**values, in_fragment_dropped=dropped)
