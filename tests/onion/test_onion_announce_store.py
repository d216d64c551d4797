"""OnionAnnounceStore (tox-protocol.md 5.4.3, 5.6): ping ids, is_stored answers, data
forwarding, expiry, replacement policy and a memory-bounded flood."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair, shared_key
from tunnel.onion.announce_store import (
    ONION_ANNOUNCE_MAX_ENTRIES,
    ONION_ANNOUNCE_TIMEOUT_S,
    OnionAnnounceStore,
)
from tunnel.testing.rng import SeededRng
from tunnel.wire.ip_port import IPPort
from tunnel.wire.onion import (
    AnnounceRequest,
    AnnounceRequestPayload,
    AnnounceResponse,
    AnnounceResponsePayload,
    DataResponse,
    OnionResponse3,
    open_data_response,
    seal_data_request,
    seal_onion_data_inner,
)
from tunnel.wire.packed_node import PackedNode

C_ADDR = ("11.0.0.3", 44101)
OTHER_C = ("11.0.0.4", 44101)
LAN_NODE = PackedNode(IPPort.parse("192.168.1.5", 44102), b"\x01" * 32)
WAN_NODE = PackedNode(IPPort.parse("11.0.0.7", 44102), b"\x02" * 32)
SENDBACK = b"sendback"


def _close_nodes(pk: bytes, count: int) -> Sequence[PackedNode]:
    return [LAN_NODE, WAN_NODE][:count]


class Store:
    def __init__(self, seed: int = 1) -> None:
        self.rng = SeededRng(seed)
        self.keys = KeyPair.generate(self.rng)
        self.store = OnionAnnounceStore(self.keys, self.rng.fork("store"), _close_nodes)

    def announce(
        self,
        sender: KeyPair,
        now: float,
        *,
        ping_id: bytes = bytes(32),
        search: bytes | None = None,
        data_pk: bytes = b"\xdd" * 32,
        source: tuple[str, int] = C_ADDR,
        ret3: bytes | None = None,
    ) -> AnnounceResponsePayload:
        payload = AnnounceRequestPayload(ping_id, search or sender.public_key, data_pk, SENDBACK)
        request = AnnounceRequest.seal(self.rng, sender, self.keys.public_key, payload)
        ret3 = ret3 or self.rng(177)
        self.store.receive(request.encode() + ret3, source, now)
        [(to, packet)] = self.store.datagrams_to_send()
        assert to == source
        outer = OnionResponse3.decode(packet)
        assert outer.return_path == ret3
        response = AnnounceResponse.decode(outer.payload)
        assert response.sendback == SENDBACK
        return response.open(shared_key(self.keys.public_key, sender.secret_key))


def test_announce_round_trip_and_search() -> None:
    s = Store()
    alice = KeyPair.generate(s.rng)
    first = s.announce(alice, 1000.0)
    assert first.is_stored == 0
    assert first.nodes == (WAN_NODE,)  # LAN node hidden from a non-LAN node C
    second = s.announce(alice, 1001.0, ping_id=first.ping_id_or_data_public_key)
    assert second.is_stored == 2
    assert len(s.store) == 1
    # Bob searches for Alice with a temporary key: he learns Alice's data pk.
    search_key = KeyPair.generate(s.rng)
    found = s.announce(search_key, 1002.0, search=alice.public_key, data_pk=bytes(32))
    assert found.is_stored == 1
    assert found.ping_id_or_data_public_key == b"\xdd" * 32
    # Alice restarted with a new data key: her old announcement is reported as stale (0).
    stale = s.announce(alice, 1003.0, data_pk=b"\xee" * 32)
    assert stale.is_stored == 0


def test_lan_requester_gets_lan_nodes() -> None:
    s = Store()
    answer = s.announce(KeyPair.generate(s.rng), 1000.0, source=("192.168.1.9", 44101))
    assert answer.nodes == (LAN_NODE, WAN_NODE)


def test_ping_id_bound_to_node_c_and_window() -> None:
    s = Store(2)
    alice = KeyPair.generate(s.rng)
    ping_id = s.announce(alice, 1000.0).ping_id_or_data_public_key
    assert s.announce(alice, 1000.0, ping_id=ping_id, source=OTHER_C).is_stored == 0
    assert len(s.store) == 0
    # Valid in the next window (previous-window acceptance), dead two windows later.
    assert s.announce(alice, 1000.0 + 300, ping_id=ping_id).is_stored == 2
    s.store.handle_timer(1000.0 + 300 + ONION_ANNOUNCE_TIMEOUT_S)
    assert len(s.store) == 0
    assert s.announce(alice, 1000.0 + 900, ping_id=ping_id).is_stored == 0
    assert len(s.store) == 0


def test_replayed_request_after_expiry_is_not_stored() -> None:
    s = Store(3)
    alice = KeyPair.generate(s.rng)
    ping_id = s.announce(alice, 1000.0).ping_id_or_data_public_key
    payload = AnnounceRequestPayload(ping_id, alice.public_key, b"\xdd" * 32, SENDBACK)
    request = AnnounceRequest.seal(s.rng, alice, s.keys.public_key, payload).encode()
    s.store.receive(request + bytes(177), C_ADDR, 1001.0)
    assert len(s.store) == 1
    s.store.datagrams_to_send()
    s.store.receive(request + bytes(177), C_ADDR, 1001.0 + 2000)  # replay much later
    assert s.store.announced_keys(1001.0 + 2000) == []


def test_forged_and_malformed_requests_are_counted() -> None:
    s = Store(4)
    alice = KeyPair.generate(s.rng)
    payload = AnnounceRequestPayload(bytes(32), alice.public_key, bytes(32), SENDBACK)
    request = bytearray(AnnounceRequest.seal(s.rng, alice, s.keys.public_key, payload).encode())
    request[-1] ^= 1
    s.store.receive(bytes(request) + bytes(177), C_ADDR, 1000.0)
    s.store.receive(bytes(request), C_ADDR, 1000.0)  # no ret3
    s.store.receive(b"\x83" + bytes(25) + bytes(32) + bytes(120 + 177 - 1), C_ADDR, 1000.0)
    s.store.receive(b"\x85" + bytes(100), C_ADDR, 1000.0)
    s.store.receive(b"", C_ADDR, 1000.0)
    assert s.store.datagrams_to_send() == []
    stats = s.store.statistics()
    assert stats.dropped_decrypt == 2  # tampered box, all-zero (low-order) sender key
    assert stats.dropped_malformed == 3


def test_data_request_forwarded_to_announced_client() -> None:
    s = Store(5)
    alice, bob = KeyPair.generate(s.rng), KeyPair.generate(s.rng)
    alice_data = KeyPair.generate(s.rng)
    ret3 = b"\x33" * 177
    ping_id = s.announce(alice, 1000.0, data_pk=alice_data.public_key).ping_id_or_data_public_key
    s.announce(alice, 1001.0, ping_id=ping_id, data_pk=alice_data.public_key, ret3=ret3)
    nonce = s.rng(24)
    inner = seal_onion_data_inner(bob, alice.public_key, nonce, b"\x20abcdhello")
    request = seal_data_request(s.rng, nonce, alice.public_key, alice_data.public_key, inner)
    s.store.receive(request.encode() + s.rng(177), OTHER_C, 1002.0)
    [(to, packet)] = s.store.datagrams_to_send()
    assert to == C_ADDR
    outer = OnionResponse3.decode(packet)
    assert outer.return_path == ret3
    sender, payload = open_data_response(
        DataResponse.decode(outer.payload), alice_data.secret_key, alice.secret_key
    )
    assert (sender, payload) == (bob.public_key, b"\x20abcdhello")
    # Unknown destination: dropped and counted; expired announcement likewise.
    other = seal_data_request(s.rng, nonce, bob.public_key, alice_data.public_key, inner)
    s.store.receive(other.encode() + s.rng(177), OTHER_C, 1002.0)
    s.store.receive(request.encode() + s.rng(177), OTHER_C, 1001.0 + ONION_ANNOUNCE_TIMEOUT_S)
    assert s.store.datagrams_to_send() == []
    assert s.store.statistics().dropped_no_entry == 2
    assert s.store.statistics().data_forwarded == 1


def _xor(a: bytes, b: bytes) -> int:
    return int.from_bytes(bytes(x ^ y for x, y in zip(a, b, strict=True)), "big")


def test_flood_keeps_memory_bounded_and_closest_keys() -> None:
    s = Store(6)
    store = s.store
    senders = [KeyPair.generate(s.rng) for _ in range(ONION_ANNOUNCE_MAX_ENTRIES * 3)]
    now = 1000.0
    for sender in senders:
        ping_id = s.announce(sender, now).ping_id_or_data_public_key
        s.announce(sender, now, ping_id=ping_id)
        assert len(store) <= ONION_ANNOUNCE_MAX_ENTRIES
    closest = sorted(senders, key=lambda k: _xor(k.public_key, s.keys.public_key))
    expected = {k.public_key for k in closest[:ONION_ANNOUNCE_MAX_ENTRIES]}
    assert set(store.announced_keys(now)) == expected
    assert store.statistics().announcements_rejected_full > 0
    # Once they expire, newcomers take the slots regardless of distance.
    later = now + ONION_ANNOUNCE_TIMEOUT_S
    far = closest[-1]
    ping_id = s.announce(far, later).ping_id_or_data_public_key
    assert s.announce(far, later, ping_id=ping_id).is_stored == 2
    assert len(store) <= ONION_ANNOUNCE_MAX_ENTRIES
    store.handle_timer(later)
    assert store.announced_keys(later) == [far.public_key]


_LONE = Store(7)


@given(st.sampled_from([b"\x83", b"\x85", b""]), st.binary(max_size=1500))
def test_random_bytes_never_raise(prefix: bytes, data: bytes) -> None:
    _LONE.store.receive(prefix + data, C_ADDR, 1000.0)
    assert _LONE.store.datagrams_to_send() == []


def test_oversized_data_request_dropped() -> None:
    s = Store(8)
    s.store.receive(b"\x85" + bytes(1400), C_ADDR, 1000.0)  # 1401 bytes with ret3
    s.store.receive(b"\x83" + bytes(400), C_ADDR, 1000.0)  # announce of the wrong size
    assert s.store.datagrams_to_send() == []
    assert s.store.statistics().dropped_malformed == 2
