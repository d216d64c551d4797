"""Trio driver of the forwarding client (``tunnel connect``): local listeners -> the server.

One :class:`ForwardClient` talks to one server friend and runs any number of local services
on it at once: TCP listeners (``-L``, each any number of concurrent connections), a SOCKS5
listener (``-D``, CONNECT), UDP sockets (``-U``, one tunnel per local source address), the
stdin/stdout pipe (``-W``) and ping mode (``-p``). Listeners stay up while the server is
unreachable: connections made meanwhile wait (up to the mux's open timeout) and are opened
once the friend connection is back, which the node re-establishes by itself. A connection
whose tunnel fails or dies is reset (RST), never truncated silently.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import trio

from tunnel.forward.auth import request_message
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import Event, PeerModeKnown, PingTimedOut, PongReceived
from tunnel.forward.socks5 import Socks5Handshake
from tunnel.forward.specs import ALL_INTERFACES, LocalForward, PipeForward, SocksListen
from tunnel.forward.transport import FriendTransport
from tunnel.io.forward_common import (
    LocalStream,
    MuxDriver,
    Pipe,
    _Closed,
    close_quietly,
    pump_stream,
)
from tunnel.wire.tuntox import MAX_UDP_PAYLOAD_BYTES, DenyCode

log = logging.getLogger(__name__)

SOCKS_HANDSHAKE_TIMEOUT_S = 30.0
UDP_PENDING_MAX_DATAGRAMS = 64
"""Datagrams of a new UDP association kept until its tunnel is open."""
UDP_RECV_BYTES = 65535
PING_INTERVAL_S = 1.0


class ForwardClient(MuxDriver):
    """``tunnel connect``: a :class:`ClientMux` towards one server over a friend transport."""

    mux: ClientMux

    def __init__(
        self,
        mux: ClientMux,
        transport: FriendTransport,
        server_tox_id: bytes,
        *,
        secret: bytes | None = None,
    ) -> None:
        super().__init__(mux, transport)
        self.server_tox_id = server_tox_id
        self.server = server_tox_id[:32]
        self.secret = secret
        self.on_pong: Callable[[float | None], None] = lambda _rtt: None
        self.connections = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Befriend the server (unless it already is a friend) and run the driver."""
        if not self.transport.is_friend(self.server):
            self.transport.add_friend(self.server_tox_id, request_message(self.secret))
        await super().run(task_status=task_status)

    def on_other_event(self, event: Event) -> None:
        if isinstance(event, PongReceived):
            self.on_pong(event.rtt_s)
        elif isinstance(event, PingTimedOut):
            self.on_pong(None)
        elif isinstance(event, PeerModeKnown):
            kind = "plain tuntox" if event.caps is None else "tunnel"
            log.info("server speaks %s", kind)

    def open(self, host: str, port: int, *, udp: bool = False) -> Pipe:
        """Open a tunnel to ``host:port`` as seen by the server (a pipe for it)."""
        handle = self.mux.open_tunnel(self.server, host, port, self.now(), udp=udp)
        pipe = self.new_pipe(handle)
        self.kick()
        return pipe

    # --- -L ------------------------------------------------------------------------------

    async def serve_tcp(
        self, forward: LocalForward, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``forward.bind_host:local_port``; started() with the bound port."""
        host = None if forward.bind_host == ALL_INTERFACES else forward.bind_host
        listeners = await trio.open_tcp_listeners(forward.local_port, host=host)
        port = listeners[0].socket.getsockname()[1]
        log.info("forwarding %s:%d -> %s:%d", forward.bind_host, port, forward.host, forward.port)

        async def handler(stream: trio.SocketStream) -> None:
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            self.connections += 1
            pipe = self.open(forward.host, forward.port)
            error = await pump_stream(self, pipe, stream)
            if error:
                log.info("connection to %s:%d ended: %s", forward.host, forward.port, error)

        task_status.started(port)
        await trio.serve_listeners(handler, listeners)

    # --- -D ------------------------------------------------------------------------------

    async def serve_socks(
        self, listen: SocksListen, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """A SOCKS5 (CONNECT) server on ``listen``; started() with the bound port."""
        host = None if listen.bind_host == ALL_INTERFACES else listen.bind_host
        listeners = await trio.open_tcp_listeners(listen.port, host=host)
        port = listeners[0].socket.getsockname()[1]
        log.info("SOCKS5 server on %s:%d", listen.bind_host, port)
        task_status.started(port)
        await trio.serve_listeners(self._socks_connection, listeners)

    async def _socks_connection(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        handshake = Socks5Handshake()
        try:
            with trio.move_on_after(SOCKS_HANDSHAKE_TIMEOUT_S):
                while handshake.target is None and not handshake.failed:
                    data = await stream.receive_some(4096)
                    if not data:
                        break
                    handshake.receive(data)
                    reply = handshake.data_to_send()
                    if reply:
                        await stream.send_all(reply)
            if handshake.target is None:
                reply = handshake.data_to_send()
                if reply:
                    await stream.send_all(reply)
                await close_quietly(stream)
                return
            host, port = handshake.target
            self.connections += 1
            pipe = self.open(host, port)
            await pipe.open_done.wait()
            if not pipe.opened:
                code = pipe.failure.code if pipe.failure is not None else DenyCode.UNSPECIFIED
                handshake.result(code)
                await stream.send_all(handshake.data_to_send())
                await close_quietly(stream)
                return
            handshake.result(None)
            await stream.send_all(handshake.data_to_send())
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await close_quietly(stream)
            return
        if handshake.leftover:
            self.mux.stream_data(pipe.handle, handshake.leftover, self.now())
            self.kick()
        await pump_stream(self, pipe, stream)

    # --- -U ------------------------------------------------------------------------------

    async def serve_udp(
        self, forward: LocalForward, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """A local UDP socket; each source address gets its own UDP tunnel."""
        bind = "::" if forward.bind_host == ALL_INTERFACES else forward.bind_host
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        with sock:
            await sock.bind((bind, forward.local_port))
            port = sock.getsockname()[1]
            log.info("forwarding UDP %s:%d -> %s:%d", bind, port, forward.host, forward.port)
            task_status.started(port)
            associations: dict[tuple[object, ...], Pipe] = {}
            pending: dict[int, list[bytes]] = {}
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        data, addr = await sock.recvfrom(UDP_RECV_BYTES)
                    except OSError:
                        continue
                    if len(data) > MAX_UDP_PAYLOAD_BYTES:
                        self.count("udp_too_big")
                        continue
                    pipe = associations.get(addr)
                    if pipe is None or pipe.closed:
                        pipe = self.open(forward.host, forward.port, udp=True)
                        associations[addr] = pipe
                        pending[pipe.handle] = [data]
                        nursery.start_soon(
                            self._udp_association, sock, addr, pipe, associations, pending
                        )
                    elif not pipe.opened:
                        queue = pending.setdefault(pipe.handle, [])
                        if len(queue) < UDP_PENDING_MAX_DATAGRAMS:
                            queue.append(data)
                    else:
                        self.mux.send_datagram(pipe.handle, data, self.now())
                        self.kick()

    async def _udp_association(
        self,
        sock: trio.socket.SocketType,
        addr: tuple[object, ...],
        pipe: Pipe,
        associations: dict[tuple[object, ...], Pipe],
        pending: dict[int, list[bytes]],
    ) -> None:
        try:
            await pipe.open_done.wait()
            for data in pending.pop(pipe.handle, []):
                if pipe.opened:
                    self.mux.send_datagram(pipe.handle, data, self.now())
            self.kick()
            while True:
                item = await pipe.get()
                if isinstance(item, _Closed):
                    if item.error:
                        log.info("UDP association %s ended: %s", addr, item.error)
                    return
                if isinstance(item, bytes):
                    try:
                        await sock.sendto(item, addr)
                    except OSError:
                        pass
        finally:
            pending.pop(pipe.handle, None)
            if associations.get(addr) is pipe:
                del associations[addr]
            if not pipe.closed:
                self.abort(pipe, "association ended")

    # --- -W ------------------------------------------------------------------------------

    async def pipe_stdio(self, forward: PipeForward, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
        """Carry stdin/stdout over one tunnel; 0 when it ended normally, 1 on error."""
        return await self.pipe_stream(forward, StdioStream(stdin_fd, stdout_fd))

    async def pipe_stream(self, forward: PipeForward, stream: LocalStream) -> int:
        """Carry one local byte stream over one tunnel (``-W``); 0 = ended normally."""
        self.connections += 1
        pipe = self.open(forward.host, forward.port)
        error = await pump_stream(self, pipe, stream)
        if error is not None:
            log.error("tunnel to %s:%d failed: %s", forward.host, forward.port, error)
            return 1
        return 0

    # --- -p ------------------------------------------------------------------------------

    async def ping_forever(self, interval_s: float = PING_INTERVAL_S) -> None:
        """Ping the server every ``interval_s`` while it is online (results via on_pong)."""
        while True:
            await self.wait_online(self.server)
            self.mux.ping(self.server, self.now())
            self.kick()
            await trio.sleep(interval_s)


class StdioStream:
    """stdin (read) + stdout (write) as one half-closeable byte stream (for ``-W``)."""

    def __init__(self, stdin_fd: int, stdout_fd: int) -> None:
        self._in = trio.lowlevel.FdStream(os.dup(stdin_fd))
        self._out: trio.lowlevel.FdStream | None = trio.lowlevel.FdStream(os.dup(stdout_fd))

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._in.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._out is None:
            raise trio.ClosedResourceError("stdout already closed")
        await self._out.send_all(data)

    async def send_eof(self) -> None:
        if self._out is not None:
            out, self._out = self._out, None
            await out.aclose()

    async def aclose(self) -> None:
        await self._in.aclose()
        await self.send_eof()
