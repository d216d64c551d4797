"""Large lossless packets between two of our peers (issue 8): proof, fragments, relays.

Simulated sessions (:mod:`tunnel.testing.simnet`): the sender builds packets up to
``lossless_payload_now`` as the forward driver does; the receiver must get the byte stream
whole and in order whatever the path does.
"""

from __future__ import annotations

import pytest

from tunnel.netcrypto.large import LARGE_RETRY_MIN_S, MAX_PARTIAL_PACKETS, LargeSend, Reassembly
from tunnel.netcrypto.session import Lossless
from tunnel.testing.simnet import LinkParams, SimNetwork
from tunnel.wire.large_lossless import (
    FRAGMENT_DATA_BYTES,
    LARGE_PROBE_ID,
    split_fragments,
)

from .test_netcrypto_session import App, connect, make_pair

LIMIT_BYTES = 8192
STREAM_ID = 0xA2
_DHT: dict[bytes, bytes] = {}  # real key -> DHT key of the simulated peers


def _agreed(seed: int, link: LinkParams | None = None) -> tuple[SimNetwork, App, App, bytes, bytes]:
    net, a, b, a_real, a_dht, b_real, b_dht = make_pair(seed, link)
    connect(net, a, b, b_real, b_dht)
    _DHT[a_real.public_key] = a_dht.public_key
    _DHT[b_real.public_key] = b_dht.public_key
    sa = a.nc.sessions[b_real.public_key]
    sb = b.nc.sessions[a_real.public_key]
    for session in (sa, sb):
        session.enable_large_receive(LIMIT_BYTES)  # before the (simulated) Hello
    for session in (sa, sb):
        session.set_large_lossless(LIMIT_BYTES)
    return net, a, b, a_real.public_key, b_real.public_key


def _stream(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed + (i >> 8)) & 0xFF for i in range(size))


def _send_stream(
    net: SimNetwork, a: App, b: App, b_pk: bytes, data: bytes
) -> tuple[bytearray, list[int]]:
    """Send ``data`` from a to b in packets as large as the session allows at each moment;
    returns what b received (in order) and the sizes of the packets a queued."""
    got = bytearray()
    pending = bytearray(data)
    sizes: list[int] = []

    def pump() -> None:
        for payload in b.received:  # the App took them off the session's events
            if payload[0] == STREAM_ID:
                got.extend(payload[1:])
        b.received.clear()
        session = a.nc.sessions.get(b_pk)
        if pending and session is not None and session.established:
            room = a.nc.send_capacity(b_pk)
            size = session.lossless_payload_now - 1
            packets = []
            while pending and len(packets) < room:
                packets.append(bytes([STREAM_ID]) + bytes(pending[:size]))
                del pending[:size]
            queued = a.nc.send_lossless_many(b_pk, packets, net.now) if packets else 0
            sizes.extend(len(p) for p in packets[:queued])
            for p in reversed(packets[queued:]):
                pending[:0] = p[1:]
        if len(got) < len(data):
            net.call_later(0.001, pump)

    net.call_later(0.0, pump)
    net.run_until(lambda: len(got) >= len(data), timeout=120)
    return got, sizes


def test_probe_proves_the_path_then_large_packets_carry_the_stream() -> None:
    net, a, b, a_pk, b_pk = _agreed(61, LinkParams(latency_s=0.005))
    session = a.nc.sessions[b_pk]
    assert session.lossless_payload_now == 1373  # not proven yet
    data = _stream(3_000_000)
    got, sizes = _send_stream(net, a, b, b_pk, data)
    assert bytes(got) == data
    assert session.lossless_payload_now == LIMIT_BYTES
    assert session.counters["large_probes"] == 1
    large_bytes = sum(s for s in sizes if s == LIMIT_BYTES)
    assert large_bytes > len(data) // 2  # most of the stream went in large packets
    assert session.counters["large_fragmented"] == 0  # nothing was lost: nothing split
    receiver = b.nc.sessions[a_pk]
    assert receiver.counters["large_reassembled"] == 0
    # toxcore-sized packets would have needed ~6x the datagrams
    assert session.sent_packets < len(data) // 1373 // 2


def test_a_path_that_drops_large_datagrams_keeps_toxcore_sizes_and_loses_nothing() -> None:
    link = LinkParams(latency_s=0.005, max_datagram_bytes=1500)
    net, a, b, a_pk, b_pk = _agreed(62, link)
    session = a.nc.sessions[b_pk]
    data = _stream(400_000, seed=3)
    got, _ = _send_stream(net, a, b, b_pk, data)
    assert bytes(got) == data
    assert session.lossless_payload_now == 1373
    assert session.counters["large_probes"] == 1
    assert session.counters["large_fragmented"] >= 1  # the probe, resent in pieces
    assert b.nc.sessions[a_pk].counters["large_reassembled"] >= 1
    net.run_for(1.5)  # the peer's next acknowledgement covers the probe
    large = session.large
    assert large is not None
    assert not large.proven
    assert large.retry_at > 0
    # after the backoff the next burst of data tries once more, and fails again
    net.run_for(LARGE_RETRY_MIN_S + 1)
    more = _stream(50_000, seed=4)
    got, _ = _send_stream(net, a, b, b_pk, more)
    assert bytes(got) == more
    assert session.counters["large_probes"] == 2
    assert session.lossless_payload_now == 1373


