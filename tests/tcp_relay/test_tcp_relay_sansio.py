"""Sans-IO relay client and server together, with explicit ``now`` (tox-protocol.md 7.4-7.5)."""

from __future__ import annotations

import pytest

from tunnel.crypto import KeyPair, shared_key
from tunnel.tcp_relay.client import (
    ClientEvent,
    ClientStatus,
    ConnectionClosed,
    OnionResponseReceived,
    OobReceived,
    PongReceived,
    RelayClientConnection,
    RoutedData,
    RouteOffline,
    RouteOnline,
    RouteRefused,
    RouteRegistered,
    RouteStatus,
)
from tunnel.tcp_relay.framing import FrameCipher
from tunnel.tcp_relay.server import OnionRequestReceived, RelayServer, ServerLimits
from tunnel.testing.rng import SeededRng
from tunnel.wire.tcp_relay import (
    ClientHandshake,
    HandshakePlain,
    RoutingRequest,
    ServerHandshake,
)


class World:
    """One server and any number of clients, with a manual byte pump."""

    def __init__(self, seed: int = 1, **server_kwargs: object) -> None:
        self.rng = SeededRng(seed)
        self.server_keys = KeyPair.generate(self.rng)
        self.server = RelayServer(self.server_keys, self.rng.fork("server"), **server_kwargs)  # type: ignore[arg-type]
        self.clients: dict[int, RelayClientConnection] = {}
        self.now = 0.0

    def client(self, label: str) -> tuple[RelayClientConnection, int]:
        keys = KeyPair.generate(self.rng.fork(label))
        c = RelayClientConnection(
            keys, self.server_keys.public_key, self.rng.fork("c" + label), self.now
        )
        h = self.server.accept(self.now)
        self.clients[h] = c
        return c, h

    def pump(self) -> None:
        for _ in range(50):
            moved = False
            closed = set(self.server.pop_closed())
            for h, c in self.clients.items():
                if h in closed:
                    c.connection_lost("server closed")
                out = c.data_to_send()
                if out:
                    self.server.receive_data(h, out, self.now)
                    moved = True
                back = self.server.data_to_send(h)
                if back:
                    c.receive_data(back, self.now)
                    moved = True
            if not moved:
                return
        raise AssertionError("pump did not settle")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            deadlines = [d for d in [self.server.next_deadline()] if d is not None]
            deadlines += [d for c in self.clients.values() if (d := c.next_deadline()) is not None]
            nxt = min(deadlines, default=None)
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            self.server.handle_timer(self.now)
            for c in self.clients.values():
                c.handle_timer(self.now)
            self.pump()
        self.now = end


def events(c: RelayClientConnection) -> list[ClientEvent]:
    out = []
    while (e := c.next_event()) is not None:
        out.append(e)
    return out


def linked_pair(w: World) -> tuple[RelayClientConnection, RelayClientConnection, int, int]:
    a, _ = w.client("a")
    b, _ = w.client("b")
    w.pump()
    assert a.status is ClientStatus.CONFIRMED
    assert b.status is ClientStatus.CONFIRMED
    a.send_routing_request(b.self_keys.public_key)
    w.pump()
    assert b.routes() == {}
    b.send_routing_request(a.self_keys.public_key)
    w.pump()
    ca = a.connection_id_for(b.self_keys.public_key)
    cb = b.connection_id_for(a.self_keys.public_key)
    assert ca is not None
    assert cb is not None
    assert a.route_status(ca) is RouteStatus.ONLINE
    assert b.route_status(cb) is RouteStatus.ONLINE
    events(a)
    events(b)
    return a, b, ca, cb


def test_handshake_confirms_and_first_ping_pongs() -> None:
    w = World()
    a, h = w.client("a")
    first = a.data_to_send()
    assert len(first) == 128
    assert first[:32] == a.self_keys.public_key
    w.server.receive_data(h, first, 0.0)
    reply = w.server.data_to_send(h)
    assert len(reply) == 96
    assert w.server.statistics().pending == 1  # unconfirmed until a valid frame arrives
    a.receive_data(reply, 0.0)
    assert a.status is ClientStatus.CONFIRMED
    w.pump()
    evs = events(a)
    assert any(isinstance(e, PongReceived) for e in evs)
    st = w.server.statistics()
    assert (st.clients, st.pending, st.clients_confirmed) == (1, 0, 1)
    assert w.server.client_public_key(h) == a.self_keys.public_key


