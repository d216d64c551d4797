"""Trio forwarding drivers (-L) over the in-memory transport with real loopback TCP sockets."""

from __future__ import annotations

import hashlib
import os
from functools import partial

import pytest
import trio

from tunnel.forward.specs import parse_local_forward
from tunnel.testing.forward_harness import (
    CLIENT_PK,
    LOCALHOST,
    SERVER_PK,
    ServerOptions,
    forward_pair,
    serve_tcp,
    start_tcp_echo,
)
from tunnel.testing.memory_transport import MemoryNetwork
from tunnel.testing.ports import PortPool

TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def ports() -> PortPool:
    return PortPool(51000, 51499)


async def _exchange(port: int, payload: bytes) -> bytes:
    """Connect to the -L port, send payload, half-close, read everything back."""
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


async def _expect_reset(stream: trio.SocketStream) -> None:
    """The connection ends with an error (RST), not a clean EOF."""
    async with stream:
        with pytest.raises(trio.BrokenResourceError):
            await _read_to_eof(stream)


async def _read_to_eof(stream: trio.SocketStream) -> None:
    while await stream.receive_some(4096):
        pass
    raise AssertionError("clean EOF instead of an error")


async def test_fifty_concurrent_connections(ports: PortPool) -> None:
    echo_port, local_port = ports.allocate(2)
    async with forward_pair() as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        spec = parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        await pair.nursery.start(pair.client.serve_tcp, spec)
        results: dict[int, bool] = {}

        async def one(i: int) -> None:
            payload = os.urandom(20_000 + i * 101)
            results[i] = await _exchange(local_port, payload) == payload

        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        assert len(results) == 50
        assert all(results.values())
        assert pair.client.connections == 50
        assert pair.server is not None
        assert pair.server.connects_started == 50
        # everything was torn down on both sides
        assert pair.client.mux.tunnel_count() == 0
        assert pair.server.mux.tunnel_count() == 0


async def _sink_handler(stream: trio.SocketStream) -> None:
    """Reads to EOF, answers the SHA-256 of what it got."""
    digest = hashlib.sha256()
    while data := await stream.receive_some(65536):
        digest.update(data)
    await stream.send_all(digest.digest())
    await stream.aclose()


SOURCE_BYTES = 8 * 1024 * 1024


async def _source_handler(stream: trio.SocketStream) -> None:
    """Sends SOURCE_BYTES of a deterministic pattern, then closes."""
    block = hashlib.sha256(b"block").digest() * 2048  # 64 KiB
    for _ in range(SOURCE_BYTES // len(block)):
        await stream.send_all(block)
    await stream.aclose()


async def test_large_transfer_byte_identical_both_ways(ports: PortPool) -> None:
    sink_port, source_port, up_port, down_port = ports.allocate(4)
    # small lossless queue: exercises back-pressure from the transport
    async with forward_pair(network=MemoryNetwork(lossless_slots=16)) as pair:
        await pair.nursery.start(partial(serve_tcp, _sink_handler, sink_port))
        await pair.nursery.start(partial(serve_tcp, _source_handler, source_port))
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{up_port}:127.0.0.1:{sink_port}")
        )
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{down_port}:localhost:{source_port}")
        )
        upload = os.urandom(8 * 1024 * 1024)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                up_result: list[bytes] = []
                down_result: list[bytes] = []

                async def up() -> None:
                    up_result.append(await _exchange(up_port, upload))

                async def down() -> None:
                    down_result.append(await _exchange(down_port, b""))

                nursery.start_soon(up)
                nursery.start_soon(down)
        assert up_result == [hashlib.sha256(upload).digest()]
        expected = hashlib.sha256(b"block").digest() * 2048 * (SOURCE_BYTES // 65536)
        assert len(down_result[0]) == SOURCE_BYTES
        assert down_result[0] == expected


async def test_a_consumer_that_stops_reading_gets_every_byte_in_order(ports: PortPool) -> None:
    """The service stops reading until the client has sent 1 MiB (the tunnel window): its
    socket fills, the server's direct writes fall short, and what follows must queue behind
    them, not overtake them."""
    sink_port, up_port = ports.allocate(2)
    sent_enough = trio.Event()

    async def slow_sink(stream: trio.SocketStream) -> None:
        await sent_enough.wait()
        await _sink_handler(stream)

    upload = os.urandom(6 * 1024 * 1024)
    async with forward_pair() as pair:
        await pair.nursery.start(partial(serve_tcp, slow_sink, sink_port))
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{up_port}:127.0.0.1:{sink_port}")
        )
        with trio.fail_after(60):
            stream = await trio.open_tcp_stream(LOCALHOST, up_port)
            async with stream:
                for offset in range(0, len(upload), 64 * 1024):
                    await stream.send_all(upload[offset : offset + 64 * 1024])
                    if offset >= 1024 * 1024:
                        sent_enough.set()
                sent_enough.set()
                await stream.send_eof()
                answer = b""
                while data := await stream.receive_some(65536):
                    answer += data
        assert answer == hashlib.sha256(upload).digest()


