"""Mesh membership core: joins by invite, introductions to a full mesh, proofs, revocation.

A tiny in-process "Tox" (:class:`FakeTox`) models what the membership core relies on: friend
lists are per node; a friend request reaches the target only if the target does not list the
requester yet; two nodes that list each other and are both up get a friend connection
(``friend_online`` on both ends); custom packets go over live connections only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId
from tunnel.vpn.membership import (
    RESYNC_INTERVAL_S,
    AcceptFriend,
    Event,
    MembersChanged,
    Membership,
    NetworkParams,
    ParamsLearned,
    PeerDown,
    PeerRejected,
    PeerUp,
    RemovedFromNetwork,
    RemoveFriend,
    SendControl,
    SendFriendRequest,
    hello_proof,
    network_id,
    request_proof,
    revoke_proof,
)
from tunnel.wire.vpn import Hello, JoinRequest, MemberRecord, Members, Revoke

SECRET = bytes(range(100, 132))
PARAMS = NetworkParams(
    "lab", ipaddress.IPv4Network("10.77.0.0/16"), ipaddress.IPv6Network("fd77::/64")
)


def make_key(rng: SeededRng) -> bytes:
    raw = rng(32)
    return raw[:31] + bytes([raw[31] & 0x7F])


@dataclass
class FakeTox:
    nodes: dict[bytes, Membership] = field(default_factory=dict)
    lists: dict[bytes, set[bytes]] = field(default_factory=dict)
    up: set[bytes] = field(default_factory=set)
    connected: set[frozenset[bytes]] = field(default_factory=set)
    events: dict[bytes, list[Event]] = field(default_factory=dict)
    now: float = 0.0
    collect_events: bool = True

    def add(self, node: Membership) -> bytes:
        key = node.own_key
        self.nodes[key] = node
        self.lists[key] = set()
        self.up.add(key)
        self.events[key] = []
        return key

    def _connect_if_mutual(self, a: bytes, b: bytes) -> None:
        pair = frozenset((a, b))
        if (
            pair not in self.connected
            and b in self.lists[a]
            and a in self.lists[b]
            and a in self.up
            and b in self.up
        ):
            self.connected.add(pair)
            self.nodes[a].friend_online(b, self.now)
            self.nodes[b].friend_online(a, self.now)

    def _disconnect(self, a: bytes, b: bytes) -> None:
        pair = frozenset((a, b))
        if pair in self.connected:
            self.connected.discard(pair)
            self.nodes[a].friend_offline(b)
            self.nodes[b].friend_offline(a)

    def pump(self, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            busy = False
            for key in list(self.nodes):
                node = self.nodes[key]
                if self.collect_events:
                    self.events[key].extend(node.events())
                for action in node.actions():
                    busy = True
                    self._apply(key, action)
            if not busy:
                return
        raise AssertionError("membership did not settle")

    def _apply(self, key: bytes, action: object) -> None:
        if key not in self.up:
            return
        match action:
            case SendFriendRequest(tox_id=tox_id, message=message):
                target = tox_id.public_key
                if target not in self.nodes or target in self.lists[key]:
                    return
                self.lists[key].add(target)
                if key not in self.lists[target] and target in self.up:
                    self.nodes[target].handle_friend_request(key, message)
                self._connect_if_mutual(key, target)
            case AcceptFriend(public_key=other):
                self.lists[key].add(other)
                self._connect_if_mutual(key, other)
            case RemoveFriend(public_key=other):
                self.lists[key].discard(other)
                self._disconnect(key, other)
            case SendControl(public_key=other, data=data):
                if frozenset((key, other)) in self.connected:
                    self.nodes[other].handle_control(key, data)
            case _:
                raise AssertionError(action)

    def go_down(self, key: bytes) -> None:
        for other in list(self.nodes):
            self._disconnect(key, other)
        self.up.discard(key)

    def come_up(self, key: bytes) -> None:
        self.up.add(key)
        for other in self.lists[key]:
            self._connect_if_mutual(key, other)


def member(
    rng: SeededRng,
    params: NetworkParams | None = PARAMS,
    secret: bytes = SECRET,
    ipv4: bytes | None = None,
) -> Membership:
    tox_id = ToxId(make_key(rng), rng(4))
    return Membership(
        secret=secret, own=MemberRecord(tox_id, 1, ipv4, None), params=params, max_ip_packet=1372
    )


def tox_id(node: Membership) -> ToxId:
    return node.own.tox_id


def build_mesh(
    n: int, seed: int = 1, *, collect_events: bool = True
) -> tuple[FakeTox, list[Membership]]:
    """A founder plus n-1 members, each joining by an invite from the previous one."""
    rng = SeededRng(seed)
    tox = FakeTox(collect_events=collect_events)
    nodes = [member(rng)]
    tox.add(nodes[0])
    for i in range(1, n):
        node = member(rng, params=None)
        tox.add(node)
        node.join(tox_id(nodes[i - 1]))
        nodes.append(node)
        tox.pump()
    return tox, nodes


def test_chain_of_invites_gives_full_mesh() -> None:
    tox, nodes = build_mesh(5)
    keys = {node.own_key for node in nodes}
    for node in nodes:
        assert set(node.verified_peers()) == keys - {node.own_key}
        assert set(node.records()) == keys
        assert node.params == PARAMS
    assignments = [node.assignment() for node in nodes]
    assert all(a == assignments[0] for a in assignments)
    assert assignments[0] is not None
    assert len(assignments[0].by_ipv4()) == 5
    # every pair is directly connected (no forwarding through members)
    assert len(tox.connected) == 5 * 4 // 2
    learned = [e for e in tox.events[nodes[3].own_key] if isinstance(e, ParamsLearned)]
    assert learned == [ParamsLearned(PARAMS)]
    ups = {e.public_key for e in tox.events[nodes[0].own_key] if isinstance(e, PeerUp)}
    assert ups == keys - {nodes[0].own_key}
    assert any(isinstance(e, MembersChanged) for e in tox.events[nodes[0].own_key])


def test_join_request_proof_is_bound_to_both_keys() -> None:
    rng = SeededRng(2)
    a, b, c = member(rng), member(rng), member(rng)
    msg = b.join_request(a.own_key)
    assert JoinRequest.decode(msg).network_id == network_id(SECRET)
    assert a.handle_friend_request(b.own_key, msg)
    assert a.actions() == [AcceptFriend(b.own_key)]
    # the same message from another key, or to another target, does not verify
    assert not a.handle_friend_request(c.own_key, msg)
    assert not c.handle_friend_request(b.own_key, msg)
    outsider = member(rng, secret=bytes(32))
    assert not a.handle_friend_request(outsider.own_key, outsider.join_request(a.own_key))
    assert not a.handle_friend_request(b.own_key, b"hi, please add me")
    assert a.statistics().requests_bad == 3
    assert a.statistics().requests_accepted == 1
    assert proof_differs()


def proof_differs() -> bool:
    k1, k2 = b"\x01" * 32, b"\x02" * 32
    proofs = {
        request_proof(SECRET, k1, k2),
        request_proof(SECRET, k2, k1),
        hello_proof(SECRET, k1, k2),
        revoke_proof(SECRET, k1, k2),
    }
    return len(proofs) == 4


def test_stranger_who_accepts_is_not_a_member() -> None:
    rng = SeededRng(3)
    a = member(rng)
    stranger = member(rng, secret=bytes(32))
    a.friend_online(stranger.own_key, 0.0)
    a.actions()
    # anything before a valid HELLO is ignored
    a.handle_control(stranger.own_key, Members((stranger.own,)).encode())
    assert a.statistics().control_unverified == 1
    # a HELLO with the wrong secret is refused
    stranger.friend_online(a.own_key, 0.0)
    (hello,) = stranger.actions()
    assert isinstance(hello, SendControl)
    a.handle_control(stranger.own_key, hello.data)
    assert a.verified_peers() == {}
    assert a.statistics().hello_bad_proof == 1
    assert any(isinstance(e, PeerRejected) for e in a.events())
    a.handle_control(stranger.own_key, b"\xb0\x09garbage")
    assert a.statistics().control_malformed == 1


def test_hello_cannot_be_replayed_to_someone_else() -> None:
    rng = SeededRng(4)
    a, b, c = member(rng), member(rng), member(rng)
    a.friend_online(b.own_key, 0.0)
    (to_b,) = a.actions()
    assert isinstance(to_b, SendControl)
    c.friend_online(b.own_key, 0.0)
    c.actions()
    c.handle_control(b.own_key, to_b.data)  # b forwards a's HELLO to c as its own
    assert c.statistics().hello_bad_proof == 1
    c.friend_online(a.own_key, 0.0)
    c.handle_control(a.own_key, to_b.data)  # a's HELLO for b, arriving from a at c
    assert c.statistics().hello_bad_proof == 2
    assert c.verified_peers() == {}


def test_hello_record_of_other_key_and_param_mismatch() -> None:
    rng = SeededRng(5)
    a, b, c = member(rng), member(rng), member(rng)
    forged = Hello(
        network_id(SECRET),
        hello_proof(SECRET, b.own_key, a.own_key),
        1372,
        c.own,
        *PARAMS.wire(),
        "lab",
    )
    a.handle_control(b.own_key, forged.encode())
    assert a.statistics().hello_key_mismatch == 1
    other_params = NetworkParams("lab", ipaddress.IPv4Network("10.99.0.0/16"), None)
    d = member(rng, params=other_params)
    d.friend_online(a.own_key, 0.0)
    (hello,) = d.actions()
    assert isinstance(hello, SendControl)
    a.handle_control(d.own_key, hello.data)
    assert a.statistics().hello_params_mismatch == 1
    assert a.verified_peers() == {}


def test_revocation_reaches_everyone_including_late_comers() -> None:
    tox, nodes = build_mesh(4, seed=6)
    a, b, c, d = nodes
    tox.go_down(d.own_key)
    a.remove(c.own_key)
    tox.pump()
    assert c.removed
    assert any(isinstance(e, RemovedFromNetwork) for e in tox.events[c.own_key])
    for node in (a, b):
        assert c.own_key in node.revoked()
        assert c.own_key not in node.records()
        assert c.own_key not in node.verified_peers()
    assert any(isinstance(e, PeerDown) and e.public_key == c.own_key for e in tox.events[b.own_key])
    # d was offline; when it comes back it learns the revocation from whoever it meets
    assert c.own_key in d.records()
    tox.come_up(d.own_key)
    tox.pump()
    assert c.own_key in d.revoked()
    assert c.own_key not in d.records()
    assert set(d.verified_peers()) == {a.own_key, b.own_key}
    # c can no longer get back in with its old key
    assert not a.handle_friend_request(c.own_key, c.join_request(a.own_key))
    assert a.statistics().requests_revoked == 1
    assert a.assignment() == d.assignment()


def test_forged_revocation_is_ignored() -> None:
    tox, (a, b, c) = build_mesh(3, seed=7)
    bogus = Revoke(c.own_key, a.own_key, b"\x00" * 32)
    b.handle_control(a.own_key, bogus.encode())
    tox.pump()
    assert b.statistics().revoke_bad_proof == 1
    assert c.own_key in b.records()


def test_leave() -> None:
    tox, (a, b, c) = build_mesh(3, seed=8)
    c.remove(c.own_key)
    tox.pump()
    assert c.removed
    assert c.own_key in a.revoked()
    assert c.own_key in b.revoked()


def test_pins_spread_and_newer_record_wins() -> None:
    tox, (a, b, c) = build_mesh(3, seed=9)
    pinned = MemberRecord(b.own.tox_id, 2, ipaddress.IPv4Address("10.77.0.9").packed, None)
    b.update_own(pinned)
    tox.pump()
    for node in (a, b, c):
        assignment = node.assignment()
        assert assignment is not None
        assert assignment.members[b.own_key].ipv4 == ipaddress.IPv4Address("10.77.0.9")
    stale = MemberRecord(b.own.tox_id, 1, None, None)
    ignored = a.statistics().records_ignored
    a.handle_control(c.own_key, Members((stale,)).encode())
    assert a.records()[b.own_key] == pinned
    assert a.statistics().records_ignored == ignored + 1
    with pytest.raises(ValueError, match="own record"):
        b.update_own(c.own)


def test_timer_resyncs_and_rerequests() -> None:
    rng = SeededRng(10)
    a = member(rng)
    assert a.next_deadline() is None
    tox = FakeTox()
    tox.add(a)
    b = member(rng, params=None)
    tox.add(b)
    b.join(tox_id(a))
    tox.pump()
    deadline = a.next_deadline()
    assert deadline == RESYNC_INTERVAL_S
    a.handle_timer(deadline - 1)
    assert a.actions() == []
    a.handle_timer(deadline)
    resent = a.actions()
    assert resent
    assert all(isinstance(x, SendControl) and x.public_key == b.own_key for x in resent)
    assert a.next_deadline() == 2 * RESYNC_INTERVAL_S
    # a member known but not connected gets its friend request re-issued
    tox.go_down(b.own_key)
    a.handle_timer(2 * RESYNC_INTERVAL_S)
    assert any(isinstance(x, SendFriendRequest) for x in a.actions())


def test_many_members_split_over_packets() -> None:
    _tox, nodes = build_mesh(25, seed=11)
    keys = {node.own_key for node in nodes}
    assert all(set(node.records()) == keys for node in nodes)
    assert all(len(node.verified_peers()) == 24 for node in nodes)


def test_bad_secret_length() -> None:
    with pytest.raises(ValueError, match="secret"):
        Membership(secret=b"short", own=MemberRecord(ToxId(b"\x01" * 32, b"\x00" * 4)), params=None)


def test_record_limit_and_packet_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunnel.vpn.membership as membership_module

    monkeypatch.setattr(membership_module, "MAX_MEMBERS", 3)
    _tox, (a, b) = build_mesh(2, seed=12)
    assert a.verified_peers()[b.own_key] == 1372
    rng = SeededRng(13)
    fakes = tuple(MemberRecord(ToxId(make_key(rng), rng(4)), 1) for _ in range(3))
    a.handle_control(b.own_key, Members(fakes).encode())
    assert len(a.records()) == 3
    assert a.statistics().records_over_limit == 2
    # a peer announcing a tiny packet limit is raised to the IPv6 minimum
    c = member(rng)
    small = Hello(
        network_id(SECRET),
        hello_proof(SECRET, c.own_key, a.own_key),
        100,
        c.own,
        *PARAMS.wire(),
        "lab",
    )
    a.friend_online(c.own_key, 0.0)
    a.handle_control(c.own_key, small.encode())
    assert a.verified_peers()[c.own_key] == 1280