def test_routing_link_data_both_ways_and_stats() -> None:
    w = World()
    a, b, ca, cb = linked_pair(w)
    assert a.send_data(ca, b"\x1b" + b"A" * 1000)
    assert b.send_data(cb, b"\x1bhello")
    w.pump()
    assert events(b) == [RoutedData(cb, a.self_keys.public_key, b"\x1b" + b"A" * 1000)]
    assert events(a) == [RoutedData(ca, b.self_keys.public_key, b"\x1bhello")]
    st = w.server.statistics()
    assert st.links_made == 1
    assert st.routed_packets == 2
    assert st.routed_bytes == 1007


def test_routing_request_registered_then_online_events() -> None:
    w = World()
    a, _ = w.client("a")
    b, _ = w.client("b")
    w.pump()
    events(a)
    events(b)
    a.send_routing_request(b.self_keys.public_key)
    w.pump()
    evs = events(a)
    assert evs == [RouteRegistered(16, b.self_keys.public_key)]
    assert not a.send_data(16, b"x")  # not online yet
    b.send_routing_request(a.self_keys.public_key)
    w.pump()
    assert events(a) == [RouteOnline(16, b.self_keys.public_key)]
    assert events(b) == [
        RouteRegistered(16, a.self_keys.public_key),
        RouteOnline(16, a.self_keys.public_key),
    ]
    # asking again returns the same id and does not disturb the link
    a.send_routing_request(b.self_keys.public_key)
    w.pump()
    assert events(a) == []
    assert a.route_status(16) is RouteStatus.ONLINE


def test_routing_to_self_is_refused() -> None:
    w = World()
    a, _ = w.client("a")
    w.pump()
    events(a)
    a.send_routing_request(a.self_keys.public_key)
    w.pump()
    assert events(a) == [RouteRefused(a.self_keys.public_key)]


def test_all_240_slots_then_refused() -> None:
    w = World()
    a, _ = w.client("a")
    w.pump()
    events(a)
    rng = SeededRng("peers")
    for _ in range(240):
        a.send_routing_request(rng(32))
    w.pump()
    assert len(a.routes()) == 240
    extra = rng(32)
    a.send_routing_request(extra)
    w.pump()
    assert events(a)[-1] == RouteRefused(extra)


def test_disconnect_notifies_peer_and_relink() -> None:
    w = World()
    a, b, ca, cb = linked_pair(w)
    assert a.send_disconnect(ca)
    w.pump()
    assert events(b) == [RouteOffline(cb, a.self_keys.public_key)]
    assert b.route_status(cb) is RouteStatus.REGISTERED
    assert not b.send_data(cb, b"x")
    # a asks again: linked again with b's old slot
    a.send_routing_request(b.self_keys.public_key)
    w.pump()
    assert b.route_status(cb) is RouteStatus.ONLINE
    assert any(isinstance(e, RouteOnline) for e in events(a))


def test_client_going_away_notifies_peer() -> None:
    w = World()
    a, b, _, cb = linked_pair(w)
    h_a = next(h for h, c in w.clients.items() if c is a)
    w.server.connection_lost(h_a)
    w.pump()
    assert events(b) == [RouteOffline(cb, a.self_keys.public_key)]
    assert w.server.statistics().clients == 1


def test_oob_delivered_only_to_connected_clients() -> None:
    w = World()
    a, _ = w.client("a")
    b, _ = w.client("b")
    w.pump()
    events(b)
    assert a.send_oob(b.self_keys.public_key, b"\x18cookie")
    assert a.send_oob(bytes(32), b"nobody")
    assert not a.send_oob(b.self_keys.public_key, bytes(1025))
    w.pump()
    assert events(b) == [OobReceived(a.self_keys.public_key, b"\x18cookie")]
    st = w.server.statistics()
    assert (st.oob_packets, st.oob_bytes, st.oob_dropped) == (1, 7, 1)