async def test_failed_connect_resets_client_promptly(ports: PortPool) -> None:
    closed_port, local_port = ports.allocate(2)  # nothing listens on closed_port
    async with forward_pair() as pair:
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{closed_port}")
        )
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            await _expect_reset(stream)
        assert pair.server is not None
        assert pair.server.mux.statistics().get("connect_failed") == 1


async def test_rules_deny_reaches_client(ports: PortPool) -> None:
    echo_port, local_port, other_port = ports.allocate(3)
    options = ServerOptions(rules=(f"127.0.0.1:{other_port}",))
    async with forward_pair(options=options) as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(3):
            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            await _expect_reset(stream)
        assert pair.server is not None
        assert pair.server.connects_started == 0


async def test_connect_timeout_reaches_client_within_the_timeout(ports: PortPool) -> None:
    local_port = ports.allocate_one()
    # The server's connect hangs (a blackholed address, simulated): the mux's connect
    # deadline refuses the tunnel and the client's connection is reset at once.
    options = ServerOptions(connect_timeout_s=1.0)
    async with forward_pair(options=options) as pair:
        server = pair.server
        assert server is not None

        async def hang(*_args: object) -> object:
            await trio.sleep_forever()
            raise AssertionError

        server._connect_tcp = hang  # type: ignore[method-assign,assignment]
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:9")
        )
        start = trio.current_time()
        with trio.fail_after(4):
            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            await _expect_reset(stream)
        assert 0.9 <= trio.current_time() - start < 3.0
        assert server.mux.statistics().get("connect_timeout") == 1


async def test_friend_offline_closes_connections_and_reconnect_keeps_listener(
    ports: PortPool,
) -> None:
    echo_port, local_port = ports.allocate(2)
    async with forward_pair() as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            await stream.send_all(b"hello")
            assert await stream.receive_some(5) == b"hello"
        assert pair.server is not None
        assert pair.server.mux.tunnel_count() == 1
        pair.network.cut(CLIENT_PK, SERVER_PK)
        with trio.fail_after(3):
            await _expect_reset(stream)
        assert pair.server.mux.tunnel_count() == 0
        # A connection made while the path is down waits and completes once it is back.
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                got: list[bytes] = []

                async def late() -> None:
                    got.append(await _exchange(local_port, b"after the outage"))

                nursery.start_soon(late)
                await trio.sleep(0.2)
                pair.network.heal(CLIENT_PK, SERVER_PK)
        assert got == [b"after the outage"]


async def test_server_restart_client_reconnects(ports: PortPool) -> None:
    echo_port, local_port = ports.allocate(2)
    async with forward_pair() as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(5):
            assert await _exchange(local_port, b"one") == b"one"
        pair.stop_server()
        assert not pair.network.online(CLIENT_PK, SERVER_PK)
        await pair.start_server()
        with trio.fail_after(10):
            assert await _exchange(local_port, b"two") == b"two"
        assert pair.servers_started == 2


