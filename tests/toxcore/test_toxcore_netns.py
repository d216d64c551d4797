"""Real toxcore inside network namespaces (NetLab's 198.18.0.0/24 "internet", not LAN).

tox-bootstrapd and two ToxPeerProcess peers each in their own namespace: they become friends
over UDP, and, unlike on loopback, toxcore reports its own connection as UDP because its DHT
peers are outside its LAN ranges (toxcore-test-peers.md addendum).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.netlab import NetLab, unavailable_reason
from tunnel.testing.ports import PortPool, port_is_free
from tunnel.testing.toxcore import Connection, FriendLosslessPacket, FriendRequest
from tunnel.testing.toxcore_process import ToxPeerProcess

pytestmark = [
    pytest.mark.toxcore,
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

CONNECT_TIMEOUT_S = 60.0


def test_toxcore_in_namespaces_connects_over_udp(tmp_path: Path, port_pool: PortPool) -> None:
    bsd_udp, bsd_tcp, a_port, b_port = port_pool.allocate(4)
    with NetLab() as lab:
        srv = lab.add_public_host("srv")
        host_a = lab.add_public_host("a")
        host_b = lab.add_public_host("b")
        with (
            Bootstrapd(tmp_path, bsd_udp, (bsd_tcp,), netns=srv.netns, host=srv.address) as bsd,
            ToxPeerProcess("a", netns=host_a.netns, start_port=a_port) as alice,
            ToxPeerProcess("b", netns=host_b.netns, start_port=b_port) as bob,
        ):
            assert (alice.udp_port, bob.udp_port) == (a_port, b_port)
            assert port_is_free(a_port)  # bound inside the namespace, not here
            for peer in (alice, bob):
                peer.bootstrap(bsd.host, bsd.udp_port, bsd.public_key)
                peer.add_tcp_relay(bsd.host, bsd.tcp_ports[0], bsd.public_key)
            bob_in_alice = alice.friend_add(bob.address, "across namespaces")
            request = bob.wait_event(FriendRequest, CONNECT_TIMEOUT_S)
            assert request.public_key == alice.public_key
            alice_in_bob = bob.friend_by_public_key(alice.public_key)
            assert alice.wait_friend_connected(bob_in_alice, CONNECT_TIMEOUT_S, Connection.UDP)
            assert alice.call("self_connection_status") is Connection.UDP
            alice.send_lossless(bob_in_alice, b"\xa0netns")
            packet = bob.wait_event(FriendLosslessPacket, CONNECT_TIMEOUT_S)
            assert (packet.friend, packet.data) == (alice_in_bob, b"\xa0netns")