def test_onion_request_event_and_response() -> None:
    w = World(onion_enabled=True)
    a, h = w.client("a")
    w.pump()
    events(a)
    payload = bytes(range(24)) + bytes(200)
    assert a.send_onion_request(payload)
    assert not a.send_onion_request(bytes(100))  # too short: never sent
    w.pump()
    ev = w.server.next_event()
    assert isinstance(ev, OnionRequestReceived)
    assert ev.nonce == bytes(range(24))
    assert ev.onion_data == bytes(200)
    assert ev.source.handle == h
    assert w.server.send_onion_response(ev.source, b"\x84response")
    w.pump()
    assert events(a) == [OnionResponseReceived(b"\x84response")]
    # a stale source (connection gone) is refused
    w.server.connection_lost(h)
    assert not w.server.send_onion_response(ev.source, b"\x84late")


def test_client_pings_every_30s_and_server_pings_too() -> None:
    w = World()
    a, _ = w.client("a")
    w.pump()
    events(a)
    w.advance(95.0)
    st = a.statistics()
    assert st.pings_sent == 4  # t=0, 30, 60, 90
    assert st.pongs_received == 4
    assert a.status is ClientStatus.CONFIRMED
    sst = w.server.statistics()
    assert sst.pings_sent >= 3
    assert sst.pongs_received == sst.pings_sent


def test_client_closes_when_pong_missing() -> None:
    w = World()
    a, _h = w.client("a")
    w.pump()
    events(a)
    a.handle_timer(30.0)  # second ping queued, but we never deliver it
    assert a.data_to_send()
    a.handle_timer(39.9)
    assert a.status is ClientStatus.CONFIRMED
    a.handle_timer(40.0)
    assert a.status is ClientStatus.CLOSED
    assert events(a) == [ConnectionClosed("ping timeout")]


def test_server_drops_client_that_stops_answering() -> None:
    w = World()
    _a, h = w.client("a")
    b, _ = w.client("b")
    w.pump()
    del w.clients[h]  # a goes silent: nothing delivered either way
    w.advance(45.0)
    st = w.server.statistics()
    assert st.closed_timeout == 1
    assert st.clients == 1
    assert b.status is ClientStatus.CONFIRMED


def test_client_handshake_timeout() -> None:
    w = World()
    a, _ = w.client("a")
    a.data_to_send()
    a.handle_timer(9.9)
    assert a.status is ClientStatus.HANDSHAKING
    a.handle_timer(10.0)
    assert a.status is ClientStatus.CLOSED


def test_server_handshake_timeout_and_pending_cap() -> None:
    w = World(limits=ServerLimits(max_pending=3, handshake_timeout_s=5.0))
    handles = [w.server.accept(0.0) for _ in range(5)]
    assert w.server.pop_closed() == handles[:2]  # oldest pending dropped
    w.server.handle_timer(1.0)
    w.server.handle_timer(5.5)
    assert sorted(w.server.pop_closed()) == handles[2:]
    assert w.server.statistics().closed_timeout == 3


def test_same_key_reconnect_replaces_old_connection() -> None:
    w = World()
    a, b, _ca, cb = linked_pair(w)
    a2 = RelayClientConnection(a.self_keys, w.server_keys.public_key, SeededRng("a2"), w.now)
    h2 = w.server.accept(w.now)
    w.clients[h2] = a2
    w.pump()
    assert a.status is ClientStatus.CLOSED
    assert a2.status is ClientStatus.CONFIRMED
    assert RouteOffline(cb, a.self_keys.public_key) in events(b)
    assert w.server.statistics().closed_replaced == 1


def test_wrong_server_key_fails_handshake_at_server() -> None:
    w = World()
    wrong = KeyPair.generate(SeededRng("wrong"))
    c = RelayClientConnection(KeyPair.generate(SeededRng("c")), wrong.public_key, SeededRng(3), 0)
    h = w.server.accept(0.0)
    w.server.receive_data(h, c.data_to_send(), 0.0)
    assert w.server.pop_closed() == [h]
    assert w.server.statistics().closed_bad_input == 1


