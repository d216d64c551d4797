"""End to end: `tunnel serve` and `tunnel connect` drivers over two of our real Nodes that find
each other through a real tox-bootstrapd on loopback (DHT, onion, friend request with the
shared secret, net_crypto), forwarding real TCP connections."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from tunnel.node import Node
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.forward_harness import LOCALHOST, start_tcp_echo
from tunnel.testing.node_options import loopback_options
from tunnel.testing.ports import PortPool
from tunnel.wire.large_lossless import DEFAULT_LARGE_LOSSLESS_BYTES

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

FIND_TIMEOUT_S = 60.0
SECRET = b"forward e2e secret"


@pytest.fixture(scope="module")
def port_pool() -> PortPool:
    """This suite's own ports (overrides the shared harness range)."""
    return PortPool(51800, 51999)


def _profile(path: Path) -> Profile:
    while True:  # a key toxcore accepts (as the node tests do)
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:
            profile.save(path)
            return profile


@asynccontextmanager
async def _node(
    name: str, bsd: Bootstrapd, pool: PortPool, tmp_path: Path, profile: Profile | None = None
) -> AsyncIterator[Node]:
    options = loopback_options(pool, bsd, name=name.encode())
    node = Node(profile or _profile(tmp_path / f"{name}.tox"), options)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        try:
            yield node
        finally:
            with trio.move_on_after(5):
                await node.aclose()
            nursery.cancel_scope.cancel()


async def _exchange(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    async with stream:
        received = bytearray()

        async def send() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await stream.receive_some(65536):
                received += data
    return bytes(received)


async def test_forward_over_two_real_nodes(
    bootstrapd: Bootstrapd, port_pool: PortPool, tmp_path: Path
) -> None:
    echo_port, local_port, closed_port, bad_port = port_pool.allocate(4)
    async with (
        _node("server", bootstrapd, port_pool, tmp_path) as server_node,
        _node("client", bootstrapd, port_pool, tmp_path) as client_node,
        trio.open_nursery() as nursery,
    ):
        await start_tcp_echo(nursery, echo_port)
        server = ForwardServer(
            ServerMux(os.urandom, auth=AuthPolicy.build(SECRET, None)), NodeTransport(server_node)
        )
        client = ForwardClient(
            ClientMux(os.urandom, open_timeout_s=FIND_TIMEOUT_S),
            NodeTransport(client_node),
            server_node.tox_id.to_bytes(),
            secret=SECRET,
        )
        await nursery.start(server.run)
        await nursery.start(client.run)
        await nursery.start(
            client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        await nursery.start(
            client.serve_tcp, parse_local_forward(f"{bad_port}:127.0.0.1:{closed_port}")
        )
        with trio.fail_after(FIND_TIMEOUT_S):
            await client.wait_online(server_node.public_key)
        # The server accepted the request and saved the friend in its profile.
        assert Profile.load(server_node.profile.path).friends[0].public_key == (
            client_node.public_key
        )
        payload = os.urandom(2 * 1024 * 1024)
        with trio.fail_after(60):
            results: list[bool] = []

            async def one(data: bytes) -> None:
                got = await _exchange(local_port, data)
                if got != data:
                    first = next(
                        (i for i, (a, b) in enumerate(zip(got, data, strict=False)) if a != b), None
                    )
                    stats = (client.stats, server.stats, client.mux.statistics())
                    print(f"mismatch: got {len(got)} of {len(data)}, first diff {first}, {stats}")
                results.append(got == data)

            async with trio.open_nursery() as conns:
                conns.start_soon(one, payload)
                for i in range(10):
                    conns.start_soon(one, os.urandom(1000 + i))
        assert results == [True] * 11
        # Tunnel frames took the direct path from the session to the mux, both ways.
        assert server_node.direct_lossless > 0
        assert client_node.direct_lossless > 0
        # Two of our nodes agreed large lossless packets (issue 8), and a probe proved the
        # direct path carries them. A probe sent while the connection starts can be lost (the
        # peer takes UDP data from our address only once it knows it); the next one follows
        # within seconds, with the next data.
        sessions = [
            client_node.netcrypto.sessions[server_node.public_key],
            server_node.netcrypto.sessions[client_node.public_key],
        ]
        with trio.fail_after(30):
            while not all(s.large is not None and s.large.proven for s in sessions):
                assert await _exchange(local_port, payload[:300_000]) == payload[:300_000]
                await trio.sleep(0.5)  # the probe's backoff: data must flow after it
        assert client_node.lossless_limit(server_node.public_key) == DEFAULT_LARGE_LOSSLESS_BYTES
        assert server_node.lossless_limit(client_node.public_key) == DEFAULT_LARGE_LOSSLESS_BYTES
        # the echo then goes in frames up to 16 KiB, both ways
        before = [(s.received_packets, s.received_bytes) for s in sessions]
        with trio.fail_after(30):
            assert await _exchange(local_port, payload) == payload
        for (packets, size), s in zip(before, sessions, strict=True):
            assert s.received_bytes - size > 4000 * (s.received_packets - packets)
        # A failed connect on the server reaches the client as a reset, quickly.
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(LOCALHOST, bad_port)
            async with stream:
                with pytest.raises(trio.BrokenResourceError):
                    await _read_all(stream)
        nursery.cancel_scope.cancel()


async def _read_all(stream: trio.SocketStream) -> None:
    while await stream.receive_some(4096):
        pass
    raise AssertionError("clean EOF instead of an error")
