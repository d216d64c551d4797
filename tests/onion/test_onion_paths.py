"""PathPool (tox-protocol.md 5.7): path building, failure detection and replacement;
FriendRequests (2.2): nospam, dedupe of the last 32 senders, 5/10/20 s resend schedule."""

from __future__ import annotations

from tunnel.crypto import KeyPair
from tunnel.onion.friend_requests import (
    FRIENDREQUEST_TIMEOUT_S,
    MAX_RECEIVED_STORED,
    FriendRequests,
    OutgoingState,
)
from tunnel.onion.paths import (
    NUMBER_ONION_PATHS,
    ONION_PATH_MAX_LIFETIME_S,
    FirstHop,
    PathPool,
    TcpRelayHop,
)
from tunnel.testing.rng import SeededRng
from tunnel.wire.ip_port import IPPort
from tunnel.wire.onion import FriendRequestPayload, OnionRequest0, TcpOnionRequest
from tunnel.wire.packed_node import PackedNode

RNG = SeededRng("paths")
NODES = [
    PackedNode(IPPort.parse(f"11.0.1.{i}", 44300), KeyPair.generate(RNG).public_key)
    for i in range(1, 10)
]


class Drawer:
    def __init__(self) -> None:
        self.i = 0
        self.calls = 0

    def __call__(self) -> tuple[FirstHop, PackedNode, PackedNode]:
        self.calls += 1
        self.i += 3
        a, b, c = (NODES[(self.i + k) % len(NODES)] for k in range(3))
        return a, b, c


def test_new_path_dies_after_unanswered_uses() -> None:
    pool = PathPool(KeyPair.generate(RNG), RNG.fork(1))
    draw = Drawer()
    first = pool.get(0, 100.0, draw)
    assert first is not None
    assert first.path_num % NUMBER_ONION_PATHS == 0
    assert first.used_times == 3  # starts at 2, plus this use
    assert pool.get(0, 101.0, draw) is first  # 4th use
    assert not pool.timed_out(0, 104.0)  # 4 uses but last use only 3 s ago
    assert pool.timed_out(0, 105.0)  # never answered: 4 s
    second = pool.get(0, 105.0, draw)
    assert second is not None
    assert second is not first
    assert draw.calls == 2


def test_answered_path_gets_longer_timeout_and_lifetime() -> None:
    pool = PathPool(KeyPair.generate(RNG), RNG.fork(2))
    draw = Drawer()
    path = pool.get(3, 100.0, draw)
    assert path is not None
    assert pool.mark_success(path.path_num, 101.0) is path
    assert pool.exists(path.path_num, 101.0)
    for t in (102.0, 103.0, 104.0, 105.0):
        assert pool.get(3, t, draw) is path
    assert not pool.timed_out(3, 114.0)  # answered once: 10 s after the 4th unanswered use
    assert pool.timed_out(3, 115.0)
    assert not pool.exists(path.path_num, 115.0)
    pool.mark_success(path.path_num, 115.0)
    assert pool.timed_out(3, 100.0 + ONION_PATH_MAX_LIFETIME_S)
    assert pool.mark_success(path.path_num + NUMBER_ONION_PATHS, 120.0) is None


def test_tcp_first_hop_builds_tcp_packet() -> None:
    pool = PathPool(KeyPair.generate(RNG), RNG.fork(3))

    def draw() -> tuple[FirstHop, PackedNode, PackedNode]:
        return TcpRelayHop("relay"), NODES[0], NODES[1]

    path = pool.get(None, 10.0, draw)
    assert path is not None
    first, packet = path.seal(bytes(24), NODES[2], b"\x83" + bytes(176))
    assert first == TcpRelayHop("relay")
    assert TcpOnionRequest.decode(packet).ip_port == NODES[0].ip_port
    assert path.udp_nodes() == [NODES[0], NODES[1]]
    udp = pool.get(None, 10.0, Drawer())
    assert udp is not None
    first, packet = udp.seal(bytes(24), NODES[2], b"\x83" + bytes(176))
    assert isinstance(first, PackedNode)
    assert len(OnionRequest0.decode(packet).encode()) == 403


def test_friend_request_nospam_and_dedupe() -> None:
    requests = FriendRequests(b"\x01\x02\x03\x04")
    good = FriendRequestPayload(b"\x01\x02\x03\x04", b"hello")
    senders = [bytes([i]) * 32 for i in range(MAX_RECEIVED_STORED + 3)]
    assert requests.accept_incoming(senders[0], good, is_friend=False)
    assert not requests.accept_incoming(senders[0], good, is_friend=False)  # duplicate
    assert not requests.accept_incoming(senders[1], good, is_friend=True)  # already a friend
    requests.set_nospam(b"\x09\x09\x09\x09")
    assert not requests.accept_incoming(senders[2], good, is_friend=False)  # old nospam
    assert requests.dropped_nospam == 1
    fresh = FriendRequestPayload(b"\x09\x09\x09\x09", b"hello")
    for sender in senders[3:]:
        assert requests.accept_incoming(sender, fresh, is_friend=False)
    # 32 slots: the first sender has been pushed out and may ask again.
    assert requests.accept_incoming(senders[0], fresh, is_friend=False)


def test_friend_request_resend_schedule() -> None:
    requests = FriendRequests(bytes(4))
    out = requests.add_outgoing(b"\xaa" * 32, b"\x01\x02\x03\x04", b"hi")
    sent: list[float] = []
    for tick in range(0, 80):
        now = 1000.0 + tick
        for due in requests.due(now):
            requests.mark_sent(due, now)
            sent.append(now - 1000.0)
    # Sent at 0, then after more than 5, 10, 20, 40 s: 0, 6, 17, 38, 79.
    assert sent[:4] == [0.0, 6.0, 17.0, 38.0]
    assert out.timeout_s == FRIENDREQUEST_TIMEOUT_S * 2 ** (len(sent) - 1)
    assert out.state is OutgoingState.REQUESTED
    requests.stop(b"\xaa" * 32)
    assert requests.due(2000.0) == []


def test_low_order_node_key_from_the_network_is_refused() -> None:
    pool = PathPool(KeyPair.generate(RNG), RNG.fork(4))
    bad = PackedNode(IPPort.parse("11.0.1.99", 44300), bytes(32))

    def draw() -> tuple[FirstHop, PackedNode, PackedNode]:
        return NODES[0], bad, NODES[1]

    assert pool.get(0, 10.0, draw) is None
    assert pool.get(0, 10.0, Drawer()) is not None
