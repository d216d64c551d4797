"""LossyOpener: lossy data packets opened outside the session (the VPN's data thread)."""

from __future__ import annotations

import threading

from tunnel.netcrypto.core import LossyPacket
from tunnel.netcrypto.lossy_opener import DROPPED
from tunnel.wire.ip_port import Addr

from .test_netcrypto_session import App, connect, make_pair

VPN_ID = 0xE4


def _capture(a: App, b: App, send: object) -> bytes:
    """The datagram ``send()`` makes ``a`` put out (taken off the wire, not delivered)."""
    a.nc.datagrams_to_send()
    assert callable(send)
    send()
    out = a.nc.datagrams_to_send()
    assert len(out) == 1
    return out[0][1]


def _setup() -> tuple[App, App, bytes, bytes, Addr]:
    net, a, b, a_real, _, b_real, b_dht = make_pair(41)
    connect(net, a, b, b_real, b_dht)
    assert net.run_until(lambda: b.nc.is_established(a_real.public_key), timeout=5)
    a_addr = ("11.0.0.1", 33445)
    return a, b, a_real.public_key, b_real.public_key, a_addr


def test_opens_fresh_lossy_packets_and_marks_the_path() -> None:
    a, b, a_pk, b_pk, _ = _setup()
    opener = b.nc.lossy_opener(a_pk, VPN_ID)
    assert opener is not None
    b.nc.udp_path_lost(a_pk)
    assert not b.nc.is_direct(a_pk, 100.0)
    before = b.nc.statistics(a_pk)
    assert before is not None
    packet = _capture(a, b, lambda: a.nc.send_lossy(b_pk, bytes([VPN_ID]) + b"ip packet", 1.0))
    assert opener.open(packet, 100.0) == bytes([VPN_ID]) + b"ip packet"
    assert b.nc.is_direct(a_pk, 100.0)  # the UDP path is alive as receive() would mark it
    after = b.nc.statistics(a_pk)
    assert after is not None
    assert after.received_packets == before.received_packets + 1
    # the session itself now refuses the same packet as a replay (shared window)
    b.nc.receive(packet, ("11.0.0.1", 33445), 100.0)
    assert not [e for e in b.nc.events() if isinstance(e, LossyPacket)]
    assert opener.open(packet, 100.0) == DROPPED


def test_leaves_other_ids_lossless_and_forgeries_to_the_session() -> None:
    a, b, a_pk, b_pk, a_addr = _setup()
    opener = b.nc.lossy_opener(a_pk, VPN_ID)
    assert opener is not None
    other = _capture(a, b, lambda: a.nc.send_lossy(b_pk, b"\xe6probe", 1.0))
    assert opener.open(other, 1.0) is None
    lossless = _capture(a, b, lambda: a.nc.send_lossless(b_pk, b"\xa0reliable", 1.0))
    assert opener.open(lossless, 1.0) is None
    forged = bytearray(_capture(a, b, lambda: a.nc.send_lossy(b_pk, b"\xe4x", 1.0)))
    forged[-1] ^= 1
    assert opener.open(bytes(forged), 1.0) is None
    assert opener.open(b"\x1b\x00", 1.0) is None
    # nothing was consumed: the session still takes both real packets
    b.nc.receive(other, a_addr, 1.0)
    b.nc.receive(lossless, a_addr, 1.0)
    events = b.nc.events()
    assert any(isinstance(e, LossyPacket) and e.payload == b"\xe6probe" for e in events)
    assert any(getattr(e, "payload", None) == b"\xa0reliable" for e in events)


def test_a_lossy_packet_that_acks_or_announces_lossless_goes_to_the_session() -> None:
    a, b, a_pk, b_pk, a_addr = _setup()
    opener = b.nc.lossy_opener(a_pk, VPN_ID)
    assert opener is not None
    # a has a lossless packet b never got: a's next lossy packet announces it
    _capture(a, b, lambda: a.nc.send_lossless(b_pk, b"\xa0lost", 1.0))
    announcing = _capture(a, b, lambda: a.nc.send_lossy(b_pk, b"\xe4x", 1.0))
    assert opener.open(announcing, 1.0) is None
    b.nc.receive(announcing, a_addr, 1.0)
    assert any(isinstance(e, LossyPacket) for e in b.nc.events())
    # b sends a lossless packet; a's lossy packet that acknowledges it must reach b's session
    packet = _capture(b, a, lambda: b.nc.send_lossless(a_pk, b"\xa0to a", 1.0))
    a.nc.receive(packet, ("11.0.0.2", 33445), 1.0)
    a.nc.events()
    acking = _capture(a, b, lambda: a.nc.send_lossy(b_pk, b"\xe4y", 1.0))
    assert opener.open(acking, 1.0) is None


def test_threads_share_the_replay_window_under_the_lock() -> None:
    a, b, a_pk, b_pk, a_addr = _setup()
    b.nc.sessions[a_pk].rx_lock = threading.Lock()
    opener = b.nc.lossy_opener(a_pk, VPN_ID)
    assert opener is not None
    sent = [bytes([VPN_ID]) + i.to_bytes(4) for i in range(2000)]
    packets = [_capture(a, b, lambda p=p: a.nc.send_lossy(b_pk, p, 1.0)) for p in sent]
    opened: list[bytes] = []

    def thread() -> None:
        for packet in packets:
            payload = opener.open(packet, 1.0)
            if payload:
                opened.append(payload)

    worker = threading.Thread(target=thread)
    worker.start()
    for packet in packets:  # the same packets through the session on this thread
        b.nc.receive(packet, a_addr, 1.0)
    worker.join(10)
    via_session = [e.payload for e in b.nc.events() if isinstance(e, LossyPacket)]
    # each packet was taken exactly once, by one side or the other
    assert sorted(opened + via_session) == sent


def test_an_opener_serves_its_session_until_the_receive_limit_grows() -> None:
    a, b, a_pk, b_pk, _ = _setup()
    opener = b.nc.lossy_opener(a_pk, VPN_ID)
    assert opener is not None
    session = b.nc.sessions[a_pk]
    assert opener.serves(session)
    assert not opener.serves(a.nc.sessions[b_pk])
    session.set_lossy_limits(receive_bytes=9001, send_bytes=9001)
    assert not opener.serves(session)  # its box is too small now: the caller builds another
    fresh = b.nc.lossy_opener(a_pk, VPN_ID)
    assert fresh is not None
    assert fresh.serves(session)
