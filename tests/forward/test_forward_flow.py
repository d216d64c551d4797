"""Per-tunnel flow control: a slow consumer on one tunnel never stalls another."""

from __future__ import annotations

import hashlib

from tunnel.forward.client_mux import ClientMux
from tunnel.forward.loopback import CLIENT_PK, SERVER_PK, Link, make_link
from tunnel.forward.state import DEFAULT_WINDOW_BYTES, LEGACY_MAX_UNCONSUMED_BYTES
from tunnel.testing.rng import SeededRng
from tunnel.wire.tuntox import TcpData


def _blob(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def _two_tunnels(link: Link) -> tuple[int, int, int, int]:
    slow = link.client.open_tunnel(SERVER_PK, "slow", 1, link.now)
    fast = link.client.open_tunnel(SERVER_PK, "fast", 2, link.now)
    link.run()
    by_host = {c.host: c.handle for c in link.server_app.connects}
    return slow, fast, by_host["slow"], by_host["fast"]


def test_slow_consumer_does_not_stall_other_tunnel() -> None:
    link = make_link()
    link.budget = 4  # a narrow friend connection: fairness matters
    link.online()
    link.run()
    slow, fast, slow_srv, fast_srv = _two_tunnels(link)
    link.client_app.paused.add(slow)  # the local app behind `slow` stops reading
    slow_data = _blob(1, 3_000_000)
    fast_data = _blob(2, 3_000_000)
    link.server_app.send(slow_srv, slow_data, eof=True)
    link.server_app.send(fast_srv, fast_data, eof=True)
    link.run()
    # The fast tunnel completed in full...
    assert bytes(link.client_app.received[fast]) == fast_data
    assert link.client_app.closed.get(fast, "open") in (None, "open")
    assert fast in link.client_app.eof
    # ...while the slow one got exactly one window and nothing was lost or reset.
    assert len(link.client_app.received[slow]) == DEFAULT_WINDOW_BYTES
    assert slow not in link.client_app.closed
    assert "flow_control_violation" not in link.server.statistics()
    # The server stops reading the slow service once its buffer is full (back-pressure).
    assert link.server.send_capacity(slow_srv) == 0
    # The consumer catches up: the rest flows, byte-exact.
    link.client_app.resume(slow, link.now)
    link.run()
    assert bytes(link.client_app.received[slow]) == slow_data
    assert slow in link.client_app.eof


def test_flow_control_violation_resets_only_that_tunnel(link: Link) -> None:
    slow, fast, slow_srv, fast_srv = _two_tunnels(link)
    victim = slow
    wire_id = link.client.wire_id(victim)
    assert wire_id is not None
    # A misbehaving server ignores the window and floods one tunnel.
    for _ in range(DEFAULT_WINDOW_BYTES // 1365 + 2):
        link.client.receive_packet(SERVER_PK, TcpData(wire_id, bytes(1365)).encode(), link.now)
    link.run()
    assert link.client.statistics()["flow_control_violation"] == 1
    assert link.client_app.closed[victim] == "peer exceeded its window"
    assert fast not in link.client_app.closed
    # The server's end got TUN_RESET with the reason.
    assert link.server_app.closed[slow_srv] == "reset by peer: peer exceeded its window"
    link.server_app.send(fast_srv, b"still fine", eof=True)
    link.run()
    assert bytes(link.client_app.received[fast]) == b"still fine"


def test_plain_tuntox_peer_slow_consumer_is_closed_with_error() -> None:
    # Our server facing a client without extensions cannot throttle it per tunnel.
    client = ClientMux(SeededRng(5), negotiate=False)
    link = make_link(client=client)
    link.online()
    link.run()
    slow, fast, slow_srv, fast_srv = _two_tunnels(link)
    link.server_app.paused.add(slow_srv)
    link.client_app.send(slow, _blob(3, LEGACY_MAX_UNCONSUMED_BYTES + 100_000), eof=True)
    link.client_app.send(fast, _blob(4, 1_000_000), eof=True)
    link.run()
    assert bytes(link.server_app.received[fast_srv]) == _blob(4, 1_000_000)
    assert link.server_app.closed[slow_srv] == "local consumer too slow"
    assert link.server.statistics()["legacy_buffer_overflow"] == 1
    # The client learns through TCP_FIN (all tuntox has) and stops.
    assert slow in link.client_app.closed


def test_window_updates_are_batched(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "svc", 1, link.now)
    link.run()
    server_handle = link.server_app.connects[0].handle
    link.log_wire = True
    link.server_app.send(server_handle, _blob(5, 1_000_000))
    link.run()
    windows = [p for d, p in link.wire_log if d == "c2s" and p[2:4] == b"\x7a\x03"]
    data = [p for d, p in link.wire_log if d == "s2c" and p[2:4] == b"\x06\x00"]
    assert 0 < len(windows) <= 1_000_000 // (DEFAULT_WINDOW_BYTES // 4) + 1
    # Frames are full (1365 bytes) except where a window boundary cuts one short.
    assert sum(len(p) - 8 for p in data) == 1_000_000
    assert len(data) <= -(-1_000_000 // 1365) + len(windows) + 1
    assert len(link.client_app.received[handle]) == 1_000_000
    assert CLIENT_PK != SERVER_PK
