"""Errors of the Tor transport. ``str(e)`` is a one-line message fit to show users."""

from __future__ import annotations

from tunnel.errors import TunnelError


class TorError(TunnelError):
    """Tor is not usable for what was asked."""


class TorSocksClosedError(TorError):
    """Nothing listens on the configured SOCKS port (``"Tor SOCKS port 127.0.0.1:9050 closed"``)."""


class TorNotSocksError(TorError):
    """Something listens on the SOCKS port, but it does not speak SOCKS5."""


class TorNetworkUnreachableError(TorError):
    """Tor runs but has not bootstrapped: ``"cannot reach the Tor network (bootstrap at 5%)"``."""

    def __init__(self, message: str, progress: int | None = None) -> None:
        super().__init__(message)
        self.progress = progress


class TorConnectError(TorError):
    """Tor answered a SOCKS CONNECT with an error reply (``reply`` is the SOCKS5 code)."""

    def __init__(self, message: str, reply: int | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class TorConnectTimeoutError(TorConnectError):
    """No stream through Tor within our own bound (Tor itself would wait 120 s)."""


class TorControlError(TorError):
    """The control port is closed, refused authentication, or rejected a command."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


ECONNREFUSED = 111
"""Linux errno for a refused TCP connect (kept here so this module stays import-free)."""


def connection_refused(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps: ``__cause__``, exception groups) is ECONNREFUSED.

    ``trio.open_tcp_stream`` raises a generic "all attempts to connect ... failed" OSError whose
    cause holds the per-address errors.
    """
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == ECONNREFUSED:
            return True
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        for nxt in (e.__cause__, e.__context__):
            if nxt is not None:
                stack.append(nxt)
    return False
