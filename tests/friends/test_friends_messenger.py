"""friend_connection + Messenger in the simulator (tox-protocol.md 8): two of our nodes."""

from __future__ import annotations

import pytest

from tunnel.crypto import KeyPair
from tunnel.friends.connection import (
    FRIEND_CONNECTION_TIMEOUT_S,
    FriendConnections,
    FriendStatus,
)
from tunnel.friends.messenger import (
    CustomLossless,
    CustomLossy,
    FriendOffline,
    FriendOnline,
    FriendRelays,
    FriendRequestOverConnection,
    FriendState,
    MessageReceived,
    Messenger,
    MessengerEvent,
    NotConnected,
    ReadReceipt,
    SendQueueFull,
)
from tunnel.netcrypto.core import NetCrypto
from tunnel.onion.friend_requests import FriendRequests
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import LinkParams, SimNetwork
from tunnel.wire.ip_port import Addr, IPPort
from tunnel.wire.messenger import (
    decode_share_relays_untrusted,
    encode_share_relays,
    encode_text,
)
from tunnel.wire.packed_node import PackedNode

PORT = 33445


class Node:
    """A Messenger with an event log, shaped as a DatagramCore for the simulator."""

    def __init__(self, messenger: Messenger) -> None:
        self.m = messenger
        self.log: list[MessengerEvent] = []

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self.m.receive(data, addr, now)
        self.log.extend(self.m.events())

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        return self.m.datagrams_to_send()

    def next_deadline(self) -> float | None:
        return self.m.next_deadline()

    def handle_timer(self, now: float) -> None:
        self.m.handle_timer(now)
        self.log.extend(self.m.events())

    def of(self, kind: type[MessengerEvent]) -> list[MessengerEvent]:
        return [e for e in self.log if isinstance(e, kind)]


def make(seed: int, link: LinkParams | None = None) -> tuple[SimNetwork, Node, Node, int, int]:
    net = SimNetwork(seed)
    rng = SeededRng(seed)
    keys = {
        n: (KeyPair.generate(rng.fork(n + "r")), KeyPair.generate(rng.fork(n + "d"))) for n in "ab"
    }
    a = Node(Messenger(NetCrypto(*keys["a"], rng.fork("a")), name=b"alice"))
    b = Node(Messenger(NetCrypto(*keys["b"], rng.fork("b")), name=b"bob", status_message=b"hi"))
    ha, hb = net.add_host("11.0.0.1"), net.add_host("11.0.0.2")
    if link is not None:
        net.set_link("11.0.0.1", "11.0.0.2", link)
    net.attach(a, ha, PORT)
    net.attach(b, hb, PORT)
    # A knows B's DHT key and address; B only knows A's real key (accepts A's handshake).
    fa = a.m.add_friend_norequest(
        keys["b"][0].public_key,
        net.now,
        dht_pk=keys["b"][1].public_key,
        udp_addr=("11.0.0.2", PORT),
    )
    fb = b.m.add_friend_norequest(keys["a"][0].public_key, net.now)
    return net, a, b, fa, fb


def online(net: SimNetwork, a: Node, b: Node) -> None:
    assert net.run_until(lambda: a.of(FriendOnline) and b.of(FriendOnline), timeout=10)


def test_friends_come_online_and_exchange_names() -> None:
    net, a, b, fa, fb = make(1)
    online(net, a, b)
    assert a.m.friend_state(fa) is FriendState.ONLINE
    assert b.m.friend_state(fb) is FriendState.ONLINE
    assert net.run_until(
        lambda: a.m.friend_status_message(fa) == b"hi" and b.m.friend_name(fb) == b"alice",
        timeout=2,
    )
    assert a.m.friend_name(fa) == b"bob"


