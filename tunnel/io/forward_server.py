"""Trio driver of the forwarding server (``tunnel serve``): friends' tunnels to local services.

For each :class:`~tunnel.forward.events.ConnectRequest` the driver resolves the host without
blocking (``trio.socket.getaddrinfo`` runs in a worker thread), keeps only addresses the rules
allow (``restrict_to``), and connects to them in turn (IPv4 and IPv6). The mux's own
``connect_timeout_s`` deadline bounds the whole attempt: when it fires the mux refuses the
tunnel (DENY reaches the client at once) and the driver cancels the attempt. Failures are
reported with a reason code (resolve failed, not allowed, connect failed) the moment they
happen. UDP requests get a connected UDP socket. Friend requests go through the mux's
:class:`~tunnel.forward.auth.AuthPolicy`; friends persist in the node's profile.
"""

from __future__ import annotations

import logging
import socket

import trio

from tunnel.forward.events import ConnectRequest, Event, PeerModeKnown
from tunnel.forward.rules import address_allowed
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.transport import FriendTransport
from tunnel.io.forward_common import MuxDriver, Pipe, _Closed, pump_stream
from tunnel.wire.tuntox import MAX_UDP_PAYLOAD_BYTES, DenyCode

log = logging.getLogger(__name__)

UDP_RECV_BYTES = 65535


class _ConnectFailed(Exception):
    def __init__(self, code: DenyCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ForwardServer(MuxDriver):
    """``tunnel serve``: a :class:`ServerMux` over a friend transport."""

    mux: ServerMux

    def __init__(self, mux: ServerMux, transport: FriendTransport) -> None:
        super().__init__(mux, transport)
        self.connects_started = 0

    def on_friend_request(self, friend: bytes, message: bytes) -> None:
        if self.mux.friend_request(friend, message):
            log.info("accepted friend request from %s", friend.hex().upper())
            self.transport.accept_friend(friend)
        else:
            log.warning("refused friend request from %s", friend.hex().upper())

    def on_other_event(self, event: Event) -> None:
        if isinstance(event, ConnectRequest):
            pipe = self.new_pipe(event.handle)
            pipe.cancel_scope = trio.CancelScope()
            self.connects_started += 1
            self.nursery.start_soon(self._serve_tunnel, event, pipe)
        elif isinstance(event, PeerModeKnown):
            kind = "plain tuntox" if event.caps is None else "tunnel"
            log.info("friend %s speaks %s", event.friend.hex()[:16], kind)

    async def _serve_tunnel(self, request: ConnectRequest, pipe: Pipe) -> None:
        what = f"{request.host}:{request.port}{'/udp' if request.udp else ''}"
        assert pipe.cancel_scope is not None
        stream: trio.SocketStream | None = None
        udp: trio.socket.SocketType | None = None
        with pipe.cancel_scope:
            try:
                addresses = await self._resolve(request)
                if request.udp:
                    udp = await _open_udp(addresses, request.port)
                else:
                    stream = await self._connect_tcp(addresses, request.port)
            except _ConnectFailed as exc:
                log.info("tunnel to %s refused: %s", what, exc.reason)
                self.pipes.pop(pipe.handle, None)
                self.mux.connect_result(pipe.handle, exc.reason, self.now(), exc.code)
                self.kick()
                return
        if stream is None and udp is None:
            return  # cancelled: the mux already gave up (timeout or friend offline)
        pipe.cancel_scope = None
        self.mux.connect_result(pipe.handle, None, self.now())
        self.kick()
        log.info("tunnel %d to %s open", pipe.handle, what)
        if stream is not None:
            error = await pump_stream(self, pipe, stream)
        else:
            assert udp is not None
            error = await self._pump_udp(pipe, udp)
        log.info("tunnel %d to %s closed%s", pipe.handle, what, f": {error}" if error else "")

    async def _resolve(self, request: ConnectRequest) -> list[tuple[int, str]]:
        kind = socket.SOCK_DGRAM if request.udp else socket.SOCK_STREAM
        try:
            infos = await trio.socket.getaddrinfo(request.host, request.port, type=kind)
        except (OSError, UnicodeError) as exc:
            raise _ConnectFailed(
                DenyCode.RESOLVE_FAILED, f"cannot resolve {request.host}: {exc}"
            ) from None
        addresses: list[tuple[int, str]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            entry = (int(family), str(sockaddr[0]))
            if entry not in addresses:
                addresses.append(entry)
        allowed = [a for a in addresses if address_allowed(a[1], request.restrict_to)]
        if not allowed:
            raise _ConnectFailed(
                DenyCode.NOT_ALLOWED, f"{request.host} resolves to no address the rules allow"
            )
        return [(f, a) for f, a in allowed if f in (socket.AF_INET, socket.AF_INET6)]

    async def _connect_tcp(self, addresses: list[tuple[int, str]], port: int) -> trio.SocketStream:
        errors: list[str] = []
        for _family, address in addresses:
            try:
                stream = await trio.open_tcp_stream(address, port)
            except OSError as exc:
                errors.append(f"{address}: {_os_error_text(exc)}")
                continue
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            return stream
        raise _ConnectFailed(DenyCode.CONNECT_FAILED, "connect failed: " + "; ".join(errors))

    async def _pump_udp(self, pipe: Pipe, sock: trio.socket.SocketType) -> str | None:
        error: str | None = None
        with sock:
            async with trio.open_nursery() as nursery:

                async def from_service() -> None:
                    while True:
                        try:
                            data = await sock.recv(UDP_RECV_BYTES)
                        except OSError:
                            continue  # ICMP port unreachable etc.: UDP is best effort
                        if len(data) <= MAX_UDP_PAYLOAD_BYTES:
                            self.mux.send_datagram(pipe.handle, data, self.now())
                            self.kick()

                nursery.start_soon(from_service)
                while True:
                    item = await pipe.get()
                    if isinstance(item, _Closed):
                        error = item.error
                        break
                    if isinstance(item, bytes):
                        try:
                            await sock.send(item)
                        except OSError:
                            pass
                nursery.cancel_scope.cancel()
        return error


async def _open_udp(addresses: list[tuple[int, str]], port: int) -> trio.socket.SocketType:
    errors: list[str] = []
    for family, address in addresses:
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        try:
            await sock.connect((address, port))
        except OSError as exc:
            sock.close()
            errors.append(f"{address}: {_os_error_text(exc)}")
            continue
        return sock
    raise _ConnectFailed(DenyCode.CONNECT_FAILED, "UDP connect failed: " + "; ".join(errors))


def _os_error_text(exc: OSError) -> str:
    # trio wraps per-address failures of open_tcp_stream in an OSError whose cause has errno
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc) or type(exc).__name__