def test_client_rejects_forged_server_handshake() -> None:
    rng = SeededRng(9)
    server = KeyPair.generate(rng)
    c = RelayClientConnection(KeyPair.generate(rng), server.public_key, rng, 0.0)
    c.data_to_send()
    c.receive_data(bytes(96), 0.0)
    assert c.status is ClientStatus.CLOSED
    assert c.statistics().bad_packets == 1


# ---------------------------------------------------------------------------- bad input


class RawClient:
    """A hand-driven client that can send arbitrary frame plaintexts or raw bytes."""

    def __init__(self, w: World, label: str) -> None:
        self.w = w
        rng = w.rng.fork("raw" + label)
        self.keys = KeyPair.generate(rng)
        temp = KeyPair.generate(rng)
        base = rng(24)
        self.h = w.server.accept(w.now)
        hello = ClientHandshake.seal(
            self.keys.public_key,
            shared_key(w.server_keys.public_key, self.keys.secret_key),
            rng(24),
            HandshakePlain(temp.public_key, base),
        )
        w.server.receive_data(self.h, hello.encode(), w.now)
        reply = ServerHandshake.decode(w.server.data_to_send(self.h)[:96]).open_untrusted(
            shared_key(w.server_keys.public_key, self.keys.secret_key)
        )
        self.cipher = FrameCipher(
            shared_key(reply.temp_public_key, temp.secret_key), base, reply.base_nonce
        )

    def send(self, plain: bytes) -> None:
        self.w.server.receive_data(self.h, self.cipher.seal(plain), self.w.now)

    def raw(self, data: bytes) -> None:
        self.w.server.receive_data(self.h, data, self.w.now)

    @property
    def closed(self) -> bool:
        return (
            self.h not in self.w.server.client_handles().values()
            and self.w.server.data_to_send(self.h) == b""
        )


BAD_PLAINTEXTS = [
    pytest.param(b"\x00" + bytes(31), id="routing-request-short"),
    pytest.param(b"\x02\x10\x10", id="connect-notification-long"),
    pytest.param(b"\x03\x20", id="disconnect-unused-slot"),
    pytest.param(b"\x03\x05", id="disconnect-reserved"),
    pytest.param(b"\x04" + bytes(4), id="ping-short"),
    pytest.param(b"\x05" + bytes(8), id="pong-zero"),
    pytest.param(b"\x06" + bytes(32), id="oob-empty"),
    pytest.param(b"\x06" + bytes(32 + 1025), id="oob-too-long"),
    pytest.param(b"\x01\x10" + bytes(32), id="routing-response-from-client"),
    pytest.param(b"\x07" + bytes(40), id="oob-recv-from-client"),
    pytest.param(b"\x09\x84", id="onion-response-from-client"),
    pytest.param(b"\x0a\x00", id="forward-request"),
    pytest.param(b"\x0b\x00", id="forwarding"),
    pytest.param(b"\x0c", id="reserved-0c"),
    pytest.param(b"\x0f\x00", id="reserved-0f"),
    pytest.param(b"\x20payload", id="data-unused-slot"),
]


@pytest.mark.parametrize("plain", BAD_PLAINTEXTS)
def test_protocol_violation_closes_only_offender(plain: bytes) -> None:
    w = World()
    a, b, ca, cb = linked_pair(w)
    bad = RawClient(w, "bad")
    bad.send(b"\x04" + bytes(7) + b"\x01")  # confirm with a ping
    assert bad.keys.public_key in w.server.client_handles()
    bad.send(plain)
    assert bad.h in w.server.pop_closed()
    assert bad.keys.public_key not in w.server.client_handles()
    assert w.server.statistics().closed_bad_input == 1
    # the others carry on
    assert a.send_data(ca, b"\x1bstill")
    w.pump()
    assert events(b) == [RoutedData(cb, a.self_keys.public_key, b"\x1bstill")]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda f: f[:2] + bytes([f[2] ^ 0xFF]) + f[3:], id="bad-mac"),
        pytest.param(lambda f: b"\x00\x05" + f[2:7], id="wrong-length-short"),
        pytest.param(lambda f: b"\x08\x01" + f[2:], id="length-over-2048"),
        pytest.param(lambda f: (len(f) - 1).to_bytes(2, "big") + f[2:-1] + b"\x00\x00", id="cut"),
    ],
)
def test_damaged_frames_close_only_offender(damage: object) -> None:
    w = World()
    a, b, ca, cb = linked_pair(w)
    bad = RawClient(w, "bad")
    bad.send(b"\x04" + bytes(7) + b"\x01")
    frame = bad.cipher.seal(RoutingRequest(a.self_keys.public_key).encode())
    bad.raw(damage(frame))  # type: ignore[operator]
    bad.raw(bytes(40))  # whatever follows is garbage to a desynchronised stream
    assert bad.h in w.server.pop_closed()
    assert a.send_data(ca, b"\x1bok")
    w.pump()
    assert events(b) == [RoutedData(cb, a.self_keys.public_key, b"\x1bok")]