def test_messages_receipts_and_custom_packets() -> None:
    net, a, b, fa, fb = make(2, LinkParams(latency_s=0.02))
    online(net, a, b)
    mid = a.m.send_message(fa, b"hello", net.now)
    b.m.send_message(fb, b"waves", net.now, action=True)
    a.m.send_custom_lossless(fa, b"\xa0" + b"x" * 1372, net.now)
    a.m.send_custom_lossy(fa, b"\xc8lossy", net.now)
    assert net.run_until(lambda: a.of(ReadReceipt) and b.of(CustomLossy), timeout=3)
    assert a.of(ReadReceipt) == [ReadReceipt(fa, mid)]
    assert b.of(MessageReceived) == [MessageReceived(fb, b"hello", False)]
    assert net.run_until(lambda: a.of(MessageReceived), timeout=2)
    assert a.of(MessageReceived) == [MessageReceived(fa, b"waves", True)]
    assert b.of(CustomLossless) == [CustomLossless(fb, b"\xa0" + b"x" * 1372)]
    assert b.of(CustomLossy) == [CustomLossy(fb, b"\xc8lossy")]
    stats = a.m.statistics(fa)
    assert (stats.messages_sent, stats.messages_received) == (1, 1)
    assert stats.custom_lossless_sent == 1
    assert stats.custom_lossy_sent == 1
    assert stats.session is not None


def test_api_rejects_bad_input_and_offline_friends() -> None:
    net, a, _b, fa, _ = make(3)
    with pytest.raises(NotConnected):
        a.m.send_message(fa, b"too early", net.now)
    with pytest.raises(ValueError, match="custom lossless"):
        a.m.send_custom_lossless(fa, b"\x9f" + b"x", net.now)
    with pytest.raises(ValueError, match="custom lossy"):
        a.m.send_custom_lossy(fa, b"\xc7" + b"x", net.now)
    with pytest.raises(ValueError, match="custom lossless"):
        a.m.send_custom_lossless(fa, b"\xa0" + bytes(1373), net.now)
    with pytest.raises(KeyError):
        a.m.friend_state(99)
    assert a.m.send_capacity(fa) == 0


def test_back_pressure_then_everything_arrives_in_order() -> None:
    net, a, b, fa, _fb = make(4, LinkParams(latency_s=0.01, loss=0.02, jitter_s=0.005))
    online(net, a, b)
    sent = 0
    while True:
        try:
            a.m.send_custom_lossless(fa, b"\xa1" + sent.to_bytes(4, "big"), net.now)
        except SendQueueFull:
            break
        sent += 1
    assert sent > 0
    assert net.run_until(lambda: len(b.of(CustomLossless)) == sent, timeout=30)
    got = [int.from_bytes(e.data[1:5], "big") for e in b.of(CustomLossless)]  # type: ignore[union-attr]
    assert got == list(range(sent))


def test_alive_keeps_link_and_silence_times_out_then_reconnects() -> None:
    net, a, b, fa, _fb = make(5)
    online(net, a, b)
    net.run_for(3 * FRIEND_CONNECTION_TIMEOUT_S)  # ALIVE every 8 s keeps it up
    assert a.m.friend_state(fa) is FriendState.ONLINE
    assert not a.of(FriendOffline)
    net.block("11.0.0.2")
    assert net.run_until(lambda: a.of(FriendOffline) and b.of(FriendOffline), timeout=40)
    assert a.m.connections.counters["alive_timeouts"] == 1
    offline_at = net.now
    net.unblock("11.0.0.2")
    # A keeps retrying as initiator and both come back online.
    assert net.run_until(
        lambda: len(a.of(FriendOnline)) == 2 and len(b.of(FriendOnline)) == 2, timeout=30
    )
    assert net.now - offline_at < 30
    assert a.m.friend_state(fa) is FriendState.ONLINE


def test_kill_by_peer_goes_offline_and_reconnects() -> None:
    net, a, b, _fa, fb = make(6)
    online(net, a, b)
    b.m.netcrypto.kill(b.m.friend_public_key(fb), net.now)
    b.log.extend(b.m.events())
    assert net.run_until(lambda: a.of(FriendOffline), timeout=3)
    assert net.run_until(lambda: len(a.of(FriendOnline)) == 2, timeout=20)


def test_lossless_before_online_is_dropped_like_toxcore() -> None:
    rng = SeededRng(7)
    me, peer = KeyPair.generate(rng), KeyPair.generate(rng)
    m = Messenger(NetCrypto(me, KeyPair.generate(rng), rng))
    f = m.add_friend_norequest(peer.public_key, 0.0)
    record = m._friend(f)
    m._handle_lossless(record, encode_text(64, b"early"), 0.0)
    assert m.statistics(f).dropped == {"dropped_before_online": 1}
    m._handle_lossless(record, b"\x18", 0.0)
    assert m.friend_state(f) is FriendState.ONLINE
    # Their name and status are stored when valid and ignored otherwise.
    m._handle_lossless(record, b"\x30" + b"n" * 129, 0.0)
    m._handle_lossless(record, b"\x30carol", 0.0)
    m._handle_lossless(record, b"\x32\x07", 0.0)
    m._handle_lossless(record, b"\x40", 0.0)
    assert m.friend_name(f) == b"carol"
    assert m.statistics(f).dropped["dropped_malformed"] == 3


