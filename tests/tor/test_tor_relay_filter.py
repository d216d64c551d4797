"""The friends-only filter of a private relay (issue 10: a node's onion-service relay serves its
own friends only): the sans-IO relay server with ``admit`` refuses routing requests, OOB and
onion requests that involve a key it does not admit, and counts them."""

from __future__ import annotations

from ipaddress import ip_address

from tunnel.crypto import KeyPair
from tunnel.io.tor_node import is_private_relay_host, private_relay_addr
from tunnel.tcp_relay.client import (
    ClientStatus,
    OobReceived,
    RelayClientConnection,
    RouteOnline,
    RouteRefused,
)
from tunnel.tcp_relay.server import RelayServer
from tunnel.testing.rng import SeededRng


class _Relay:
    def __init__(self, admitted: set[bytes]) -> None:
        self.rng = SeededRng("relay-filter")
        self.keys = KeyPair.generate(self.rng.fork("server"))
        self.server = RelayServer(
            self.keys, self.rng.fork("s"), onion_enabled=True, admit=admitted.__contains__
        )
        self.clients: dict[int, RelayClientConnection] = {}

    def client(self, label: str) -> RelayClientConnection:
        keys = KeyPair.generate(self.rng.fork(label))
        conn = RelayClientConnection(keys, self.keys.public_key, self.rng.fork("c" + label), 0.0)
        self.clients[self.server.accept(0.0)] = conn
        return conn

    def pump(self) -> None:
        for _ in range(50):
            moved = False
            for handle, conn in self.clients.items():
                if out := conn.data_to_send():
                    self.server.receive_data(handle, out, 0.0)
                    moved = True
                if back := self.server.data_to_send(handle):
                    conn.receive_data(back, 0.0)
                    moved = True
            if not moved:
                return
        raise AssertionError("pump did not settle")


def _events(conn: RelayClientConnection) -> list[object]:
    out: list[object] = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def test_friends_are_linked_strangers_refused_and_counted() -> None:
    admitted: set[bytes] = set()
    relay = _Relay(admitted)
    owner, friend, stranger = relay.client("owner"), relay.client("friend"), relay.client("x")
    admitted.update({owner.self_keys.public_key, friend.self_keys.public_key})
    relay.pump()
    # a stranger still completes the handshake (it proves nothing), but gets nothing else
    assert {c.status for c in (owner, friend, stranger)} == {ClientStatus.CONFIRMED}
    for c in (owner, friend, stranger):
        _events(c)
    pk_owner, pk_friend, pk_stranger = (c.self_keys.public_key for c in (owner, friend, stranger))

    owner.send_routing_request(pk_friend)
    friend.send_routing_request(pk_owner)
    relay.pump()
    assert any(isinstance(e, RouteOnline) for e in _events(owner))
    assert any(isinstance(e, RouteOnline) for e in _events(friend))

    # the stranger asks for the owner, the owner (by mistake) for the stranger: both refused
    stranger.send_routing_request(pk_owner)
    owner.send_routing_request(pk_stranger)
    relay.pump()
    assert RouteRefused(pk_owner) in _events(stranger)
    assert RouteRefused(pk_stranger) in _events(owner)

    # OOB: friend -> owner delivered; stranger -> owner and owner -> stranger dropped
    friend.send_oob(pk_owner, b"hi")
    stranger.send_oob(pk_owner, b"spam")
    owner.send_oob(pk_stranger, b"leak")
    relay.pump()
    assert _events(owner) == [OobReceived(pk_friend, b"hi")]
    assert _events(stranger) == []

    # onion requests from strangers are not relayed; the friend's are
    assert stranger.send_onion_request(bytes(200))
    relay.pump()
    assert relay.server.next_event() is None
    assert friend.send_onion_request(bytes(200))
    relay.pump()
    assert relay.server.next_event() is not None

    stats = relay.server.statistics()
    assert stats.refused_not_admitted == 5
    assert stats.links_made == 1
    assert stats.oob_packets == 1


def test_without_filter_everyone_is_served() -> None:
    rng = SeededRng("relay-open")
    keys = KeyPair.generate(rng)
    server = RelayServer(keys, rng.fork("s"))
    assert server.admit is None
    assert server.statistics().refused_not_admitted == 0


def test_private_relay_placeholders_are_reserved_addresses() -> None:
    # The node never shares relays at reserved addresses with friends (SHARE_RELAYS, DHT-PK):
    # a private relay's placeholder must be one of them.
    for key in (bytes(32), bytes(range(32)), b"\xff" * 32):
        host, _port = private_relay_addr(key)
        assert is_private_relay_host(host)
        assert ip_address(host).is_reserved
