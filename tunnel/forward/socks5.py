"""Sans-IO SOCKS5 server handshake for ``tunnel connect -D`` (RFC 1928, CONNECT only).

tuntox added ``-D`` in 2025 (socks5.c: no authentication, CONNECT only, the destination host
sent to the server as a string). The same here, as a byte-driven state machine::

    GREETING --methods incl. 0x00--> REQUEST --CONNECT--> WAIT_RESULT --result()--> DONE
        \\------- anything else -------> FAILED (reply queued, then close)

The driver feeds bytes with :meth:`Socks5Handshake.receive`, writes
:meth:`data_to_send`, and once :attr:`target` is set opens a tunnel to it; it then calls
:meth:`result` with ``None`` (success) or the tunnel's :class:`DenyCode`. Bytes the client sent
after its request (optimistic data) are in :attr:`leftover`. Domain names are not resolved
locally: the server resolves them, so no DNS leaks from the client side.
"""

from __future__ import annotations

import enum
import ipaddress

from tunnel.forward.rules import validate_request_host
from tunnel.wire.tuntox import DenyCode

SOCKS_VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NONE_ACCEPTABLE = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04
MAX_HANDSHAKE_BYTES = 600
"""More than any valid greeting + request (2+255 + 4+1+255+2)."""


class Reply(enum.IntEnum):
    """RFC 1928 section 6 REP codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


_REPLY_FOR_DENY = {
    DenyCode.NOT_ALLOWED: Reply.NOT_ALLOWED,
    DenyCode.RESOLVE_FAILED: Reply.HOST_UNREACHABLE,
    DenyCode.CONNECT_FAILED: Reply.CONNECTION_REFUSED,
    DenyCode.TIMEOUT: Reply.HOST_UNREACHABLE,
    DenyCode.UNSUPPORTED: Reply.COMMAND_NOT_SUPPORTED,
    DenyCode.OFFLINE: Reply.NETWORK_UNREACHABLE,
}


def reply_for(code: DenyCode) -> Reply:
    """The SOCKS5 reply code that best describes a refused tunnel."""
    return _REPLY_FOR_DENY.get(code, Reply.GENERAL_FAILURE)


class State(enum.Enum):
    GREETING = "greeting"
    REQUEST = "request"
    WAIT_RESULT = "wait_result"
    DONE = "done"
    FAILED = "failed"


def _reply(code: Reply) -> bytes:
    # VER REP RSV ATYP=IPv4 BND.ADDR=0.0.0.0 BND.PORT=0
    return bytes([SOCKS_VERSION, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0])


class Socks5Handshake:
    """One SOCKS5 client connection up to the CONNECT reply."""

    __slots__ = ("_buffer", "_out", "leftover", "state", "target")

    def __init__(self) -> None:
        self.state = State.GREETING
        self.target: tuple[str, int] | None = None
        self.leftover = b""
        self._buffer = bytearray()
        self._out = bytearray()

    def data_to_send(self) -> bytes:
        """Bytes to write to the SOCKS client (drains)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def failed(self) -> bool:
        """The handshake failed: write :meth:`data_to_send`, then close the connection."""
        return self.state is State.FAILED

    def receive(self, data: bytes) -> None:
        """Feed bytes read from the SOCKS client."""
        if self.state in (State.WAIT_RESULT, State.DONE):
            self.leftover += data
            return
        if self.state is State.FAILED:
            return
        self._buffer += data
        if len(self._buffer) > MAX_HANDSHAKE_BYTES:
            self._fail(Reply.GENERAL_FAILURE)
            return
        if self.state is State.GREETING:
            self._parse_greeting()
        if self.state is State.REQUEST:
            self._parse_request()

    def result(self, code: DenyCode | None) -> None:
        """The tunnel opened (``None``) or failed with ``code``: queue the reply."""
        if self.state is not State.WAIT_RESULT:
            raise ValueError("no CONNECT request is waiting for a result")
        if code is None:
            self._out += _reply(Reply.SUCCEEDED)
            self.state = State.DONE
        else:
            self._fail(reply_for(code))

    def _fail(self, code: Reply | None) -> None:
        if code is not None:
            self._out += _reply(code)
        self.state = State.FAILED
        self._buffer.clear()

    def _parse_greeting(self) -> None:
        buf = self._buffer
        if len(buf) < 2:
            return
        if buf[0] != SOCKS_VERSION:
            self._fail(None)  # not SOCKS5: no reply format to speak
            return
        count = buf[1]
        if len(buf) < 2 + count:
            return
        methods = bytes(buf[2 : 2 + count])
        del buf[: 2 + count]
        if METHOD_NO_AUTH not in methods:
            self._out += bytes([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE])
            self._fail(None)
            return
        self._out += bytes([SOCKS_VERSION, METHOD_NO_AUTH])
        self.state = State.REQUEST

    def _parse_request(self) -> None:
        buf = self._buffer
        if len(buf) < 4:
            return
        version, command, _reserved, atyp = buf[0], buf[1], buf[2], buf[3]
        if version != SOCKS_VERSION:
            self._fail(Reply.GENERAL_FAILURE)
            return
        if atyp == ATYP_IPV4:
            size, start = 4, 4
        elif atyp == ATYP_IPV6:
            size, start = 16, 4
        elif atyp == ATYP_DOMAIN:
            if len(buf) < 5:
                return
            size, start = buf[4], 5
        else:
            self._fail(Reply.ADDRESS_TYPE_NOT_SUPPORTED)
            return
        end = start + size + 2
        if len(buf) < end:
            return
        raw = bytes(buf[start : start + size])
        port = int.from_bytes(buf[start + size : end], "big")
        self.leftover = bytes(buf[end:])
        buf.clear()
        if command != CMD_CONNECT:
            self._fail(Reply.COMMAND_NOT_SUPPORTED)
            return
        if atyp == ATYP_IPV4:
            host = str(ipaddress.IPv4Address(raw))
        elif atyp == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(raw))
        else:
            checked = validate_request_host(raw)
            if checked is None:
                self._fail(Reply.GENERAL_FAILURE)
                return
            host = checked
        if port == 0:
            self._fail(Reply.GENERAL_FAILURE)
            return
        self.target = (host, port)
        self.state = State.WAIT_RESULT
