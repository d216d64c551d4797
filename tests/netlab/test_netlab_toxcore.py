"""Real toxcore 0.2.18 in the lab: two peers behind separate NATs find each other through a
tox-bootstrapd on the "internet" and connect directly over UDP (hole punched).

This is the evidence that the lab behaves like the internet for toxcore (198.18.0.0/15 is not
LAN to it, so it reports UDP self-connectivity) and that NAT traversal works through the lab's
routers, which the VPN (issue 9) and the NAT/relay tests (issues 8, 11) build on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.libtoxcore import Connection
from tunnel.testing.netlab import NetLab, unavailable_reason
from tunnel.testing.toxcore import ToxPeer

pytestmark = [
    pytest.mark.root,
    pytest.mark.toxcore,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

BOOTSTRAP_UDP_PORT = 49050
BOOTSTRAP_TCP_PORT = 49051
PEER_PORTS = (49052, 49053)
CONNECT_TIMEOUT_S = 60.0


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[NetLab, Bootstrapd, list[ToxPeer]]]:
    made: list[ToxPeer] = []
    with NetLab() as lab:
        bsd_host = lab.add_public_host("bsd")
        hosts = [lab.add_nat_host("a"), lab.add_nat_host("b")]
        bsd = Bootstrapd(
            tmp_path,
            BOOTSTRAP_UDP_PORT,
            (BOOTSTRAP_TCP_PORT,),
            netns=bsd_host.netns,
            host=bsd_host.address,
        )
        with bsd:
            try:
                for host, port in zip(hosts, PEER_PORTS, strict=True):
                    # Created on a thread inside the host's namespace: its sockets and its
                    # iteration thread live there.
                    peer = lab.call_in(
                        host,
                        lambda name=host.name, port=port: ToxPeer(
                            name, start_port=port, hole_punching=True
                        ),
                    )
                    made.append(peer)
                    peer.bootstrap(bsd.host, bsd.udp_port, bsd.public_key)
                    # No TCP relay: with one, toxcore 0.2.18 often stays on it and never
                    # upgrades to UDP (issue 11); this test is about its UDP hole punching.
                yield lab, bsd, made
            finally:
                for peer in made:
                    peer.kill()


def test_peers_behind_nats_connect_directly(
    peers: tuple[NetLab, Bootstrapd, list[ToxPeer]],
) -> None:
    _lab, _bsd, (a, b) = peers
    assert a.wait_for(lambda: a.self_connection_status() == Connection.UDP or None, 30, "UDP")
    friend = a.friend_add(b.address, "hello from behind NAT a")
    via = a.wait_friend_connected(friend, CONNECT_TIMEOUT_S, via=Connection.UDP)
    assert via == Connection.UDP
    back = b.friend_by_public_key(a.public_key)
    assert b.wait_friend_connected(back, CONNECT_TIMEOUT_S, via=Connection.UDP) == Connection.UDP