def test_share_relays_codec_and_handling() -> None:
    relays = [
        PackedNode(IPPort.parse("198.18.0.1", 443), bytes([1]) * 32, tcp=True),
        PackedNode(IPPort.parse("2001:db8::1", 3389), bytes([2]) * 32, tcp=True),
    ]
    raw = encode_share_relays(relays)
    assert raw[0] == 17
    assert decode_share_relays_untrusted(raw) == relays
    assert decode_share_relays_untrusted(raw + raw[1:40]) == relays[:2] + relays[:1]
    net, a, b, _fa, fb = make(8)
    a.m.connections.set_own_relays(relays, net.now)
    online(net, a, b)
    b_conn: FriendConnections = b.m.connections
    a_pk = b.m.friend_public_key(fb)
    assert net.run_until(lambda: b_conn.friend_relays(a_pk) == relays, timeout=3)
    assert b_conn.status(a_pk) is FriendStatus.CONNECTED
    # ... and they reach the node as a Messenger event, so it adds them to its relay pool.
    shared = [e for e in b.of(FriendRelays) if isinstance(e, FriendRelays)]
    assert shared
    assert shared[-1].friend == fb
    assert list(shared[-1].relays) == relays


def test_shared_relay_hosted_by_the_friend_is_reached_at_its_address() -> None:
    """toxcore ``friend_add_tcp_relay``: a LAN relay address whose key is the friend's DHT key
    is a relay the friend hosts, so its IP becomes the friend's address."""
    net, a, b, _fa, fb = make(13)
    online(net, a, b)
    a_dht = a.m.netcrypto.ident.dht.public_key
    hosted = PackedNode(IPPort.parse("127.0.0.1", 33445), a_dht, tcp=True)
    other = PackedNode(IPPort.parse("198.18.0.7", 443), bytes([7]) * 32, tcp=True)
    a.m.connections.set_own_relays([hosted, other], net.now)
    a_pk = b.m.friend_public_key(fb)
    b_conn = b.m.connections
    assert net.run_until(lambda: len(b_conn.friend_relays(a_pk)) == 2, timeout=3)
    assert b_conn.friend_relays(a_pk) == [
        PackedNode(IPPort.parse("11.0.0.1", 33445), a_dht, tcp=True),
        other,
    ]
    shared = [e for e in b.of(FriendRelays) if isinstance(e, FriendRelays)]
    assert list(shared[-1].relays) == b_conn.friend_relays(a_pk)


def test_friend_request_over_the_connection_is_handled_like_an_onion_request() -> None:
    """friend_connection id 18 ``[0x12][nospam][message]``: surfaced with its nospam and
    message; the onion request rules (nospam, dedupe, friends filtered) then apply to it."""
    net, a, b, fa, fb = make(12)
    online(net, a, b)
    a.m.connections.send(
        a.m.friend_public_key(fa), b"\x12" + b"NOSP" + b"hello", net.now, congestion=False
    )
    a.m.connections.send(
        a.m.friend_public_key(fa), b"\x12" + b"NOSP", net.now, congestion=False
    )  # no message: malformed, dropped and counted
    a.m.connections.send(
        a.m.friend_public_key(fa), b"\x12" + b"N" * 1100, net.now, congestion=False
    )  # over 1021 bytes: malformed
    a_pk = b.m.friend_public_key(fb)
    assert net.run_until(lambda: b.of(FriendRequestOverConnection), timeout=3)
    net.run_for(0.5)
    got = [
        e for e in b.of(FriendRequestOverConnection) if isinstance(e, FriendRequestOverConnection)
    ]
    assert len(got) == 1
    assert got[0].public_key == a_pk
    assert got[0].request.nospam == b"NOSP"
    assert got[0].request.message == b"hello"
    assert b.m.connections.counters["friend_request_bad"] == 2
    # The node's filter: the same FriendRequests object that screens onion requests.
    requests = FriendRequests(b"NOSP")
    assert not requests.accept_incoming(a_pk, got[0].request, is_friend=True)
    assert requests.accept_incoming(a_pk, got[0].request, is_friend=False)
    assert not requests.accept_incoming(a_pk, got[0].request, is_friend=False)  # dedupe
    other = FriendRequests(b"XXXX")
    assert not other.accept_incoming(a_pk, got[0].request, is_friend=False)  # nospam
    assert other.dropped_nospam == 1


