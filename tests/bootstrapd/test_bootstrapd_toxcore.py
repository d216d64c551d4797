"""``tunnel bootstrapd`` as real toxcore clients use it: the command itself, in a subprocess.

tox-bootstrapd is a DHT node, an onion relay and announce store, and a TCP relay in one
process; ours must be all three for a libtoxcore client whose ONLY bootstrap node it is
(issue 4 item 3, issue 5 item 2, issue 6 proof 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tunnel.testing.our_bootstrapd import OurBootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_events import FriendLosslessPacket

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

PORTS = PortPool(53000, 53999)
LOCALHOST = "127.0.0.1"
TIMEOUT_S = 60.0


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[OurBootstrapd]:
    bsd = OurBootstrapd(tmp_path, PORTS.allocate_one(), (PORTS.allocate_one(),), motd="interop")
    bsd.start()
    try:
        yield bsd
    finally:
        status = bsd.stop()
    assert status == 0, bsd.log.read_text()


@pytest.fixture
def peers() -> Iterator[list[ToxPeer]]:
    made: list[ToxPeer] = []
    try:
        yield made
    finally:
        for peer in made:
            peer.kill()


def test_toxcore_self_connects_through_tunnel_bootstrapd_only(
    ours: OurBootstrapd, peers: list[ToxPeer]
) -> None:
    peer = ToxPeer("alice", start_port=PORTS.allocate_one())
    peers.append(peer)
    peer.bootstrap(LOCALHOST, ours.udp_port, ours.public_key)
    status = peer.wait_self_connected(TIMEOUT_S)
    assert status.name in ("UDP", "TCP")


def test_udp_less_toxcore_peers_befriend_through_our_relay_and_onion_over_tcp(
    ours: OurBootstrapd, peers: list[ToxPeer]
) -> None:
    """UDP off: the onion must run over our TCP relay (node A over TCP), and so must data."""
    alice = ToxPeer("alice", udp=False, auto_accept=False)
    bob = ToxPeer("bob", udp=False)
    peers.extend((alice, bob))
    for peer in (alice, bob):
        peer.bootstrap(LOCALHOST, ours.udp_port, ours.public_key)
        peer.add_tcp_relay(LOCALHOST, ours.tcp_port, ours.public_key)
    alice.wait_self_connected(TIMEOUT_S)
    bob.wait_self_connected(TIMEOUT_S)
    friend = alice.friend_add(bob.address, b"over tunnel's relay")
    via = alice.wait_friend_connected(friend, TIMEOUT_S)
    assert via.name == "TCP"
    alice.send_lossless(friend, b"\xa0" + b"x" * 1000)
    packet = bob.wait_event(FriendLosslessPacket, TIMEOUT_S)
    assert packet.data == b"\xa0" + b"x" * 1000
