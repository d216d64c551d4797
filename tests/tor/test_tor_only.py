"""Tor-only mode on the private Tor lab (issue 10, proven): two nodes with no bootstrap node, no
DHT and no UDP, each publishing its relay as an onion service, know each other only as Tox ID
plus .onion (``tor.friends``). They meet on each other's onion relays through Tor, become
friends and carry a forwarded TCP connection. /proc shows no UDP socket and no TCP connection
from this process to either relay (each node reaches its own relay in process, the friend's
through Tor); the relays served only the two friends."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from tunnel.forward.auth import AuthPolicy
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.specs import parse_local_forward
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_node import NodeTransport
from tunnel.io.forward_server import ForwardServer
from tunnel.io.tor_node import TorNode
from tunnel.node_types import FriendConnected, Message, NodeEvent, NodeOptions
from tunnel.testing.forward_harness import start_tcp_echo
from tunnel.testing.ports import PortPool
from tunnel.testing.tor_node_harness import (
    LOCALHOST,
    assert_only_tor_traffic,
    lab_tor_config,
    running_tor_node,
    toxcore_profile,
    udp_sockets,
)
from tunnel.testing.torlab import TorLab, TorProcess
from tunnel.tor.config import TorConfig, TorFriend
from tunnel.tor.keystore import load_or_create_onion_key

pytestmark = [pytest.mark.slow]

CONNECT_TIMEOUT_S = 90.0
TRANSFER_TIMEOUT_S = 60.0
PAYLOAD_BYTES = 1024 * 1024
SECRET = b"tor only"


async def _exchange(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    received = bytearray()
    async with stream:

        async def send() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await stream.receive_some(65536):
                received += data
    return bytes(received)


async def _connected(events: trio.MemoryReceiveChannel[NodeEvent]) -> FriendConnected:
    async for event in events:
        if isinstance(event, FriendConnected):
            return event
    raise AssertionError("node stopped")


async def test_tor_only_nodes_meet_by_onion_and_forward(
    tor_lab: TorLab, tor_ports: PortPool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tunnel")
    udp_before = udp_sockets()
    profiles = [toxcore_profile(tmp_path / f"{n}.tox") for n in ("only-a", "only-b")]
    keys = [load_or_create_onion_key(tmp_path / f"{n}.onion.key") for n in ("only-a", "only-b")]
    onion_port = tor_ports.allocate_one()
    configs = [
        lab_tor_config(
            tor_lab,
            i,
            only=True,
            onion_service=True,
            onion_key=tmp_path / f"{n}.onion.key",
            onion_port=onion_port,
            friends=(TorFriend(profiles[1 - i].public_key, keys[1 - i].address, onion_port),),
        )
        for i, n in enumerate(("only-a", "only-b"))
    ]
    # bootstrap nodes in the options are dropped by Tor-only mode
    options = NodeOptions(ipv6=False, hole_punching=False)
    echo_port, local_port = tor_ports.allocate(2)
    async with trio.open_nursery() as services:
        await start_tcp_echo(services, echo_port)
        async with (
            running_tor_node("only-a", options, configs[0], tmp_path, profile=profiles[0]) as ta,
            running_tor_node("only-b", options, configs[1], tmp_path, profile=profiles[1]) as tb,
            trio.open_nursery() as nursery,
        ):
            a, b = ta.node, tb.node
            assert a is not None
            assert b is not None
            assert a.options.bootstrap == ()
            assert a.udp_port is None
            assert b.udp_port is None
            assert a.dht_public_key == a.public_key  # Tor-only: the friend knows our "DHT" key
            a_events, b_events = a.subscribe(), b.subscribe()
            t0 = trio.current_time()
            with trio.fail_after(CONNECT_TIMEOUT_S):
                assert await _connected(a_events) == FriendConnected(b.public_key, "tcp")
                assert await _connected(b_events) == FriendConnected(a.public_key, "tcp")
            print(f"Tor-only friends online after {trio.current_time() - t0:.1f} s")

            server = ForwardServer(
                ServerMux(os.urandom, auth=AuthPolicy.build(SECRET, None)), NodeTransport(b)
            )
            client = ForwardClient(
                ClientMux(os.urandom, open_timeout_s=CONNECT_TIMEOUT_S),
                NodeTransport(a),
                b.tox_id.to_bytes(),
                secret=SECRET,
            )
            await nursery.start(server.run)
            await nursery.start(client.run)
            await nursery.start(
                client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
            )
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await client.wait_online(b.public_key)
            payload = os.urandom(PAYLOAD_BYTES)
            t0 = trio.current_time()
            with trio.fail_after(TRANSFER_TIMEOUT_S):
                got = await _exchange(local_port, payload)
            elapsed = trio.current_time() - t0
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
            print(f"1 MB echoed Tor-only in {elapsed:.1f} s")

            assert ta.onions is not None
            assert tb.onions is not None
            assert ta.onions.relay is not None
            assert tb.onions.relay is not None
            relay_ports = set(ta.onions.relay.ports) | set(tb.onions.relay.ports)
            allowed = {
                tor_lab.socks_port(0),
                tor_lab.socks_port(1),
                tor_lab.control_port(0),
                tor_lab.control_port(1),
                echo_port,
                local_port,
                *relay_ports,  # accepted from Tor: the relay port is the local end
            }
            assert_only_tor_traffic(udp_before, allowed, forbidden_tcp_ports=relay_ports)
            # The friend session runs over one node's onion relay or both (whichever the two
            # sides routed through first): at least one relay linked the two friends.
            assert sum(_check_tor_only(tor_node) for tor_node in (ta, tb)) >= 1
            nursery.cancel_scope.cancel()
        services.cancel_scope.cancel()


def _check_tor_only(tor_node: TorNode) -> int:
    """Check the node ran Tor-only; return how many friend links its onion relay made."""
    node, onions = tor_node.node, tor_node.onions
    assert node is not None
    assert onions is not None
    assert onions.relay is not None
    stats = node.statistics()
    assert (stats.udp_port, stats.udp_datagrams_sent, stats.dht_connected) == (None, 0, False)
    assert onions.local_streams >= 1  # the node is a client of its own relay, in process
    assert tor_node.friend_relays_used == {node.friends()[0]}
    assert tor_node.relay_streams_opened == 0  # nothing through an exit
    relay = onions.relay.statistics()
    assert relay.refused_not_admitted == 0
    connected = {info.public_key for info in node.relays.pool.connected_relays()}
    assert node.friends()[0] in connected or node.public_key in connected
    return relay.links_made


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll a counter that changes without a node event (bound it with ``fail_after``)."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.1)


def _start_own_tor(lab: TorLab, socks: int, control: int) -> TorProcess:
    return lab.start_extra_tor(
        "only-own-tor",
        [f"SocksPort 127.0.0.1:{socks} ExtendedErrors", f"ControlPort 127.0.0.1:{control}"],
    )


async def test_tor_only_node_recovers_when_its_tor_comes_back(
    tor_lab: TorLab, tor_ports: PortPool, tmp_path: Path
) -> None:
    """a's own tor stops: a says so within its stated bound; the tor comes back: a's onion
    service is published again (same address), its relay paths return and the friends talk."""
    socks, control, onion_port = tor_ports.allocate(3)
    proc = _start_own_tor(tor_lab, socks, control)
    try:
        profiles = [toxcore_profile(tmp_path / f"{n}.tox") for n in ("rec-a", "rec-b")]
        key_paths = [tmp_path / f"{n}.onion.key" for n in ("rec-a", "rec-b")]
        keys = [load_or_create_onion_key(path) for path in key_paths]
        friends = [
            (TorFriend(profiles[1 - i].public_key, keys[1 - i].address, onion_port),)
            for i in range(2)
        ]
        with trio.fail_after(10):
            await _until(proc.cookie_path.exists)
        config_a = TorConfig(
            socks=f"127.0.0.1:{socks}",
            control=f"127.0.0.1:{control}",
            cookie=proc.cookie_path,
            check_interval_s=1.0,
            only=True,
            onion_service=True,
            onion_key=key_paths[0],
            onion_port=onion_port,
            friends=friends[0],
        )
        config_b = lab_tor_config(
            tor_lab,
            1,
            only=True,
            onion_service=True,
            onion_key=key_paths[1],
            onion_port=onion_port,
            friends=friends[1],
        )
        options = NodeOptions(ipv6=False, hole_punching=False)
        async with (
            running_tor_node("rec-a", options, config_a, tmp_path, profile=profiles[0]) as ta,
            running_tor_node("rec-b", options, config_b, tmp_path, profile=profiles[1]) as tb,
        ):
            a, b = ta.node, tb.node
            assert a is not None
            assert b is not None
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await a.wait_for(lambda: a.is_online(b.public_key))
            assert ta.onions is not None
            assert ta.onions.publications == 1

            proc.stop()
            t0 = trio.current_time()
            with trio.fail_after(ta.detect_bound_s() + 1.0):
                down = await ta.wait_status(False)
            print(f"Tor down reported after {trio.current_time() - t0:.1f} s: {down.message}")
            # Whichever the node notices first: the SOCKS port or the control connection.
            assert down.message in (
                f"Tor SOCKS port 127.0.0.1:{socks} closed",
                "Tor control connection closed by Tor",
            ) or down.message.startswith("Tor control")

            proc.cookie_path.unlink(missing_ok=True)
            proc = _start_own_tor(tor_lab, socks, control)
            t0 = trio.current_time()
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await ta.wait_status(True)
                await _until(lambda: ta.onions is not None and ta.onions.publications == 2)
                print(f"onion service republished {trio.current_time() - t0:.1f} s after restart")
                await a.wait_for(lambda: a.is_online(b.public_key))
                await b.wait_for(lambda: b.is_online(a.public_key))  # each side has its view
                events = a.subscribe()
                b.send_message(a.public_key, b"after the outage")
                async for event in events:
                    if isinstance(event, Message):
                        assert event == Message(b.public_key, b"after the outage", False)
                        break
            print(f"friends talking {trio.current_time() - t0:.1f} s after Tor restarted")
            assert ta.outages == 1
            assert ta.recoveries == 1
            assert ta.onions.address == keys[0].address
    finally:
        proc.stop()
