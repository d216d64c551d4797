"""Reassembly of VPN fragments (tunnel.vpn.fragments) with a virtual clock."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from tunnel.vpn.fragments import MAX_PARTIAL_PACKETS, REASSEMBLY_TIMEOUT_S, Reassembler
from tunnel.wire.vpn_fragment import FRAGMENT_DATA_BYTES, Fragment, split_packet

PEER = bytes([1]) * 32
OTHER = bytes([2]) * 32
LIMIT = 9000


def _packet(length: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(length)


def test_fragments_in_any_order_give_the_packet_back() -> None:
    r = Reassembler()
    packet = _packet(8000)
    pieces = split_packet(3, packet)
    assert len(pieces) == 6
    order = [5, 0, 3, 1, 4, 2]
    for i in order[:-1]:
        assert r.receive_untrusted(PEER, pieces[i], LIMIT, 0.0) is None
    assert r.pending(PEER) == 1
    whole = r.receive_untrusted(PEER, pieces[order[-1]], LIMIT, 0.5)
    assert whole is not None
    assert bytes(whole) == packet
    assert r.pending(PEER) == 0
    stats = r.statistics()
    assert (stats.in_fragments, stats.in_reassembled, stats.in_fragment_dropped) == (6, 1, 0)


def test_members_and_packet_numbers_are_kept_apart() -> None:
    r = Reassembler()
    a, b = _packet(3000, 1), _packet(3000, 2)
    pa, pb = split_packet(7, a), split_packet(7, b)
    pa2 = split_packet(8, b)
    assert r.receive_untrusted(PEER, pa[0], LIMIT, 0.0) is None
    assert r.receive_untrusted(OTHER, pb[0], LIMIT, 0.0) is None
    assert r.receive_untrusted(PEER, pa2[2], LIMIT, 0.0) is None
    assert r.receive_untrusted(PEER, pa[1], LIMIT, 0.0) is None
    assert r.receive_untrusted(OTHER, pb[1], LIMIT, 0.0) is None
    whole_b = r.receive_untrusted(OTHER, pb[2], LIMIT, 0.0)
    whole_a = r.receive_untrusted(PEER, pa[2], LIMIT, 0.0)
    assert whole_a is not None
    assert bytes(whole_a) == a
    assert whole_b is not None
    assert bytes(whole_b) == b
    assert r.pending(PEER) == 1  # packet 8 still waits


def test_duplicates_are_dropped_and_counted() -> None:
    r = Reassembler()
    packet = _packet(3000)
    pieces = split_packet(1, packet)
    r.receive_untrusted(PEER, pieces[0], LIMIT, 0.0)
    # a duplicate with other bytes (an overlap): the first one stays
    forged = Fragment(1, 0, 3, bytes(FRAGMENT_DATA_BYTES)).encode()
    assert r.receive_untrusted(PEER, forged, LIMIT, 0.0) is None
    r.receive_untrusted(PEER, pieces[1], LIMIT, 0.0)
    whole = r.receive_untrusted(PEER, pieces[2], LIMIT, 0.0)
    assert whole is not None
    assert bytes(whole) == packet
    # a late duplicate of a finished packet starts a new one that never completes
    assert r.receive_untrusted(PEER, pieces[2], LIMIT, 0.1) is None
    stats = r.statistics()
    assert stats.in_fragment_duplicate == 1
    assert stats.in_reassembled == 1


def test_inconsistent_counts_drop_the_packet() -> None:
    r = Reassembler()
    pieces = split_packet(4, _packet(3000))
    r.receive_untrusted(PEER, pieces[0], LIMIT, 0.0)
    r.receive_untrusted(PEER, pieces[1], LIMIT, 0.0)
    liar = Fragment(4, 1, 2, b"x").encode()  # says 2 fragments, the packet has 3
    assert r.receive_untrusted(PEER, liar, LIMIT, 0.0) is None
    assert r.pending(PEER) == 0
    assert r.receive_untrusted(PEER, pieces[2], LIMIT, 0.0) is None  # starts over, alone
    stats = r.statistics()
    assert stats.in_fragment_inconsistent == 3  # the liar and the two it spoiled
    assert stats.in_reassembled == 0


def test_packets_above_the_agreed_limit_are_dropped() -> None:
    r = Reassembler()
    too_many = split_packet(1, _packet(5000))  # 4 fragments
    assert r.receive_untrusted(PEER, too_many[0], 4000, 0.0) is None  # 3 fragments cover 4000
    last = split_packet(2, _packet(4001))  # 3 fragments, 1 byte too long
    for piece in last:
        assert r.receive_untrusted(PEER, piece, 4000, 0.0) is None
    exact = split_packet(3, _packet(4000))
    results = [r.receive_untrusted(PEER, piece, 4000, 0.0) for piece in exact]
    assert results[-1] is not None
    assert len(results[-1]) == 4000
    stats = r.statistics()
    assert stats.in_fragment_oversize == 4  # too_many[0], last[2] and the two before it
    assert stats.in_reassembled == 1


def test_members_without_a_large_limit_and_garbage() -> None:
    r = Reassembler()
    piece = split_packet(1, _packet(3000))[0]
    assert r.receive_untrusted(PEER, piece, None, 0.0) is None
    assert r.receive_untrusted(PEER, piece, 1372, 0.0) is None
    assert r.receive_untrusted(PEER, b"\xe8\x00", LIMIT, 0.0) is None
    assert r.receive_untrusted(PEER, bytes.fromhex("e8000000010102"), LIMIT, 0.0) is None
    stats = r.statistics()
    assert (stats.in_fragment_unexpected, stats.in_fragment_bad) == (2, 2)
    assert stats.in_fragment_dropped == 4
    assert r.pending(PEER) == 0


def test_timeout_drops_incomplete_packets() -> None:
    r = Reassembler()
    packet = _packet(3000)
    pieces = split_packet(9, packet)
    r.receive_untrusted(PEER, pieces[0], LIMIT, 0.0)
    r.receive_untrusted(PEER, pieces[1], LIMIT, 1.0)
    # the last fragment comes after the timeout: the packet is gone, this one starts anew
    assert r.receive_untrusted(PEER, pieces[2], LIMIT, REASSEMBLY_TIMEOUT_S) is None
    assert r.statistics().in_fragment_expired == 2
    # another packet starting later sweeps the stale one out
    other = split_packet(10, packet)
    r.receive_untrusted(PEER, other[0], LIMIT, 10.0)
    assert r.pending(PEER) == 1
    assert r.statistics().in_fragment_expired == 3


def test_memory_is_bounded_per_member_oldest_evicted() -> None:
    r = Reassembler()
    packets = {n: split_packet(n, _packet(3000, n)) for n in range(MAX_PARTIAL_PACKETS + 2)}
    for pieces in packets.values():
        r.receive_untrusted(PEER, pieces[0], LIMIT, 0.0)
    assert r.pending(PEER) == MAX_PARTIAL_PACKETS
    # packets 0 and 1 were evicted: their other fragments do not complete them
    for piece in packets[0][1:]:
        assert r.receive_untrusted(PEER, piece, LIMIT, 0.1) is None
    # the newest ones still complete
    last = MAX_PARTIAL_PACKETS + 1
    results = [r.receive_untrusted(PEER, piece, LIMIT, 0.1) for piece in packets[last][1:]]
    assert results[-1] is not None
    assert bytes(results[-1]) == _packet(3000, last)
    assert r.pending(PEER) <= MAX_PARTIAL_PACKETS
    r.forget(PEER)
    assert r.pending(PEER) == 0
    stats = r.statistics()
    assert stats.in_fragments == stats.in_reassembled * 3 + stats.in_fragment_dropped


@given(st.lists(st.binary(max_size=1400), max_size=50), st.lists(st.floats(0, 10), max_size=50))
def test_random_input_never_raises_nor_grows(chunks: list[bytes], times: list[float]) -> None:
    r = Reassembler()
    for i, chunk in enumerate(chunks):
        now = sorted(times)[i] if i < len(times) else 10.0
        r.receive_untrusted(PEER, b"\xe8" + chunk, LIMIT, now)
        assert r.pending(PEER) <= MAX_PARTIAL_PACKETS
