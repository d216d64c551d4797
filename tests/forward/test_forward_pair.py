"""Client mux and server mux back to back: open, transfer, close, many tunnels, offline."""

from __future__ import annotations

import hashlib

from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import ConnectRequest, PeerModeKnown
from tunnel.forward.loopback import CLIENT_PK, SERVER_PK, Link, make_link
from tunnel.forward.state import PeerMode
from tunnel.testing.rng import SeededRng
from tunnel.wire.tuntox import CapFlag


def _blob(seed: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes (SHAKE-256 of the seed)."""
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def test_negotiation_makes_both_sides_extended(link: Link) -> None:
    assert link.client.peer_mode(SERVER_PK) is PeerMode.EXTENDED
    assert link.server.peer_mode(CLIENT_PK) is PeerMode.EXTENDED
    modes = [e for e in link.client_app.events if isinstance(e, PeerModeKnown)]
    assert modes[0].caps is not None
    assert modes[0].caps.flags == CapFlag.ALL


def test_open_and_transfer_large_data_both_ways(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "db.internal", 5432, link.now)
    link.run()
    assert handle in link.client_app.opened
    (request,) = link.server_app.connects
    assert (request.host, request.port, request.udp) == ("db.internal", 5432, False)
    up = _blob(1, 3_000_000)
    down = _blob(2, 2_500_000)
    link.client_app.send(handle, up, eof=True)
    link.server_app.send(request.handle, down, eof=True)
    link.run()
    assert bytes(link.server_app.received[request.handle]) == up
    assert bytes(link.client_app.received[handle]) == down
    # Half-close both ways: each side saw the other's EOF, then a clean close.
    assert handle in link.client_app.eof
    assert request.handle in link.server_app.eof
    assert link.client_app.closed[handle] is None
    assert link.server_app.closed[request.handle] is None
    assert link.client.tunnel_count() == link.server.tunnel_count() == 0


def test_half_close_keeps_the_other_direction_open(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "127.0.0.1", 80, link.now)
    link.run()
    server_handle = link.server_app.connects[0].handle
    link.client_app.send(handle, b"GET / HTTP/1.0\r\n\r\n", eof=True)
    link.run()
    assert server_handle in link.server_app.eof
    assert handle not in link.client_app.closed
    response = _blob(3, 200_000)
    link.server_app.send(server_handle, response, eof=True)
    link.run()
    assert bytes(link.client_app.received[handle]) == response
    assert link.client_app.closed[handle] is None


def test_many_concurrent_tunnels(link: Link) -> None:
    handles = []
    for batch in range(2):  # the server allows 128 connects in progress per friend
        for i in range(100):
            handles.append(link.client.open_tunnel(SERVER_PK, "svc", 1000 + batch * 100 + i, 0))
        link.run()
    assert set(handles) <= link.client_app.opened
    by_port = {c.port: c.handle for c in link.server_app.connects}
    assert len(by_port) == 200
    for i, handle in enumerate(handles):
        link.client_app.send(handle, _blob(100 + i, 5000 + 37 * i), eof=True)
        link.server_app.send(by_port[1000 + i], _blob(500 + i, 4000 + 11 * i), eof=True)
    link.run()
    for i, handle in enumerate(handles):
        server_handle = by_port[1000 + i]
        assert bytes(link.server_app.received[server_handle]) == _blob(100 + i, 5000 + 37 * i)
        assert bytes(link.client_app.received[handle]) == _blob(500 + i, 4000 + 11 * i)
        assert link.client_app.closed[handle] is None
    assert link.server.tunnel_count() == 0


def test_budget_is_respected_and_data_still_arrives_whole() -> None:
    link = make_link()
    link.budget = 3
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "svc", 9, link.now)
    link.run()
    data = _blob(9, 400_000)
    link.client_app.send(handle, data, eof=True)
    sizes: list[int] = []
    for _ in range(10_000):
        link.client_app.pump(link.now)
        packets = link.client.packets_to_send(SERVER_PK, 3)
        sizes.append(len(packets))
        for packet in packets:
            link.server.receive_packet(CLIENT_PK, packet, link.now)
        link.server_app.pump(link.now)
        for packet in link.server.packets_to_send(CLIENT_PK, 3):
            link.client.receive_packet(SERVER_PK, packet, link.now)
        if not packets and not link.client_app.outgoing[handle]:
            break
    assert max(sizes) == 3
    server_handle = link.server_app.connects[0].handle
    assert hashlib.sha256(link.server_app.received[server_handle]).digest() == (
        hashlib.sha256(data).digest()
    )


def test_send_capacity_and_space_event(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "svc", 9, link.now)
    link.run()
    room = link.client.send_capacity(handle)
    link.client.stream_data(handle, bytes(room), link.now)
    assert link.client.send_capacity(handle) == 0
    link.run()
    assert link.client.send_capacity(handle) > 0
    assert link.client_app.space_events >= 1


def test_friend_offline_closes_every_tunnel_on_both_sides(link: Link) -> None:
    handles = [link.client.open_tunnel(SERVER_PK, "svc", 2000 + i, link.now) for i in range(5)]
    link.run()
    pending = link.client.open_tunnel(SERVER_PK, "svc", 3000, link.now)
    link.server_app.connect_policy = None  # the server's connect stays in progress
    link.step()
    link.step()
    link.offline()
    link.step()
    link.run()
    for handle in handles:
        assert link.client_app.closed[handle] == "friend went offline"
    for connect in link.server_app.connects:
        assert link.server_app.closed[connect.handle] is not None
    assert link.server.tunnel_count() == 0
    # The unanswered open survives the outage and is re-requested after the reconnect.
    assert pending not in link.client_app.failed
    link.server_app.connect_policy = lambda _: None
    link.online()
    link.run()
    assert pending in link.client_app.opened


def test_pending_open_while_offline_times_out() -> None:
    link = make_link()
    handle = link.client.open_tunnel(SERVER_PK, "svc", 22, link.now)
    link.run()
    assert link.client.next_deadline() == 30.0
    link.advance(30.0)
    link.run()
    assert link.client_app.failed[handle].code.name == "TIMEOUT"


def test_friend_search_does_not_eat_the_answer_timeout() -> None:
    """Regression (netlab -W): an open made while the server is still being found must not
    fail "no answer" just because finding the friend took longer than ``open_timeout_s``."""
    client = ClientMux(SeededRng(7), open_timeout_s=5.0, offline_wait_s=60.0)
    link = make_link(client=client, policy=None)
    handle = link.client.open_tunnel(SERVER_PK, "svc", 22, link.now)
    link.advance(40.0)  # friend search: longer than the answer timeout
    assert handle not in link.client_app.failed
    link.online()
    link.run()
    (request,) = link.server_app.connects
    link.advance(4.0)  # the server's connect is slow but within the answer timeout
    link.server.connect_result(request.handle, None, link.now)
    link.run()
    assert handle in link.client_app.opened


def test_unanswered_request_times_out_from_sending() -> None:
    client = ClientMux(SeededRng(7), open_timeout_s=5.0, offline_wait_s=60.0)
    link = make_link(client=client, policy=None)
    handle = link.client.open_tunnel(SERVER_PK, "svc", 22, link.now)
    link.advance(40.0)
    link.online()
    link.run()
    link.advance(5.0)
    link.run()
    assert link.client_app.failed[handle].reason == "no answer from the server"


def test_offline_wait_bounds_an_open_while_the_friend_is_offline() -> None:
    client = ClientMux(SeededRng(7), open_timeout_s=5.0, offline_wait_s=60.0)
    link = make_link(client=client)
    handle = link.client.open_tunnel(SERVER_PK, "svc", 22, link.now)
    link.advance(59.0)
    assert handle not in link.client_app.failed
    link.advance(1.0)
    link.client_app.pump(link.now)
    assert link.client_app.failed[handle].reason == "server not online"


def test_ping_rtt(link: Link) -> None:
    link.client.ping(SERVER_PK, link.now)
    link.client_app.pump(link.now)
    packets = link.client.packets_to_send(SERVER_PK)
    link.now += 0.25
    for packet in packets:
        link.server.receive_packet(CLIENT_PK, packet, link.now)
    link.now += 0.25
    for packet in link.server.packets_to_send(CLIENT_PK):
        link.client.receive_packet(SERVER_PK, packet, link.now)
    link.client_app.pump(link.now)
    assert link.client_app.pongs == [0.5]


def test_ping_timeout() -> None:
    link = make_link()
    link.online()
    link.run()
    link.client.ping(SERVER_PK, link.now)
    link.client.packets_to_send(SERVER_PK)  # lost
    link.advance(10.0)
    link.client_app.pump(link.now)
    assert link.client_app.ping_timeouts == 1


def test_data_before_ack_is_buffered(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "svc", 7, link.now)
    link.client.stream_data(handle, b"early bytes", link.now)
    link.client.stream_eof(handle, link.now)
    link.run()
    server_handle = link.server_app.connects[0].handle
    assert bytes(link.server_app.received[server_handle]) == b"early bytes"
    assert server_handle in link.server_app.eof


def test_local_abort_resets_peer(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "svc", 7, link.now)
    link.run()
    server_handle = link.server_app.connects[0].handle
    link.client.close_tunnel(handle, "connection reset by local app", link.now)
    link.run()
    assert link.server_app.closed[server_handle] == ("reset by peer: connection reset by local app")
    assert link.client.tunnel_count() == 0


def test_abandoned_open_is_closed_when_ack_arrives_late() -> None:
    link = make_link(policy=None)
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "svc", 7, link.now)
    link.run()
    (request,) = link.server_app.connects
    link.client.close_tunnel(handle, "gave up", link.now)  # e.g. local socket closed
    link.server.connect_result(request.handle, None, link.now)
    link.run()
    assert link.client.statistics()["late_ack_closed"] == 1
    assert link.server_app.closed[request.handle] is not None
    assert link.server.tunnel_count() == 0


def test_connect_request_for_cidr_only_rules_is_restricted() -> None:
    from tunnel.forward.rules import RuleSet
    from tunnel.forward.server_mux import ServerMux

    server = ServerMux(SeededRng(4), rules=RuleSet.parse(["10.0.0.0/8:22"]))
    link = make_link(server=server)
    link.online()
    link.run()
    link.client.open_tunnel(SERVER_PK, "host.lan", 22, link.now)
    link.run()
    (request,) = link.server_app.connects
    assert isinstance(request, ConnectRequest)
    assert request.restrict_to is not None
    assert [str(n) for n in request.restrict_to] == ["10.0.0.0/8"]


def test_client_side_reconnect_unseen_by_server_drops_stale_tunnels(link: Link) -> None:
    handle = link.client.open_tunnel(SERVER_PK, "svc", 1, link.now)
    link.run()
    server_handle = link.server_app.connects[0].handle
    # Only the client noticed the friend connection bounce.
    link.client.friend_offline(SERVER_PK, link.now)
    link.client.friend_online(SERVER_PK, link.now)
    link.run()
    assert link.client_app.closed[handle] == "friend went offline"
    assert link.server_app.closed[server_handle] is not None
    assert link.server.statistics()["peer_restarted"] == 1
    assert link.server.peer_mode(CLIENT_PK) is PeerMode.EXTENDED
    again = link.client.open_tunnel(SERVER_PK, "svc", 1, link.now)
    link.client_app.send(again, b"x" * 100_000, eof=True)
    link.run()
    assert bytes(link.server_app.received[link.server_app.connects[1].handle]) == b"x" * 100_000


def test_ack_before_any_caps_answer_means_plain_tuntox() -> None:
    from tunnel.forward.client_mux import ClientMux
    from tunnel.wire.tuntox import AckTunnel, decode_frame_untrusted

    client = ClientMux(SeededRng(3))
    client.friend_online(SERVER_PK, 0.0)
    handle = client.open_tunnel(SERVER_PK, "svc", 1, 0.0)
    _caps_ping, request = (decode_frame_untrusted(p) for p in client.packets_to_send(SERVER_PK))
    forward_id = request.forward_id  # type: ignore[union-attr]
    client.receive_packet(SERVER_PK, AckTunnel(9, forward_id).encode(), 0.0)
    assert client.peer_mode(SERVER_PK) is PeerMode.LEGACY
    assert client.wire_id(handle) == 9
    client.stream_eof(handle, 0.0)
    assert client.packets_to_send(SERVER_PK) == [bytes.fromhex("a26b060100090000")]  # TCP_FIN


def test_driver_helpers_output_and_deadlines(link: Link) -> None:
    assert link.client.friends_with_output() == []
    handle = link.client.open_tunnel(SERVER_PK, "svc", 1, link.now)
    assert link.client.friends_with_output() == [SERVER_PK]
    link.run()
    assert link.client.next_deadline() is None
    link.client.close_tunnel(handle, None, link.now)
    link.run()
    # The closed tunnel's id rests as a tombstone, which is the only pending timer.
    deadline = link.client.next_deadline()
    assert deadline is not None
    link.advance(deadline - link.now)
    assert link.client.next_deadline() is None
    assert link.client.statistics()["tunnels_opened"] == 1
    assert link.client.next_event() is None
