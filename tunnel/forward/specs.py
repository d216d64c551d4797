"""Forward specifications of ``tunnel connect`` (tuntox ``-L``/``-W``/``-D``, our ``-U``).

tuntox (util.c ``parse_local_port_forward`` / ``parse_pipe_port_forward``) accepts
``lport:host:rport`` and ``host:rport``, with ``@`` allowed in place of ``:`` ("':' is
forbidden in some environments"). We add an optional bind address and bracketed IPv6::

    -L [bind:]lport:host:rport    local TCP port -> host:rport as seen by the server
    -U [bind:]lport:host:rport    the same for UDP (our extension)
    -W host:rport                 stdin/stdout
    -D [bind:]port                local SOCKS5 server (CONNECT)

``bind`` defaults to 127.0.0.1 (tuntox binds every interface); ``*`` means all interfaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.errors import ConfigError
from tunnel.forward.rules import validate_request_host

DEFAULT_BIND_HOST = "127.0.0.1"
ALL_INTERFACES = "*"


@dataclass(frozen=True, slots=True)
class LocalForward:
    """``-L`` / ``-U``: listen on ``bind_host:local_port``, forward to ``host:port``."""

    bind_host: str
    local_port: int
    host: str
    port: int
    udp: bool = False


@dataclass(frozen=True, slots=True)
class PipeForward:
    """``-W``: stdin/stdout to ``host:port``."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class SocksListen:
    """``-D``: a SOCKS5 server on ``bind_host:port``."""

    bind_host: str
    port: int


def _split(text: str, option: str) -> list[str]:
    """Split on ``:``/``@`` outside ``[...]``; brackets are removed from the fields."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ConfigError(f"{option} {text!r}: nested '['")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{option} {text!r}: unbalanced ']'")
        elif ch in ":@" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        else:
            current.append(ch)
    if depth:
        raise ConfigError(f"{option} {text!r}: unbalanced '['")
    parts.append("".join(current))
    return parts


def _port(text: str, spec: str, option: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{option} {spec!r}: bad port {text!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option} {spec!r}: port {port} outside 1-65535")
    return port


def _host(text: str, spec: str, option: str) -> str:
    host = validate_request_host(text.encode("ascii", "replace"))
    if host is None:
        raise ConfigError(f"{option} {spec!r}: bad host {text!r}")
    return host


def _bind(text: str, spec: str, option: str) -> str:
    if text in ("", ALL_INTERFACES):
        return ALL_INTERFACES
    return _host(text, spec, option)


def parse_local_forward(spec: str, *, udp: bool = False) -> LocalForward:
    """Parse ``[bind:]lport:host:rport``.

    Raises:
        ConfigError: wrong number of fields, bad port or host.
    """
    option = "-U" if udp else "-L"
    parts = _split(spec, option)
    if len(parts) == 3:
        parts.insert(0, DEFAULT_BIND_HOST)
    if len(parts) != 4:
        raise ConfigError(f"{option} {spec!r}: expected [bind:]lport:host:rport")
    bind, lport, host, rport = parts
    return LocalForward(
        _bind(bind, spec, option),
        _port(lport, spec, option),
        _host(host, spec, option),
        _port(rport, spec, option),
        udp,
    )


def parse_pipe_forward(spec: str) -> PipeForward:
    """Parse ``host:rport``.

    Raises:
        ConfigError: wrong number of fields, bad port or host.
    """
    parts = _split(spec, "-W")
    if len(parts) != 2:
        raise ConfigError(f"-W {spec!r}: expected host:rport")
    return PipeForward(_host(parts[0], spec, "-W"), _port(parts[1], spec, "-W"))


def parse_socks_listen(spec: str) -> SocksListen:
    """Parse ``[bind:]port``.

    Raises:
        ConfigError: wrong number of fields, bad port or host.
    """
    parts = _split(spec, "-D")
    if len(parts) == 1:
        parts.insert(0, DEFAULT_BIND_HOST)
    if len(parts) != 2:
        raise ConfigError(f"-D {spec!r}: expected [bind:]port")
    return SocksListen(_bind(parts[0], spec, "-D"), _port(parts[1], spec, "-D"))