def test_large_packets_in_flight_when_the_path_goes_relayed_arrive_as_fragments() -> None:
    """Direct UDP dies while large packets are in flight: their resends go through the TCP
    relay (toxcore-sized packets only) as fragments; the stream arrives whole and in order."""
    link = LinkParams(latency_s=0.01, bandwidth_bytes_per_s=4_000_000)
    net, a, b, a_pk, b_pk = _agreed(63, link)
    relayed_sizes: list[int] = []

    def shuttle() -> None:
        for src, dst, src_pk in ((a, b, a_pk), (b, a, b_pk)):
            for packet in src.nc.tcp_packets_to_send():
                relayed_sizes.append(len(packet.data))

                def deliver(d: bytes = packet.data, t: App = dst, k: bytes = _DHT[src_pk]) -> None:
                    t.nc.receive_tcp(d, k, "relay", net.now)

                net.call_later(0.02, deliver)
        net.call_later(0.002, shuttle)

    a.nc.tcp_enabled = True
    b.nc.tcp_enabled = True
    net.call_later(0.0, shuttle)
    session = a.nc.sessions[b_pk]
    data = _stream(3_000_000, seed=5)
    net.call_later(0.6, lambda: net.block("11.0.0.2"))
    got, _ = _send_stream(net, a, b, b_pk, data)
    assert bytes(got) == data
    assert relayed_sizes
    assert max(relayed_sizes) <= 1400
    assert session.counters["large_fragmented"] > 0
    assert b.nc.sessions[a_pk].counters["large_reassembled"] > 0
    assert session.lossless_payload_now == 1373  # relayed: toxcore sizes


def test_reassembly_rejects_forged_and_stale_fragments_and_bounds_memory() -> None:
    net, _a, b, a_pk, _b_pk = _agreed(64)
    receiver = b.nc.sessions[a_pk]
    payload = bytes([STREAM_ID]) + _stream(5000, seed=6)
    start = receiver.recv_start
    pieces = split_fragments(start & 0xFFFFFFFF, payload)
    now = net.now
    for piece in (pieces[0], pieces[0]):  # a duplicate piece is ignored
        receiver._handle_fragment(piece, now)
    bad_offset = bytearray(pieces[1])
    bad_offset[8] += 1
    receiver._handle_fragment(bytes(bad_offset), now)
    assert receiver.counters["large_fragment_malformed"] == 1
    far = split_fragments((start + 40_000) & 0xFFFFFFFF, payload)[0]
    receiver._handle_fragment(far, now)
    assert receiver.counters["large_fragment_stale"] == 1
    for piece in pieces[1:]:
        receiver._handle_fragment(piece, now)
    assert receiver.counters["large_reassembled"] == 1
    assert receiver.recv_start == start + 1
    assert isinstance(receiver.events[-1], Lossless)
    assert receiver.events[-1].payload == payload
    # many partial packets: the oldest are forgotten, memory stays bounded
    reassembly = Reassembly()
    for n in range(MAX_PARTIAL_PACKETS + 10):
        assert reassembly.add(n + 100, 5000, 0, bytes(FRAGMENT_DATA_BYTES), 0) is None
    assert len(reassembly) == MAX_PARTIAL_PACKETS
    assert reassembly.evicted == 10


def test_without_agreement_nothing_large_is_sent_or_taken() -> None:
    net, a, b, a_real, _, b_real, b_dht = make_pair(65)
    connect(net, a, b, b_real, b_dht)
    session = a.nc.sessions[b_real.public_key]
    assert session.lossless_payload_now == 1373
    with pytest.raises(ValueError, match="at most 1373 bytes"):
        a.nc.send_lossless_many(b_real.public_key, [bytes([STREAM_ID]) + bytes(2000)], net.now)
    # a receiver that never enabled large packets drops fragments as ordinary lossy data
    receiver = b.nc.sessions[a_real.public_key]
    assert receiver._reassembly is None


def test_large_send_state_machine() -> None:
    large = LargeSend(LIMIT_BYTES)
    assert large.probe_payload(0.0) is None  # not direct yet
    large.set_direct(True)
    probe = large.probe_payload(0.0)
    assert probe is not None
    assert probe[0] == LARGE_PROBE_ID
    assert len(probe) == LIMIT_BYTES
    large.probe = 7
    assert large.send_whole(7, retransmission=False)
    assert not large.send_whole(8, retransmission=False)  # unproven: others in pieces
    assert not large.send_whole(7, retransmission=True)  # the probe was lost
    large.acknowledged_to(8, 10.0)
    assert not large.proven
    assert large.retry_at == 10.0 + LARGE_RETRY_MIN_S
    assert large.probe_payload(10.0 + LARGE_RETRY_MIN_S / 2) is None  # backing off
    assert large.probe_payload(10.0 + LARGE_RETRY_MIN_S) is not None
    large.probe = 20
    large.acknowledged_to(21, 20.0)
    assert large.proven
    assert large.payload_now == LIMIT_BYTES
    assert large.send_whole(30, retransmission=False)
    large.set_direct(False)  # relayed: the proof is gone
    assert not large.proven
    assert large.payload_now == 1373