async def test_wrong_secret_gets_nothing(ports: PortPool) -> None:
    echo_port, local_port = ports.allocate(2)
    options = ServerOptions(secret=b"right secret")
    async with forward_pair(options=options, client_secret=b"wrong", open_timeout_s=1.0) as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(4):
            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            await _expect_reset(stream)  # open timed out: never befriended
        assert not pair.network.online(CLIENT_PK, SERVER_PK)
        assert pair.server is not None
        assert pair.server.mux.statistics().get("friend_requests_refused") == 1


async def test_right_secret_and_allowlist(ports: PortPool) -> None:
    echo_port, local_port = ports.allocate(2)
    options = ServerOptions(secret=b"s3cret", allowlist=(CLIENT_PK,))
    async with forward_pair(options=options, client_secret=b"s3cret") as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        with trio.fail_after(5):
            assert await _exchange(local_port, b"ok") == b"ok"


async def test_no_stall_when_the_transport_queue_fills(ports: PortPool) -> None:
    """Regression: with the send queue full after a partial batch, the sender must wait for
    send space itself (no timer may be needed to wake it)."""
    sink_port, up_port = ports.allocate(2)
    network = MemoryNetwork(lossless_slots=4)
    async with forward_pair(network=network, open_timeout_s=10_000) as pair:
        await pair.nursery.start(partial(serve_tcp, _sink_handler, sink_port))
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{up_port}:127.0.0.1:{sink_port}")
        )
        upload = os.urandom(2 * 1024 * 1024)
        with trio.fail_after(8):
            assert await _exchange(up_port, upload) == hashlib.sha256(upload).digest()


async def test_no_stall_when_flushing_makes_room_without_an_event(ports: PortPool) -> None:
    """Regression (bench/forward.py stalled for good with a 4 MiB window): a node's flush lets
    the session transmit what it had queued, so room in its send queue comes back with no
    event. A sender that slept with output left and free slots was never woken again (less
    than a window update's worth of data: nothing comes back from the peer to wake it)."""
    sink_port, up_port = ports.allocate(2)
    network = MemoryNetwork(lossless_slots=4, flush_frees=True)
    async with forward_pair(network=network) as pair:
        await pair.nursery.start(partial(serve_tcp, _sink_handler, sink_port))
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{up_port}:127.0.0.1:{sink_port}")
        )
        upload = os.urandom(200 * 1024)
        with trio.fail_after(10):
            assert await _exchange(up_port, upload) == hashlib.sha256(upload).digest()


async def test_refused_packets_are_retried_in_order(ports: PortPool) -> None:
    """Regression: a transport that refuses a packet although it reported free slots (the
    node's capacity figure can be optimistic) must not lose it: the stream stays intact."""
    sink_port, up_port = ports.allocate(2)
    network = MemoryNetwork(lossless_slots=8, refuse_every=7)
    async with forward_pair(network=network) as pair:
        await pair.nursery.start(partial(serve_tcp, _sink_handler, sink_port))
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{up_port}:127.0.0.1:{sink_port}")
        )
        upload = os.urandom(3 * 1024 * 1024)
        with trio.fail_after(20):
            assert await _exchange(up_port, upload) == hashlib.sha256(upload).digest()
        assert network.endpoint(CLIENT_PK).lossless_refused > 100


def test_received_frames_are_joined_into_one_local_write() -> None:
    """The writer sends everything delivered so far at once (one write per frame was the
    drivers' main cost), never past an EOF/close item, at most WRITE_COALESCE_BYTES."""
    from tunnel.io.forward_common import EOF, WRITE_COALESCE_BYTES, Pipe

    pipe = Pipe(1)
    for part in (b"b", b"c", EOF, b"d"):
        pipe.put(part)
    assert pipe.take_bytes(b"a") == b"abc"
    assert pipe.inbox.popleft() is EOF
    assert pipe.inbox.popleft() == b"d"
    big = b"x" * (WRITE_COALESCE_BYTES // 2)
    for _ in range(4):
        pipe.put(big)
    joined = pipe.take_bytes(b"d")
    assert len(joined) == 1 + 2 * len(big)  # stops once the limit is reached
    assert len(pipe.inbox) == 2
