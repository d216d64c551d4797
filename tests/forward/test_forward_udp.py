"""UDP forwarding (our extension): associations over lossy custom packets."""

from __future__ import annotations

from tunnel.forward.loopback import CLIENT_PK, SERVER_PK, Link, make_link
from tunnel.forward.rules import RuleSet
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.state import UDP_IDLE_TIMEOUT_S
from tunnel.testing.rng import SeededRng
from tunnel.wire.tuntox import MAX_UDP_PAYLOAD_BYTES, UDP_LOSSY_PACKET_ID, DenyCode, UdpDatagram


def _open_udp(link: Link, host: str = "dns.local", port: int = 53) -> tuple[int, int]:
    handle = link.client.open_tunnel(SERVER_PK, host, port, link.now, udp=True)
    link.run()
    assert handle in link.client_app.opened
    connect = link.server_app.connects[-1]
    assert connect.udp
    return handle, connect.handle


def test_udp_round_trip(link: Link) -> None:
    handle, server_handle = _open_udp(link)
    assert link.client.send_datagram(handle, b"query", link.now)
    packets = link.client.lossy_packets_to_send(SERVER_PK)
    assert packets[0][0] == UDP_LOSSY_PACKET_ID
    assert 200 <= UDP_LOSSY_PACKET_ID <= 254  # toxcore's custom lossy range
    for packet in packets:
        link.server.receive_packet(CLIENT_PK, packet, link.now)
    link.run()
    assert link.server_app.datagrams[server_handle] == [b"query"]
    for i in range(5):
        link.server.send_datagram(server_handle, b"answer %d" % i, link.now)
    link.run()
    assert link.client_app.datagrams[handle] == [b"answer %d" % i for i in range(5)]
    # Datagram boundaries are kept; no stream API on UDP tunnels.
    assert link.client.send_capacity(handle) == 0


def test_udp_oversize_and_unopened_datagrams_are_dropped(link: Link) -> None:
    handle, _ = _open_udp(link)
    assert not link.client.send_datagram(handle, bytes(MAX_UDP_PAYLOAD_BYTES + 1), link.now)
    assert link.client.send_datagram(handle, bytes(MAX_UDP_PAYLOAD_BYTES), link.now)
    assert not link.client.send_datagram(9999, b"x", link.now)
    link.client.receive_packet(SERVER_PK, UdpDatagram(0x7777, b"stray").encode(), link.now)
    stats = link.client.statistics()
    assert stats["datagram_dropped_too_big"] == 1
    assert stats["datagram_dropped_not_open"] == 1
    assert stats["datagram_unknown_tunnel"] == 1


def test_udp_idle_timeout_closes_both_ends(link: Link) -> None:
    handle, server_handle = _open_udp(link)
    link.advance(UDP_IDLE_TIMEOUT_S / 2)
    link.client.send_datagram(handle, b"keepalive", link.now)
    link.run()
    link.advance(UDP_IDLE_TIMEOUT_S / 2 + 1)  # the server saw traffic; not idle yet
    link.run()
    assert handle not in link.client_app.closed
    link.advance(UDP_IDLE_TIMEOUT_S)
    link.run()
    assert link.client_app.closed[handle] is None
    assert link.server_app.closed[server_handle] is None


def test_udp_rules_need_udp_rules() -> None:
    server = ServerMux(SeededRng(3), rules=RuleSet.parse(["dns.local:53"]))  # TCP only
    link = make_link(server=server)
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "dns.local", 53, link.now, udp=True)
    link.run()
    assert link.client_app.failed[handle].code is DenyCode.NOT_ALLOWED


def test_udp_disabled_on_server() -> None:
    link = make_link(server=ServerMux(SeededRng(4), allow_udp=False))
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "dns.local", 53, link.now, udp=True)
    link.run()
    assert link.client_app.failed[handle].code is DenyCode.UNSUPPORTED


def test_udp_open_waits_for_negotiation() -> None:
    link = make_link()
    handle = link.client.open_tunnel(SERVER_PK, "dns.local", 53, link.now, udp=True)
    link.online()
    link.run()
    assert handle in link.client_app.opened


def test_lossy_loss_is_tolerated(link: Link) -> None:
    handle, server_handle = _open_udp(link)
    link.drop_lossy = True
    link.client.send_datagram(handle, b"lost", link.now)
    link.run()
    link.drop_lossy = False
    link.client.send_datagram(handle, b"kept", link.now)
    link.run()
    assert link.server_app.datagrams[server_handle] == [b"kept"]
