"""The real-toxcore harness end to end: two libtoxcore 0.2.18 peers, bootstrapped ONLY from a
local tox-bootstrapd, become friends and exchange a custom lossless packet and a message.

Once over UDP (friend connection direct on loopback) and once with UDP disabled, through the
bootstrapd's TCP relay. Expected ~10 s each (toxcore-test-peers.md 5.1); bounded at 60 s.
"""

from __future__ import annotations

import pytest
import trio

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.toxcore import (
    Connection,
    FriendConnectionStatus,
    FriendLosslessPacket,
    FriendMessage,
    FriendReadReceipt,
    FriendRequest,
    ToxPeer,
)
from tunnel.testing.toxcore_bulk import packet_sequence_number, pump_lossless
from tunnel.testing.toxcore_factory import ToxPeerFactory
from tunnel.toxid import ToxId
from tunnel.wire.savedata import FRIEND_STATUS_CONFIRMED, decode_savedata_untrusted

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

CONNECT_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 15.0
CUSTOM_LOSSLESS_ID = 160


def _befriend(alice: ToxPeer, bob: ToxPeer, transport: Connection) -> tuple[int, int]:
    """alice sends a request, bob auto-accepts; both see the friend connected over transport."""
    request_text = f"hello bob, over {transport.name}"
    bob_in_alice = alice.friend_add(bob.address, request_text)
    request = bob.wait_event(FriendRequest, CONNECT_TIMEOUT_S)
    assert request.public_key == alice.public_key
    assert request.message == request_text.encode()
    alice_in_bob = bob.friend_by_public_key(alice.public_key)
    assert alice.wait_friend_connected(bob_in_alice, CONNECT_TIMEOUT_S, via=transport) is transport
    assert bob.wait_friend_connected(alice_in_bob, CONNECT_TIMEOUT_S, via=transport) is transport
    return bob_in_alice, alice_in_bob


def _exchange(alice: ToxPeer, bob: ToxPeer, bob_in_alice: int, alice_in_bob: int) -> None:
    payload = bytes([CUSTOM_LOSSLESS_ID]) + bytes(range(256)) * 5  # 1281 bytes, all values
    alice.send_lossless(bob_in_alice, payload)
    packet = bob.wait_event(FriendLosslessPacket, DELIVERY_TIMEOUT_S)
    assert packet.friend == alice_in_bob
    assert packet.data == payload

    message_id = alice.send_message(bob_in_alice, "ping ✓")
    message = bob.wait_event(FriendMessage, DELIVERY_TIMEOUT_S)
    assert (message.friend, message.message) == (alice_in_bob, "ping ✓".encode())
    alice.wait_event(FriendReadReceipt, DELIVERY_TIMEOUT_S, lambda e: e.message_id == message_id)

    reply = bytes([CUSTOM_LOSSLESS_ID + 1]) + b"pong"
    bob.send_lossless(alice_in_bob, reply)
    assert alice.wait_event(FriendLosslessPacket, DELIVERY_TIMEOUT_S).data == reply


def test_two_toxcore_peers_befriend_over_udp(
    bootstrapd: Bootstrapd, tox_peer_factory: ToxPeerFactory
) -> None:
    alice = tox_peer_factory("alice", bootstrap=bootstrapd)
    bob = tox_peer_factory("bob", bootstrap=bootstrapd)
    bob_in_alice, alice_in_bob = _befriend(alice, bob, Connection.UDP)
    _exchange(alice, bob, bob_in_alice, alice_in_bob)
    statuses = alice.events(FriendConnectionStatus)
    assert statuses
    assert statuses[-1].status is Connection.UDP
    _check_pump(alice, bob, bob_in_alice)
    _check_live_savedata(alice, bob, bootstrapd)


def _check_pump(alice: ToxPeer, bob: ToxPeer, bob_in_alice: int) -> None:
    """Bulk sending through the iteration hook: every numbered packet arrives, in order."""
    count = 300
    pumped_id = CUSTOM_LOSSLESS_ID + 2
    since = bob.event_count()
    result = pump_lossless(alice, bob_in_alice, count, packet_id=pumped_id)
    assert (result.sent, result.error) == (count, None)

    def pumped() -> list[bytes]:
        return [
            e.data
            for e in bob.events()[since:]
            if isinstance(e, FriendLosslessPacket) and e.data[0] == pumped_id
        ]

    bob.wait_for(lambda: len(pumped()) >= count, DELIVERY_TIMEOUT_S, f"{count} pumped packets")
    received = pumped()
    assert [packet_sequence_number(d) for d in received] == list(range(count))
    assert all(len(d) == 1373 for d in received)
    assert bob.stats().lossless_packets >= count


def _check_live_savedata(alice: ToxPeer, bob: ToxPeer, bootstrapd: Bootstrapd) -> None:
    """Save data of a connected peer (friends, DHT nodes, relays) decodes and re-encodes."""
    raw = alice.get_savedata()
    saved = decode_savedata_untrusted(raw)
    assert ToxId(saved.public_key, saved.nospam).to_bytes() == alice.address
    (friend,) = saved.friends
    assert friend.public_key == bob.public_key
    assert friend.status >= FRIEND_STATUS_CONFIRMED
    assert bootstrapd.public_key in {n.public_key for n in saved.dht_nodes + saved.tcp_relays}
    ours = saved.encode()
    assert raw == ours + bytes(len(raw) - len(ours))


def test_two_toxcore_peers_befriend_through_tcp_relay(
    bootstrapd: Bootstrapd, tox_peer_factory: ToxPeerFactory
) -> None:
    alice = tox_peer_factory("alice-tcp", bootstrap=bootstrapd, udp=False)
    bob = tox_peer_factory("bob-tcp", bootstrap=bootstrapd, udp=False)
    bob_in_alice, alice_in_bob = _befriend(alice, bob, Connection.TCP)
    _exchange(alice, bob, bob_in_alice, alice_in_bob)
    assert alice.friend_connection_status(bob_in_alice) is Connection.TCP


async def test_toxcore_peers_from_trio(
    bootstrapd: Bootstrapd, tox_peer_factory: ToxPeerFactory
) -> None:
    """The async waiters: a Trio test drives the same exchange without blocking the loop."""
    alice = tox_peer_factory("alice-trio", bootstrap=bootstrapd)
    bob = tox_peer_factory("bob-trio", bootstrap=bootstrapd)
    with trio.fail_after(CONNECT_TIMEOUT_S + 5):
        bob_in_alice = alice.friend_add(bob.address, "from trio")
        request = await bob.await_event(FriendRequest, CONNECT_TIMEOUT_S)
        assert request.public_key == alice.public_key
        await alice.await_friend_connected(bob_in_alice, CONNECT_TIMEOUT_S)
        since = bob.event_count()
        alice.send_lossless(bob_in_alice, bytes([CUSTOM_LOSSLESS_ID]) + b"trio")
        packet = await bob.await_event(FriendLosslessPacket, DELIVERY_TIMEOUT_S, since=since)
        assert packet.data == bytes([CUSTOM_LOSSLESS_ID]) + b"trio"