def test_peer_restart_with_new_dht_key_replaces_the_session() -> None:
    """A restarts (same real key, new DHT key, fresh state) and connects again: B replaces
    its old session (different DHT key in the cookie) instead of ignoring the handshake."""
    net, a, b, fa, fb = make(9)
    online(net, a, b)
    a_real = b.m.friend_public_key(fb)
    b_real = a.m.friend_public_key(fa)
    b_dht = b.m.netcrypto.ident.dht.public_key
    old_a = a.m
    rng = SeededRng("restart")
    new_a = Messenger(NetCrypto(old_a.netcrypto.ident.real, KeyPair.generate(rng), rng))
    endpoint = next(e for e in net.endpoints if e.core is a)
    endpoint.detach()
    a2 = Node(new_a)
    net.attach(a2, net.hosts[0], PORT + 1)
    new_a.add_friend_norequest(b_real, net.now, dht_pk=b_dht, udp_addr=("11.0.0.2", PORT))
    assert net.run_until(lambda: a2.of(FriendOnline) and len(b.of(FriendOnline)) == 2, timeout=10)
    assert b.of(FriendOffline)  # the old session went down on B's side
    session = b.m.netcrypto.sessions[a_real]
    assert session.peer_dht_pk == new_a.netcrypto.ident.dht.public_key
    new_a.send_message(0, b"I am back", net.now)
    assert net.run_until(lambda: b.of(MessageReceived), timeout=2)


def test_changed_dht_key_from_discovery_reconnects() -> None:
    net, a, b, fa, _fb = make(10)
    online(net, a, b)
    b_real = a.m.friend_public_key(fa)
    # DHT/onion tells A that B's DHT key changed (here: to the same key B really has, after a
    # bogus one): A drops its session and reconnects with the key it is given.
    bogus = KeyPair.generate(SeededRng("bogus")).public_key
    a.m.connections.set_dht_pk(b_real, bogus, net.now)
    assert net.run_until(lambda: a.of(FriendOffline), timeout=2)
    a.m.connections.set_dht_pk(b_real, b.m.netcrypto.ident.dht.public_key, net.now)
    assert net.run_until(lambda: len(a.of(FriendOnline)) == 2, timeout=15)


def test_connection_up_over_a_relay_is_stamped_with_the_packets_time() -> None:
    """A session that comes up on a relayed packet (``receive_tcp``) starts its ALIVE timeout at
    that packet's time. It used to take friend_connection's own last time, 0 before its first
    timer: the next timer then killed the fresh connection as timed out (the peer saw it flap
    online-offline-online; a CI failure and a relay test showed it)."""
    rng = SeededRng(11)
    ka, kad = KeyPair.generate(rng.fork("ar")), KeyPair.generate(rng.fork("ad"))
    kb, kbd = KeyPair.generate(rng.fork("br")), KeyPair.generate(rng.fork("bd"))
    a = Node(Messenger(NetCrypto(ka, kad, rng.fork("a")), name=b"alice"))
    b = Node(Messenger(NetCrypto(kb, kbd, rng.fork("b")), name=b"bob"))
    b.m.netcrypto.tcp_enabled = True  # b reaches a over "relays" only
    b_addr: Addr = ("11.0.0.2", PORT)
    t = 5000.0
    a.m.add_friend_norequest(kb.public_key, t)
    fb = b.m.add_friend_norequest(ka.public_key, t, dht_pk=kad.public_key)
    for _ in range(200):  # b's timers never run: everything it does is packet-driven
        t += 0.01
        for packet in b.m.netcrypto.tcp_packets_to_send():
            a.receive(packet.data, b_addr, t)
        a.handle_timer(t)
        for _addr, data in a.m.datagrams_to_send():
            b.m.receive_tcp(data, kad.public_key, None, t)
            b.log.extend(b.m.events())
        if b.of(FriendOnline) and a.of(FriendOnline):
            break
    assert b.m.friend_state(fb) is FriendState.ONLINE
    b.handle_timer(t + 1.0)
    assert b.m.connections.counters["alive_timeouts"] == 0
    assert b.m.friend_state(fb) is FriendState.ONLINE
