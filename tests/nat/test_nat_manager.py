"""DirectPaths (tunnel/nat/manager.py): negotiation per friend, probes routed by token, path
events, and our candidates from interface addresses and DHT reports (local_candidates)."""

from __future__ import annotations

from tunnel.nat.manager import DirectPaths, ToFriend, local_candidates
from tunnel.nat.probe import DirectPathDown, DirectPathUp
from tunnel.nat.wire import (
    EXTENSION_PACKET_ID,
    HELLO_PACKET_ID,
    Candidate,
    CandidateSource,
    NatBehaviour,
    Probe,
)
from tunnel.testing.rng import SeededRng
from tunnel.wire.ip_port import Addr, IPPort

PK_A = b"\x0a" * 32
PK_B = b"\x0b" * 32
ADDR_A: Addr = ("198.18.0.2", 54010)
ADDR_B: Addr = ("198.18.0.3", 54011)
STEP_S = 0.02


class Pair:
    """Two DirectPaths joined by an in-order friend connection and a lossless UDP "network"
    (``udp_up`` False drops every datagram)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.a = DirectPaths(SeededRng(1), self.now)
        self.b = DirectPaths(SeededRng(2), self.now)
        self.udp_up = True
        self.sent_to_friend: dict[bytes, list[ToFriend]] = {PK_A: [], PK_B: []}
        self.events: dict[bytes, list[object]] = {PK_A: [], PK_B: []}

    def side(self, pk: bytes) -> tuple[DirectPaths, DirectPaths, bytes, Addr]:
        """(ours, the friend's, the friend's key for us, our address)"""
        if pk == PK_A:
            return self.a, self.b, PK_B, ADDR_A
        return self.b, self.a, PK_A, ADDR_B

    def pump(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            for pk in (PK_A, PK_B):
                ours, theirs, _friend_pk, our_addr = self.side(pk)
                deadline = ours.next_deadline()
                if deadline is not None and deadline <= self.now:
                    ours.handle_timer(self.now)
                for message in ours.messages_to_friends():
                    self.sent_to_friend[pk].append(message)
                    sender = PK_A if pk == PK_A else PK_B
                    if message.extension:
                        theirs.on_extension(sender, message.data, self.now)
                    else:
                        theirs.on_friend_message(sender, message.data, self.now)
                for addr, data in ours.datagrams_to_send():
                    if self.udp_up and addr == (ADDR_B if pk == PK_A else ADDR_A):
                        theirs.receive(data, our_addr, self.now)
                self.events[pk] += [e for _, e in ours.events()]
            self.now += STEP_S


def _local(addr: Addr) -> list[Candidate]:
    return [Candidate(CandidateSource.OBSERVED, IPPort.from_addr(addr))]


def test_nat_manager_negotiates_then_goes_direct_and_notices_death() -> None:
    pair = Pair()
    pair.a.friend_online(PK_B, 0.0)
    pair.b.friend_online(PK_A, 0.0)
    pair.a.set_local(_local(ADDR_A), NatBehaviour.ENDPOINT_INDEPENDENT, 0.0)
    pair.b.set_local(_local(ADDR_B), NatBehaviour.ENDPOINT_INDEPENDENT, 0.0)
    pair.pump(1.0)
    # each side sent exactly one Hello (extension id), then 0xB8 endpoints
    for pk in (PK_A, PK_B):
        sent = pair.sent_to_friend[pk]
        assert sent[0].extension
        assert sent[0].data[0] == HELLO_PACKET_ID
        assert all(not m.extension and m.data[0] == EXTENSION_PACKET_ID for m in sent[1:])
    assert pair.a.direct_addr(PK_B) == ADDR_B
    assert pair.b.direct_addr(PK_A) == ADDR_A
    assert any(isinstance(e, DirectPathUp) for e in pair.events[PK_A])
    assert pair.a.status(PK_B) == f"direct udp {ADDR_B[0]}:{ADDR_B[1]}"
    pair.udp_up = False
    pair.pump(7.0)
    assert any(isinstance(e, DirectPathDown) for e in pair.events[PK_A])
    assert pair.a.direct_addr(PK_B) is None
    pair.udp_up = True
    pair.pump(8.0)  # retried (0.5 s after the death, then backing off) and direct again
    assert pair.a.direct_addr(PK_B) == ADDR_B


def test_nat_manager_toxcore_friend_never_gets_0xb8() -> None:
    """A friend that never answers the Hello (toxcore drops id 0x9E) gets no core, no
    Endpoints and no probes; a stray 0xB8 from it is counted and dropped."""
    paths = DirectPaths(SeededRng(3), 0.0)
    paths.friend_online(PK_B, 0.0)
    paths.set_local(_local(ADDR_A), NatBehaviour.ENDPOINT_INDEPENDENT, 0.0)
    sent = paths.messages_to_friends()
    assert [(m.extension, m.data[0]) for m in sent] == [(True, HELLO_PACKET_ID)]
    paths.handle_timer(10.0)
    assert paths.messages_to_friends() == []
    assert paths.datagrams_to_send() == []
    assert paths.status(PK_B) is None
    paths.on_friend_message(PK_B, bytes([EXTENSION_PACKET_ID, 1]), 1.0)
    assert paths.stats.bad_packets == 1
    paths.receive(Probe(bytes(8), 1).encode(), ADDR_B, 1.0)
    assert paths.stats.unknown_token == 1
    paths.receive(b"\xb8junk", ADDR_B, 1.0)
    assert paths.stats.bad_packets == 2
    paths.on_extension(PK_B, bytes([HELLO_PACKET_ID]), 1.0)  # truncated hello
    assert paths.stats.bad_packets == 3
    assert paths.status(PK_B) is None


def test_nat_manager_offline_forgets_the_core() -> None:
    pair = Pair()
    pair.a.friend_online(PK_B, 0.0)
    pair.b.friend_online(PK_A, 0.0)
    pair.pump(0.2)
    assert pair.a.status(PK_B) is not None
    token = pair.a.cores[PK_B].token
    pair.a.friend_offline(PK_B)
    assert pair.a.status(PK_B) is None
    pair.a.receive(Probe(token, 1).encode(), ADDR_B, 1.0)
    assert pair.a.stats.unknown_token == 1


def test_nat_manager_local_candidates() -> None:
    local = [("10.1.0.2", 54010)]
    candidates, nat = local_candidates(local, [])
    assert nat is NatBehaviour.UNKNOWN
    assert [c.source for c in candidates] == [CandidateSource.LOCAL]
    # no NAT: every DHT node sees our interface address
    _, nat = local_candidates([ADDR_A], [(1.0, ADDR_A), (2.0, ADDR_A)])
    assert nat is NatBehaviour.OPEN
    # endpoint-independent: one public address
    candidates, nat = local_candidates(local, [(1.0, ADDR_A), (2.0, ADDR_A)])
    assert nat is NatBehaviour.ENDPOINT_INDEPENDENT
    assert [c.address.to_addr() for c in candidates] == [local[0], ADDR_A]
    # symmetric: same IP, ports per destination
    _, nat = local_candidates(local, [(1.0, ("198.18.0.2", 40000)), (2.0, ("198.18.0.2", 40001))])
    assert nat is NatBehaviour.SYMMETRIC_SEQUENTIAL
    _, nat = local_candidates(local, [(1.0, ("198.18.0.2", 40000)), (2.0, ("198.18.0.2", 61000))])
    assert nat is NatBehaviour.SYMMETRIC_RANDOM
    # renumbered: reports of the old IP are left out (not a symmetric NAT), newest first
    candidates, nat = local_candidates(local, [(1.0, ADDR_A), (5.0, ("198.18.0.9", 54010))])
    assert nat is NatBehaviour.ENDPOINT_INDEPENDENT
    assert candidates[-1].address.to_addr() == ("198.18.0.9", 54010)
    assert ADDR_A not in [c.address.to_addr() for c in candidates]
    # old reports of the same IP age out
    _, nat = local_candidates(local, [(1.0, ("198.18.0.2", 1)), (100.0, ADDR_A)])
    assert nat is NatBehaviour.ENDPOINT_INDEPENDENT
