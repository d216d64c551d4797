"""Trio forwarding drivers: -D (SOCKS5), -U (UDP), -W (pipes) and ping mode over the in-memory
transport, with real loopback sockets and OS pipes."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from tunnel.forward.specs import parse_local_forward, parse_pipe_forward, parse_socks_listen
from tunnel.io.forward_client import StdioStream
from tunnel.testing.forward_harness import LOCALHOST, forward_pair, start_tcp_echo, udp_echo
from tunnel.testing.memory_transport import MemoryNetwork
from tunnel.testing.ports import PortPool


@pytest.fixture(scope="module")
def ports() -> PortPool:
    return PortPool(51500, 51799)


async def _recv_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise AssertionError(f"EOF after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


async def _socks_connect(
    port: int, atyp_addr: bytes, dest_port: int
) -> tuple[int, trio.SocketStream]:
    """Raw SOCKS5 CONNECT; returns the REP code and the stream (closed by the caller)."""
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    await stream.send_all(b"\x05\x01\x00")
    assert await _recv_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(b"\x05\x01\x00" + atyp_addr + struct.pack(">H", dest_port))
    reply = await _recv_exactly(stream, 10)
    assert reply[0] == 5
    return reply[1], stream


async def test_socks5_connect_by_name_and_address(ports: PortPool) -> None:
    echo_port, socks_port, closed_port = ports.allocate(3)
    async with forward_pair() as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        await pair.nursery.start(pair.client.serve_socks, parse_socks_listen(str(socks_port)))
        with trio.fail_after(10):
            name = b"localhost"
            code, stream = await _socks_connect(
                socks_port, b"\x03" + bytes([len(name)]) + name, echo_port
            )
            assert code == 0
            async with stream:
                await stream.send_all(b"through socks")
                assert await _recv_exactly(stream, 13) == b"through socks"
            code, stream = await _socks_connect(
                socks_port, b"\x01" + socket.inet_aton("127.0.0.1"), echo_port
            )
            assert code == 0
            await stream.aclose()
            # A refused destination is a SOCKS error reply, not a hang.
            code, stream = await _socks_connect(
                socks_port, b"\x01" + socket.inet_aton("127.0.0.1"), closed_port
            )
            assert code == 5  # connection refused
            await stream.aclose()


async def test_udp_forwarding_both_ways(ports: PortPool) -> None:
    echo_port, local_port = ports.allocate(2)
    async with forward_pair(network=MemoryNetwork(lossy_delay_s=0.001)) as pair:
        await pair.nursery.start(udp_echo, echo_port)
        await pair.nursery.start(
            pair.client.serve_udp,
            parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}", udp=True),
        )
        senders = [trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            with trio.fail_after(10):
                for round_no in range(5):
                    for i, sock in enumerate(senders):
                        message = f"dgram {i}/{round_no}".encode()
                        await sock.sendto(message, (LOCALHOST, local_port))
                        data, _addr = await sock.recvfrom(2048)
                        assert data == b"echo:" + message
        finally:
            for sock in senders:
                sock.close()
        # one association (tunnel) per local source address
        assert pair.client.mux.tunnel_count() == 2


async def test_stdio_pipe_half_close(ports: PortPool) -> None:
    echo_port = ports.allocate_one()
    async with forward_pair() as pair:
        await start_tcp_echo(pair.nursery, echo_port)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        stream = StdioStream(in_r, out_w)
        os.close(in_r)
        os.close(out_w)
        payload = os.urandom(300_000)
        status: list[int] = []
        received = bytearray()
        writer = trio.lowlevel.FdStream(in_w)
        reader = trio.lowlevel.FdStream(out_r)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def run_pipe() -> None:
                    status.append(
                        await pair.client.pipe_stream(
                            parse_pipe_forward(f"127.0.0.1:{echo_port}"), stream
                        )
                    )

                async def feed() -> None:
                    await writer.send_all(payload)
                    await writer.aclose()  # EOF on "stdin"

                nursery.start_soon(run_pipe)
                nursery.start_soon(feed)
                while data := await reader.receive_some(65536):
                    received += data
        await reader.aclose()
        assert bytes(received) == payload
        assert status == [0]


async def test_stdio_pipe_failure_exit_status(ports: PortPool) -> None:
    closed_port = ports.allocate_one()
    async with forward_pair() as pair:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        stream = StdioStream(in_r, out_w)
        for fd in (in_r, out_w, out_r):
            os.close(fd)
        with trio.fail_after(5):
            status = await pair.client.pipe_stream(
                parse_pipe_forward(f"127.0.0.1:{closed_port}"), stream
            )
        os.close(in_w)
        assert status == 1


async def test_ping_mode_reports_rtt() -> None:
    async with forward_pair() as pair:
        rtts: list[float | None] = []
        got = trio.Event()

        def on_pong(rtt: float | None) -> None:
            rtts.append(rtt)
            got.set()

        pair.client.on_pong = on_pong
        pair.nursery.start_soon(pair.client.ping_forever, 0.05)
        with trio.fail_after(5):
            await got.wait()
        assert rtts[0] is not None
        assert 0 <= rtts[0] < 1
