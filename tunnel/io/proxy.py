"""Outgoing TCP streams, directly or through a SOCKS5 / HTTP CONNECT proxy (Trio).

toxcore's proxy support (``TCP_client.c``): the TCP relay client first talks to the proxy, then
runs the relay handshake through the tunnel; with a proxy set, UDP is off and everything goes
over TCP relays (the "over Tor" mode). toxcore itself only does SOCKS5 without authentication
and a bare ``CONNECT host:port``; we use python-socks (trio backend), which also does SOCKS5
username/password authentication and HTTP proxies with Basic authentication.

Configuration uses URLs, as toxcore clients do::

    proxy: socks5://127.0.0.1:9050
    proxy: socks5://user:secret@proxy.example:1080
    proxy: http://127.0.0.1:8888
"""

from __future__ import annotations

import trio
from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.trio import Proxy

from tunnel.config import ProxyConfig

__all__ = ["ProxyConfig", "ProxyConnectError", "open_tcp_stream"]


class ProxyConnectError(OSError):
    """The proxy refused, failed, or timed out while opening the tunnel."""


async def open_tcp_stream(
    host: str, port: int, *, proxy: ProxyConfig | None = None, timeout_s: float = 10.0
) -> trio.SocketStream:
    """A TCP stream to ``host:port``, through ``proxy`` if one is given.

    Raises:
        OSError: the connection failed (``ProxyConnectError`` for proxy failures).
        trio.TooSlowError: it took longer than ``timeout_s``.
    """
    with trio.fail_after(timeout_s):
        if proxy is None:
            return await trio.open_tcp_stream(host, port)
        try:
            sock = await Proxy.from_url(proxy.url(), rdns=False).connect(
                host, port, timeout=timeout_s
            )
        except ProxyTimeoutError as exc:
            raise trio.TooSlowError(str(exc)) from exc
        except ProxyError as exc:
            raise ProxyConnectError(f"proxy {proxy} refused {host}:{port}: {exc}") from exc
        except OSError as exc:
            raise ProxyConnectError(f"proxy {proxy} unreachable: {exc}") from exc
        return trio.SocketStream(sock)
