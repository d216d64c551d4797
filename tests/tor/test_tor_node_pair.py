"""Two nodes in Tor mode on the private Tor lab (issue 10 part 1, proven): each runs through its
own lab client's SOCKS port, they find each other through our ``tunnel bootstrapd`` (DHT, onion,
TCP relay) whose relay port the lab's exits reach on 127.0.0.1, befriend, exchange messages
and carry a forwarded TCP connection of 10 MB byte-identical. /proc shows this process opened
no UDP socket and every TCP connection it holds goes to a Tor SOCKS/control port or to the
test's own local services: nothing to the relay or to the other node directly (ports
48500-48699).

``TOR_PAIR_TOXCORE=1`` uses tox-bootstrapd instead: then the transfer often stalls for ~30 s
(tox-bootstrapd leaves a few hundred bytes unread on the sender's relay connection until our
client's next 30 s relay ping) and sometimes the relay drops on a ping timeout. Left as a switch
to reproduce it; ``TOR_PAIR_DEBUG=1`` prints per-second path statistics and socket queues."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.forward.auth import AuthPolicy
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.specs import parse_local_forward
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_node import NodeTransport
from tunnel.io.forward_server import ForwardServer
from tunnel.node_types import FriendConnected, FriendRequest, Message, NodeEvent
from tunnel.tcp_relay.client import ClientStatus, RelayClientConnection
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.forward_harness import start_tcp_echo
from tunnel.testing.ports import PortPool
from tunnel.testing.tor_node_harness import (
    LOCALHOST,
    OurBootstrapd,
    assert_only_tor_traffic,
    bootstrap_options,
    lab_tor_config,
    running_tor_node,
    udp_sockets,
)
from tunnel.testing.torlab import TorLab
from tunnel.tor.check import open_onion_stream
from tunnel.tor.keystore import load_or_create_onion_key

pytestmark = [pytest.mark.slow]  # our bootstrapd; TOR_PAIR_TOXCORE=1 needs tox-bootstrapd

FIND_TIMEOUT_S = 90.0
TRANSFER_TIMEOUT_S = 120.0
PAYLOAD_BYTES = 10 * 1024 * 1024
SECRET = b"over tor"
ONION_RELAY_MESSAGES = 5


@pytest.fixture(scope="module")
def my_ports() -> PortPool:
    return PortPool(48500, 48699)


@pytest.fixture(scope="module")
def bootstrapd(
    my_ports: PortPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bootstrapd | OurBootstrapd]:
    udp_port, tcp_port = my_ports.allocate(2)
    if os.environ.get("TOR_PAIR_TOXCORE"):
        with Bootstrapd(tmp_path_factory.mktemp("bsd-pair"), udp_port, (tcp_port,)) as bsd:
            yield bsd
        return
    with OurBootstrapd(tmp_path_factory.mktemp("our-bsd-pair"), udp_port, tcp_port) as ours:
        yield ours


async def _next(
    events: trio.MemoryReceiveChannel[NodeEvent], kind: type, timeout_s: float = FIND_TIMEOUT_S
) -> NodeEvent:
    with trio.fail_after(timeout_s):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("node stopped")


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


async def test_two_tor_mode_nodes_forward_10_mb(
    tor_lab: TorLab,
    bootstrapd: Bootstrapd | OurBootstrapd,
    my_ports: PortPool,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tunnel")
    udp_before = udp_sockets()
    # Bind our own services first: the nodes' outgoing connections take ephemeral ports,
    # which may fall in our range.
    (echo_port,) = my_ports.allocate(1)
    async with trio.open_nursery() as services:
        await start_tcp_echo(services, echo_port)
        await _pair(tor_lab, bootstrapd, my_ports, tmp_path, udp_before, echo_port)
        services.cancel_scope.cancel()


async def _pair(
    tor_lab: TorLab,
    bootstrapd: Bootstrapd | OurBootstrapd,
    my_ports: PortPool,
    tmp_path: Path,
    udp_before: set[int],
    echo_port: int,
) -> None:
    async with (
        running_tor_node(
            "tor-a", bootstrap_options(bootstrapd, "tor-a"), lab_tor_config(tor_lab, 0), tmp_path
        ) as tor_a,
        running_tor_node(
            "tor-b", bootstrap_options(bootstrapd, "tor-b"), lab_tor_config(tor_lab, 1), tmp_path
        ) as tor_b,
        trio.open_nursery() as nursery,
    ):
        a, b = tor_a.node, tor_b.node
        assert a is not None
        assert b is not None
        assert a.udp_port is None
        assert b.udp_port is None
        a_events, b_events = a.subscribe(), b.subscribe()
        t0 = trio.current_time()
        a.add_friend(b.tox_id, b"over tor")
        request = await _next(b_events, FriendRequest)
        assert isinstance(request, FriendRequest)
        assert request.public_key == a.public_key
        b.accept_friend_request(a.public_key)
        connected = await _next(a_events, FriendConnected)
        assert connected == FriendConnected(b.public_key, "tcp")
        await _next(b_events, FriendConnected)
        print(f"friends through Tor after {trio.current_time() - t0:.1f} s")
        a.send_message(b.public_key, b"hello through tor")
        message = await _next(b_events, Message)
        assert message == Message(a.public_key, b"hello through tor", False)

        # A forwarded TCP connection: client side on a, server side on b, echo behind b.
        server = ForwardServer(
            ServerMux(os.urandom, auth=AuthPolicy.build(SECRET, None)), NodeTransport(b)
        )
        client = ForwardClient(
            ClientMux(os.urandom, open_timeout_s=FIND_TIMEOUT_S),
            NodeTransport(a),
            b.tox_id.to_bytes(),
            secret=SECRET,
        )
        await nursery.start(server.run)
        await nursery.start(client.run)
        local_port = my_ports.allocate_one()
        await nursery.start(
            client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(FIND_TIMEOUT_S):
            await client.wait_online(b.public_key)
        payload = os.urandom(PAYLOAD_BYTES)
        allowed = {
            tor_lab.socks_port(0),
            tor_lab.socks_port(1),
            tor_lab.control_port(0),
            tor_lab.control_port(1),
            echo_port,
            local_port,
        }
        forbidden = set(bootstrapd.tcp_ports)
        seen: list[int] = []

        async def inspect_while_running() -> None:
            while True:
                tcp = assert_only_tor_traffic(udp_before, allowed, forbidden)
                seen.append(len(tcp))
                if os.environ.get("TOR_PAIR_DEBUG"):
                    for name, n in (("a", a), ("b", b)):
                        f = n.statistics().friends[0]
                        print(
                            f"{trio.current_time() - t0:6.1f} {name} rtt {f.rtt_s} "
                            f"rate {f.send_rate_pkt_s:.0f} dl {f.delivery_rate_pkt_s:.0f} "
                            f"q {f.send_queue} resent {f.resent_packets} sent {f.sent_bytes} "
                            f"recv {f.received_bytes} relays "
                            + ",".join(
                                f"{r.state}/{r.failures}/{r.confirmed}"
                                for r in n.relays.pool.relays()
                            )
                        )
                    socks_ports = (tor_lab.socks_port(0), tor_lab.socks_port(1))
                    print(
                        "       socks queues "
                        + " ".join(
                            f"{s.remote[1]}:{s.tx_queue_bytes}/{s.rx_queue_bytes}"
                            for s in tcp
                            if s.remote[1] in socks_ports
                        )
                    )
                await trio.sleep(0.5)

        nursery.start_soon(inspect_while_running)
        t0 = trio.current_time()
        with trio.fail_after(TRANSFER_TIMEOUT_S):
            got = await _exchange(local_port, payload)
        elapsed = trio.current_time() - t0
        assert len(got) == len(payload)
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        print(
            f"10 MB echoed through Tor in {elapsed:.1f} s "
            f"({2 * PAYLOAD_BYTES / elapsed / 1e6:.2f} MB/s both ways)"
        )
        tcp_now = assert_only_tor_traffic(udp_before, allowed, forbidden)
        socks_conns = [s for s in tcp_now if s.remote[1] in allowed - {echo_port, local_port}]
        assert len(socks_conns) >= 2  # each node's relay stream through its Tor client
        assert seen
        for tor_node in (tor_a, tor_b):
            node = tor_node.node
            assert node is not None
            stats = node.statistics()
            assert (stats.udp_port, stats.udp_datagrams_sent, stats.udp_datagrams_received) == (
                None,
                0,
                0,
            )
            assert stats.tcp_relays_connected >= 1
            assert tor_node.status is not None
            assert tor_node.status.usable
        nursery.cancel_scope.cancel()


async def _relay_handshake(stream: trio.SocketStream, relay_public_key: bytes) -> ClientStatus:
    """Run a TCP relay client handshake over ``stream``; the resulting status."""
    conn = RelayClientConnection(KeyPair.generate(os.urandom), relay_public_key, os.urandom, 0.0)
    await stream.send_all(conn.data_to_send())
    with trio.fail_after(30):
        while conn.status is ClientStatus.HANDSHAKING:
            data = await stream.receive_some(4096)
            if not data:
                break
            conn.receive_data(bytes(data), trio.current_time())
    return conn.status


async def test_tor_mode_nodes_announce_onion_relays(
    tor_lab: TorLab,
    bootstrapd: Bootstrapd | OurBootstrapd,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each node publishes its relay as an onion service (persistent key), friends learn the
    address over the friend connection (0xB4), and a stream to it through Tor reaches a relay
    that completes the handshake with the node's long-term key."""
    caplog.set_level(logging.INFO, logger="tunnel")
    configs = [
        lab_tor_config(tor_lab, i, onion_service=True, onion_key=tmp_path / f"{n}.key")
        for i, n in enumerate(("on-a", "on-b"))
    ]
    async with (
        running_tor_node("on-a", bootstrap_options(bootstrapd, "on-a"), configs[0], tmp_path) as ta,
        running_tor_node("on-b", bootstrap_options(bootstrapd, "on-b"), configs[1], tmp_path) as tb,
    ):
        a, b = ta.node, tb.node
        assert a is not None
        assert b is not None
        assert ta.onions is not None
        assert tb.onions is not None
        b_events = b.subscribe()
        a.add_friend(b.tox_id, b"onions")
        await _next(b_events, FriendRequest)
        b.accept_friend_request(a.public_key)
        with trio.fail_after(FIND_TIMEOUT_S):
            b_onion = await ta.onions.wait_friend_onion(b.public_key)
            a_onion = await tb.onions.wait_friend_onion(a.public_key)
        assert b_onion == (tb.onions.address, configs[1].onion_port)
        assert a_onion == (ta.onions.address, configs[0].onion_port)
        # the address is the persistent key's
        assert load_or_create_onion_key(tmp_path / "on-b.key").address == b_onion[0]
        stream = await open_onion_stream(
            LOCALHOST, tor_lab.socks_port(0), b_onion[0], b_onion[1], timeout_s=60
        )
        async with stream:
            # a stranger completes the handshake (it proves nothing); routing for it is refused
            # (tests/tor/test_tor_relay_filter.py)
            assert await _relay_handshake(stream, b.public_key) is ClientStatus.CONFIRMED
        assert ta.onions.bad_packets == 0
        assert tb.onions.bad_packets == 0

        # b's onion relay as a path: a connects to it through Tor (b is a client of its own
        # relay, in process) and meets b there; then the public relay goes away on both sides
        # and the friends keep talking over the onion relay alone.
        assert tb.onions.relay is not None
        b_relay = tb.onions.relay
        refused: list[bytes] = []
        admit = b_relay.core.admit
        assert admit is not None

        def spy(public_key: bytes) -> bool:
            if not admit(public_key):
                refused.append(public_key)
                return False
            return True

        b_relay.core.admit = spy
        assert ta.use_friend_onion(b.public_key)
        with trio.fail_after(FIND_TIMEOUT_S):
            await a.wait_for(lambda: b_relay.statistics().links_made >= 1)
        for node in (a, b):
            node.relays.remove_relay(bootstrapd.public_key)
        routed_before = b_relay.statistics().routed_packets
        a_events = a.subscribe()
        # A few messages at most: one CI run saw the first arrive while the relay's routed
        # count stayed put (it left before b's own client had a's route up on its relay);
        # the later ones must be routed there, the only relay left.
        for attempt in range(ONION_RELAY_MESSAGES):
            text = f"over b's onion relay {attempt}".encode()
            b.send_message(a.public_key, text)
            message = await _next(a_events, Message)
            assert message == Message(b.public_key, text, False)
            if b_relay.statistics().routed_packets > routed_before:
                break
        assert a.is_online(b.public_key)
        assert b_relay.statistics().routed_packets > routed_before
        assert tb.onions.local_streams >= 1
        # Not asserted: one run of this test counted 6 refusals (before this spy existed, keys
        # unknown) while the path still worked; the names are printed to find out.
        names = {a.public_key: "a", a.dht_public_key: "a-dht", b.dht_public_key: "b-dht"}
        print("onion relay refused:", [names.get(pk, pk.hex()[:16]) for pk in refused])
