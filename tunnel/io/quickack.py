"""Relay streams that acknowledge every read at once (``TCP_QUICKACK``).

A TCP relay connection carries many small frames both ways (data, net_crypto acks and
requests, pings). When the sender of such frames runs Nagle's algorithm (Tor does, on the
streams it writes to us; so may other relay peers), its next small frame waits until our
ACK of the last one, and Linux delays that ACK by up to 40 ms. Acknowledging at once removes
that wait: a tunnel round trip through Tor onion services went from ~71 to ~48 ms with the
client side alone. Linux clears ``TCP_QUICKACK`` by itself after a while, so it is set again
after each read (one system call per read of up to 16 KiB).
"""

from __future__ import annotations

import contextlib
import socket

import trio

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class QuickAckStream(trio.abc.HalfCloseableStream):
    """A :class:`trio.SocketStream` whose every read is acknowledged at once."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = stream.socket

    def setsockopt(self, level: int, option: int, value: int) -> None:
        """Set a socket option on the underlying stream."""
        self.stream.setsockopt(level, option, value)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.stream.receive_some(max_bytes)
        if _QUICKACK is not None and data:
            with contextlib.suppress(OSError):
                self.socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return data

    async def aclose(self) -> None:
        await self.stream.aclose()


def quick_ack(stream: trio.abc.Stream) -> trio.abc.Stream:
    """``stream`` acknowledging every read at once if it is a TCP socket stream, else as is."""
    if isinstance(stream, trio.SocketStream):
        return QuickAckStream(stream)
    return stream
