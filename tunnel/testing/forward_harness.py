"""A forwarding client and server driven by Trio over a :class:`MemoryNetwork` (driver tests,
``bench/forward.py``), plus small local services (TCP/UDP echo) to forward to."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from tunnel.forward.auth import AuthPolicy
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.rules import RuleSet
from tunnel.forward.server_mux import ServerMux
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_server import ForwardServer
from tunnel.testing.memory_transport import MemoryNetwork
from tunnel.toxid import ToxId

SERVER_PK = bytes(range(32))
CLIENT_PK = bytes(range(32, 64))
SERVER_TOX_ID = ToxId(SERVER_PK, b"\x00\x00\x00\x01").to_bytes()
LOCALHOST = "127.0.0.1"


@dataclass
class ServerOptions:
    secret: bytes | None = None
    allowlist: tuple[bytes, ...] | None = None
    rules: tuple[str, ...] | None = None
    connect_timeout_s: float = 5.0


@dataclass
class ForwardPair:
    network: MemoryNetwork
    client: ForwardClient
    nursery: trio.Nursery
    options: ServerOptions
    server: ForwardServer | None = None
    _server_scope: trio.CancelScope | None = None
    servers_started: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    async def start_server(self) -> ForwardServer:
        """(Re)start the server driver with a fresh mux (a restarted ``tunnel serve``)."""
        opts = self.options
        auth = AuthPolicy.build(opts.secret, opts.allowlist)
        rules = RuleSet.parse(list(opts.rules)) if opts.rules is not None else None
        mux = ServerMux(
            os.urandom, rules=rules, auth=auth, connect_timeout_s=opts.connect_timeout_s
        )
        server = ForwardServer(mux, self.network.endpoint(SERVER_PK))
        scope = trio.CancelScope()

        async def runner(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await server.run(task_status=task_status)

        await self.nursery.start(runner)
        self.network.set_up(SERVER_PK, True)
        self.server, self._server_scope = server, scope
        self.servers_started += 1
        return server

    def stop_server(self) -> None:
        """Kill the server driver and take its endpoint off the network."""
        if self._server_scope is not None:
            self._server_scope.cancel()
        self.network.set_up(SERVER_PK, False)
        self.server = None


@asynccontextmanager
async def forward_pair(
    *,
    network: MemoryNetwork | None = None,
    options: ServerOptions | None = None,
    client_secret: bytes | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[ForwardPair]:
    """A running server and client; the client befriends the server at once."""
    net = network or MemoryNetwork()
    client_mux = ClientMux(os.urandom, open_timeout_s=open_timeout_s)
    client = ForwardClient(client_mux, net.endpoint(CLIENT_PK), SERVER_TOX_ID, secret=client_secret)
    async with trio.open_nursery() as nursery:
        pair = ForwardPair(net, client, nursery, options or ServerOptions())
        await pair.start_server()
        await nursery.start(client.run)
        try:
            yield pair
        finally:
            nursery.cancel_scope.cancel()


async def tcp_echo_handler(stream: trio.SocketStream) -> None:
    """Echo until EOF, then half-close (keeps reading what is left)."""
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await stream.aclose()


async def serve_tcp(
    handler: object, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """``trio.serve_tcp`` on 127.0.0.1:port; started() with the port."""
    listeners = await trio.open_tcp_listeners(port, host=LOCALHOST)
    task_status.started(port)
    await trio.serve_listeners(handler, listeners)  # type: ignore[arg-type]


async def udp_echo(
    port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A UDP echo server on 127.0.0.1:port that prefixes replies with b"echo:"."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((LOCALHOST, port))
        task_status.started(port)
        while True:
            data, addr = await sock.recvfrom(65535)
            await sock.sendto(b"echo:" + data, addr)


async def start_tcp_echo(nursery: trio.Nursery, port: int) -> int:
    port_started: int = await nursery.start(partial(serve_tcp, tcp_echo_handler, port))
    return port_started