def test_truncated_frame_waits_for_more() -> None:
    w = World()
    bad = RawClient(w, "slow")
    frame = bad.cipher.seal(b"\x04" + bytes(7) + b"\x01")
    bad.raw(frame[:-1])
    assert w.server.pop_closed() == []
    assert w.server.statistics().pending == 1
    bad.raw(frame[-1:])
    assert w.server.statistics().clients == 1


def test_garbage_handshake_closes() -> None:
    w = World()
    h = w.server.accept(0.0)
    w.server.receive_data(h, bytes(200), 0.0)
    assert w.server.pop_closed() == [h]


def test_receive_buffer_cap_closes() -> None:
    w = World(limits=ServerLimits(max_recv_buffer_bytes=8192))
    bad = RawClient(w, "big")
    bad.send(b"\x04" + bytes(7) + b"\x01")
    bad.raw(b"\x08\x00" + bytes(1000))  # an incomplete 2048-byte frame: needs more
    assert w.server.pop_closed() == []
    bad.raw(bytes(8000))  # more than the cap in one go
    assert w.server.pop_closed() == [bad.h]


def test_routing_request_flood_closes_offender() -> None:
    w = World(limits=ServerLimits(routing_requests_burst=100, routing_requests_per_s=10.0))
    a, b, ca, cb = linked_pair(w)
    bad = RawClient(w, "flood")
    bad.send(b"\x04" + bytes(7) + b"\x01")
    rng = SeededRng("flood")
    for _ in range(100):
        bad.send(RoutingRequest(rng(32)).encode())
    assert w.server.pop_closed() == []
    bad.send(RoutingRequest(rng(32)).encode())
    assert w.server.pop_closed() == [bad.h]
    assert w.server.statistics().closed_flood == 1
    assert a.send_data(ca, b"\x1bfine")
    w.pump()
    assert events(b) == [RoutedData(cb, a.self_keys.public_key, b"\x1bfine")]


def test_slow_reader_gets_data_dropped_not_sender_killed() -> None:
    w = World(limits=ServerLimits(max_send_data_bytes=10_000))
    a, b, ca, _ = linked_pair(w)
    h_b = next(h for h, c in w.clients.items() if c is b)
    del w.clients[h_b]  # b stops reading
    for _ in range(30):
        a.send_data(ca, bytes(1000))
        w.pump()
    st = w.server.statistics()
    assert st.routed_packets < 30
    assert st.routed_dropped > 0
    assert a.status is ClientStatus.CONFIRMED


def test_empty_data_is_dropped_not_forwarded() -> None:
    w = World()
    a, _b, _ca, _ = linked_pair(w)
    bad = RawClient(w, "empty")
    bad.send(RoutingRequest(a.self_keys.public_key).encode())
    a.send_routing_request(bad.keys.public_key)
    w.pump()
    bad.send(bytes([16]))  # data frame with no payload on a linked slot
    w.pump()
    assert a.status is ClientStatus.CONFIRMED
    assert w.server.statistics().routed_dropped == 1


def test_client_closes_on_bad_server_frame() -> None:
    w = World()
    a, _h = w.client("a")
    w.pump()
    a.receive_data(b"\x00\x20" + bytes(32), w.now)
    assert a.status is ClientStatus.CLOSED
    assert a.statistics().bad_packets == 1
