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

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

import trio
from python_socks import ProxyError, ProxyTimeoutError
from python_socks.async_.trio import Proxy

from tunnel.errors import ConfigError

ProxyKind = Literal["socks5", "http"]
DEFAULT_PORTS: dict[str, int] = {"socks5": 1080, "http": 8080}


class ProxyConnectError(OSError):
    """The proxy refused, failed, or timed out while opening the tunnel."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Where the proxy is and how to authenticate to it."""

    kind: ProxyKind
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> ProxyConfig:
        """From ``socks5://[user:pass@]host:port`` or ``http://[user:pass@]host:port``.

        Raises:
            ConfigError: unknown scheme, missing host, or a bad port.
        """
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"proxy: {url!r} is not a valid proxy URL ({exc})") from exc
        scheme = parts.scheme.lower()
        if scheme in ("socks5", "socks5h", "socks"):
            kind: ProxyKind = "socks5"
        elif scheme in ("http", "https-connect", "connect"):
            kind = "http"
        else:
            raise ConfigError(f"proxy: scheme {parts.scheme!r} is not socks5:// or http://")
        if not parts.hostname:
            raise ConfigError(f"proxy: {url!r} has no host")
        return cls(
            kind,
            parts.hostname,
            port if port is not None else DEFAULT_PORTS[kind],
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password is not None else None,
        )

    def url(self) -> str:
        """The URL form (with credentials, if any)."""
        cred = ""
        if self.username is not None:
            cred = quote(self.username, safe="")
            if self.password is not None:
                cred += ":" + quote(self.password, safe="")
            cred += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{cred}{host}:{self.port}"

    def __str__(self) -> str:
        """The URL without the password (safe to log)."""
        user = f"{self.username}@" if self.username else ""
        return f"{self.kind}://{user}{self.host}:{self.port}"


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
