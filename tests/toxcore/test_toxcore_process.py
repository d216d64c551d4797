"""ToxPeerProcess: a real toxcore peer in a child process, driven over a pipe."""

from __future__ import annotations

import pytest

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.toxcore import (
    Connection,
    FriendLosslessPacket,
    FriendMessage,
    FriendRequest,
    ToxError,
)
from tunnel.testing.toxcore_bulk import packet_sequence_number
from tunnel.testing.toxcore_factory import ToxPeerFactory
from tunnel.testing.toxcore_process import ToxPeerProcess, ToxPeerProcessError
from tunnel.toxid import ToxId
from tunnel.wire.savedata import decode_savedata_untrusted

pytestmark = pytest.mark.toxcore

CONNECT_TIMEOUT_S = 60.0
DELIVERY_TIMEOUT_S = 20.0


def test_process_peer_offline_calls_and_errors() -> None:
    with ToxPeerProcess("child", udp=False) as child:
        assert ToxId.from_bytes(child.address).public_key == child.public_key
        assert child.udp_port is None
        with pytest.raises(ToxError) as own:
            child.friend_add(child.address, "me")
        assert own.value.code_name == "TOX_ERR_FRIEND_ADD_OWN_KEY"
        assert decode_savedata_untrusted(child.get_savedata()).public_key == child.public_key
        child.call("set_nospam", b"\x00\x00\x00\x2a")
        assert child.call("address")[32:36] == b"\x00\x00\x00\x2a"
        with pytest.raises(TimeoutError):
            child.wait_event(FriendRequest, 0.1)
        assert child.pid > 0
    assert child.returncode == 0
    with pytest.raises(ToxPeerProcessError):
        child.call("address")


@pytest.mark.slow
def test_process_peer_befriends_and_pumps(
    bootstrapd: Bootstrapd, tox_peer_factory: ToxPeerFactory
) -> None:
    alice = tox_peer_factory("alice-thread", bootstrap=bootstrapd)
    bob = tox_peer_factory.process("bob-process", bootstrap=bootstrapd)
    alice_in_bob = bob.friend_add(alice.address, "from a child process")
    request = alice.wait_event(FriendRequest, CONNECT_TIMEOUT_S)
    assert request.public_key == bob.public_key
    bob_in_alice = alice.friend_by_public_key(bob.public_key)
    assert bob.wait_friend_connected(alice_in_bob, CONNECT_TIMEOUT_S, Connection.UDP)
    alice.wait_friend_connected(bob_in_alice, CONNECT_TIMEOUT_S)

    alice.send_message(bob_in_alice, "hi child")
    message = bob.wait_event(FriendMessage, DELIVERY_TIMEOUT_S)
    assert message.message == b"hi child"

    count = 1000
    result = bob.pump_lossless(alice_in_bob, count, packet_id=170)
    assert (result.sent, result.error) == (count, None)
    alice.wait_for(
        lambda: alice.stats().lossless_packets >= count, DELIVERY_TIMEOUT_S, "pumped packets"
    )
    received = [e.data for e in alice.events(FriendLosslessPacket) if e.data[0] == 170]
    assert [packet_sequence_number(d) for d in received] == list(range(count))
