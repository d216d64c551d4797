"""Node API without a network: friends persisted to the profile, nospam, errors, lifecycle,
statistics and the forwarding transport adapter. Fast (loopback sockets only, no peers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tunnel.config import FriendConfig, NodeConfig, UdpConfig
from tunnel.errors import ConfigError
from tunnel.forward.transport import FriendTransport, TransportClosed
from tunnel.io.forward_node import NodeTransport
from tunnel.netcrypto.session import NotConnected
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.testing.node_options import loopback_options
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId
from tunnel.wire.savedata import FRIEND_STATUS_CONFIRMED, FRIEND_STATUS_REQUESTED

LOCALHOST = "127.0.0.1"


def _someone(seed: str) -> ToxId:
    return Profile.generate(SeededRng(seed)).tox_id


async def test_friends_and_nospam_are_saved(tmp_path: Path, port_pool: PortPool) -> None:
    path = tmp_path / "me.tox"
    profile = Profile.create(path, os.urandom)
    node = Node(profile, loopback_options(port_pool), rng=SeededRng("api"))
    bob, carol = _someone("bob"), _someone("carol")

    assert node.add_friend(bob, b"hi bob") == bob.public_key
    node.add_friend_norequest(carol.public_key)
    saved = Profile.load(path)
    assert [(f.public_key, f.status, f.request_message, f.nospam) for f in saved.friends] == [
        (bob.public_key, FRIEND_STATUS_REQUESTED, b"hi bob", bob.nospam),
        (carol.public_key, FRIEND_STATUS_CONFIRMED, b"", bytes(4)),
    ]
    assert node.friends() == [bob.public_key, carol.public_key]
    assert node.is_friend(bob.public_key)
    assert not node.is_online(bob.public_key)

    with pytest.raises(ValueError, match="already"):
        node.add_friend(bob, b"again")
    with pytest.raises(ValueError):
        node.add_friend(node.tox_id, b"me")
    with pytest.raises(NotConnected):
        node.send_message(bob.public_key, b"offline")
    with pytest.raises(NotConnected):
        await node.send_lossless(bob.public_key, b"\xa0x")
    with pytest.raises(KeyError):
        node.send_lossy(_someone("nobody").public_key, b"\xc8x")

    node.set_nospam(b"\x01\x02\x03\x04")
    assert node.tox_id.nospam == b"\x01\x02\x03\x04"
    assert Profile.load(path).nospam == b"\x01\x02\x03\x04"

    node.remove_friend(carol.public_key)
    assert [f.public_key for f in Profile.load(path).friends] == [bob.public_key]

    # A restarted node resends the pending request and keeps the friend.
    again = Node(Profile.load(path), loopback_options(port_pool))
    assert again.friends() == [bob.public_key]
    assert bob.public_key in again.onion.requests.outgoing
    assert again.tox_id == node.tox_id


async def test_config_friends_are_confirmed_friends(tmp_path: Path) -> None:
    friend = _someone("config-friend").public_key
    config = NodeConfig(
        profile=tmp_path / "p.tox",
        control_socket=tmp_path / "c.sock",
        udp=UdpConfig(enabled=False),
        friends=(FriendConfig(friend, "laptop"),),
    )
    assert not NodeOptions.from_config(config).use_udp
    node = Node.from_config(config)  # creates the profile file
    assert node.friends() == [friend]
    assert node.profile.friends[0].status == FRIEND_STATUS_CONFIRMED
    assert (tmp_path / "p.tox").stat().st_mode & 0o777 == 0o600
    assert Profile.load(tmp_path / "p.tox").public_key == node.public_key
    again = Node.from_config(config)  # loads the same identity
    assert again.public_key == node.public_key


async def test_run_and_bounded_shutdown(port_pool: PortPool) -> None:
    node = Node(Profile.generate(os.urandom), loopback_options(port_pool))
    events = node.subscribe()
    transport: FriendTransport = NodeTransport(node)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.udp_port is not None
            stats = node.statistics()
            assert stats.udp_port == node.udp_port
            assert not stats.onion_connected
            assert stats.friends == ()
            with pytest.raises(RuntimeError):
                await node.run()
            await node.aclose()
    # run() returned by itself; subscribers see the end of the stream.
    with pytest.raises(trio.EndOfChannel):
        await events.receive()
    with pytest.raises(TransportClosed):
        await transport.next_event()


async def test_udp_off_binds_nothing(port_pool: PortPool) -> None:
    node = Node(Profile.generate(os.urandom), loopback_options(port_pool, udp_enabled=False))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.udp_port is None
            stats = node.statistics()
            assert stats.udp_port is None
            assert stats.udp_datagrams_sent == 0
            assert not stats.dht_connected
            await node.aclose()


async def test_transport_adapter_offline_behaviour(port_pool: PortPool) -> None:
    node = Node(Profile.generate(os.urandom), loopback_options(port_pool))
    transport = NodeTransport(node)
    bob = _someone("transport-bob")
    assert transport.public_key == node.public_key
    assert transport.add_friend(bob.to_bytes(), b"hello") == bob.public_key
    assert transport.add_friend(bob.to_bytes(), b"hello again") == bob.public_key  # no-op
    assert transport.is_friend(bob.public_key)
    assert not transport.is_online(bob.public_key)
    assert transport.free_slots(bob.public_key) == 0
    assert transport.send_lossless(bob.public_key, b"\xa0data") is False
    transport.send_lossy(bob.public_key, b"\xc8data")  # dropped, no error
    with trio.fail_after(1):
        await transport.wait_send_space(bob.public_key)  # offline: returns at once


async def test_busy_udp_port_is_a_config_error(port_pool: PortPool) -> None:
    options = loopback_options(port_pool)
    with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
        await sock.bind((LOCALHOST, options.port_start))
        node = Node(Profile.generate(os.urandom), options)
        with pytest.raises(ConfigError, match="udp: cannot bind"):
            await node.run()
