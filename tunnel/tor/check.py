"""Is Tor usable? Checks with clear one-line errors, each within a stated bound.

tor-offline.md section 3 measured how Tor fails: with no network it accepts SOCKS CONNECTs and
holds them for ``SocksTimeout`` (120 s) before answering 0x06, and bootstrap may sit at 0 % or
5 % for minutes without a warning. So every check here carries its own bound:

* nothing on the SOCKS port: ``Tor SOCKS port 127.0.0.1:9050 closed``, at once (connection
  refused; bounded by ``SOCKS_PROBE_TIMEOUT_S``);
* something else on the SOCKS port: ``127.0.0.1:9050 is not a Tor SOCKS5 port (...)``, at once;
* Tor up but not bootstrapped (no network, unreachable relays):
  ``cannot reach the Tor network (bootstrap at 5%: Connecting to a relay; ...)`` after
  ``bootstrap_wait_s`` (default :data:`BOOTSTRAP_WAIT_S`), read from the control port;
* Tor with ``DisableNetwork 1`` (it opens no SOCKS port then): ``cannot reach the Tor network
  (bootstrap at 0%: Starting; Tor's DisableNetwork is set)`` at once, when a control port is
  configured (otherwise it looks like a closed SOCKS port);
* a stream through Tor that hangs: ``no connection through Tor to H:P within N s`` after the
  caller's ``timeout_s`` (default :data:`CONNECT_TIMEOUT_S`);
* Tor refuses a stream: ``Tor could not connect to H:P: <meaning> (SOCKS reply 0xNN)`` as soon as
  Tor answers (Tor's extended 0xF0-0xF7 onion codes included).

:func:`open_tor_stream` is the SOCKS5 connect every Tor-mode connection should use (python-socks,
Trio backend, remote DNS so ``.onion`` names reach Tor).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import trio
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.trio import Proxy

from tunnel.errors import ConfigError
from tunnel.tor.control import connect_tor_controller
from tunnel.tor.errors import (
    TorConnectError,
    TorConnectTimeoutError,
    TorControlError,
    TorError,
    TorNetworkUnreachableError,
    TorNotSocksError,
    TorSocksClosedError,
    connection_refused,
)
from tunnel.tor.protocol import BootstrapStatus, socks_reply_meaning

SOCKS_PROBE_TIMEOUT_S = 3.0
"""Bound on "is something speaking SOCKS5 on the port" (loopback: answers in milliseconds)."""
BOOTSTRAP_WAIT_S = 30.0
"""Default time Tor gets to reach 100 % before "cannot reach the Tor network"."""
BOOTSTRAP_POLL_INTERVAL_S = 0.25
CONNECT_TIMEOUT_S = 30.0
"""Default bound on one stream through Tor (a fresh onion can take ~15 s; Tor's own is 120 s)."""
SOCKS5_GREETING_NO_AUTH = b"\x05\x01\x00"
SOCKS5_CHOICE_NO_AUTH = b"\x05\x00"
_REPLY_CODE_RE = re.compile(r"0[xX]([0-9A-Fa-f]{2})")


def _parse_host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port_s = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ConfigError(f"{what}: {text!r} is not host:port")
    return host, int(port_s)


@dataclass(frozen=True, slots=True)
class TorEndpoints:
    """Where a running Tor listens: SOCKS always; control optionally (for bootstrap checks
    and onion services)."""

    socks_host: str = "127.0.0.1"
    socks_port: int = 9050
    control_host: str | None = None
    control_port: int | None = None
    control_password: str | None = None
    cookie_path: str | None = None

    @classmethod
    def parse(
        cls,
        socks: str,
        control: str | None = None,
        *,
        control_password: str | None = None,
        cookie_path: str | None = None,
    ) -> TorEndpoints:
        """From ``"127.0.0.1:9050"`` and optionally ``"127.0.0.1:9051"``.

        Raises:
            ConfigError: a value that is not ``host:port``.
        """
        socks_host, socks_port = _parse_host_port(socks, "tor.socks")
        control_host: str | None = None
        control_port: int | None = None
        if control:
            control_host, control_port = _parse_host_port(control, "tor.control")
        return cls(
            socks_host, socks_port, control_host, control_port, control_password, cookie_path
        )

    @property
    def socks(self) -> str:
        """``host:port`` of the SOCKS port."""
        return f"{self.socks_host}:{self.socks_port}"

    @property
    def has_control(self) -> bool:
        """True when a control port is configured."""
        return self.control_host is not None and self.control_port is not None


@dataclass(frozen=True, slots=True)
class TorCheckResult:
    """What :func:`check_tor` found (all checks passed)."""

    bootstrap: BootstrapStatus | None
    tor_version: str | None
    probe_s: float | None
    elapsed_s: float


async def probe_socks_port(
    host: str, port: int, *, timeout_s: float = SOCKS_PROBE_TIMEOUT_S
) -> None:
    """Check that a SOCKS5 server (Tor) answers on ``host:port``: connect, no-auth greeting.

    Raises:
        TorSocksClosedError: nothing listens, or the connect does not complete in time.
        TorNotSocksError: something else listens there.
    """
    where = f"{host}:{port}"
    try:
        with trio.fail_after(timeout_s):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError as exc:
                if connection_refused(exc):
                    raise TorSocksClosedError(f"Tor SOCKS port {where} closed") from exc
                raise TorSocksClosedError(
                    f"Tor SOCKS port {where} unreachable: {exc.strerror or exc}"
                ) from exc
            async with stream:
                try:
                    await stream.send_all(SOCKS5_GREETING_NO_AUTH)
                    answer = b""
                    while len(answer) < 2:
                        chunk = await stream.receive_some(2 - len(answer))
                        if not chunk:
                            break
                        answer += chunk
                except (trio.BrokenResourceError, OSError) as exc:
                    raise TorNotSocksError(f"{where} is not a Tor SOCKS5 port ({exc})") from exc
                if answer != SOCKS5_CHOICE_NO_AUTH:
                    raise TorNotSocksError(
                        f"{where} is not a Tor SOCKS5 port (answered {answer.hex() or 'nothing'})"
                    )
    except trio.TooSlowError:
        raise TorSocksClosedError(
            f"Tor SOCKS port {where} did not answer within {timeout_s:g} s"
        ) from None


async def wait_bootstrapped(
    endpoints: TorEndpoints, *, wait_s: float = BOOTSTRAP_WAIT_S
) -> tuple[BootstrapStatus, str | None]:
    """Poll the control port until Tor reports 100 %; return (status, tor version).

    Raises:
        TorNetworkUnreachableError: still below 100 % after ``wait_s``:
            ``"cannot reach the Tor network (bootstrap at N%: <summary>; warning: ...)"``.
        TorControlError: the control port is closed or refuses us.
    """
    if endpoints.control_host is None or endpoints.control_port is None:
        raise ValueError("no control port configured")
    controller = await connect_tor_controller(
        endpoints.control_host,
        endpoints.control_port,
        password=endpoints.control_password,
        cookie_path=endpoints.cookie_path,
        timeout_s=min(wait_s, 10.0) if wait_s > 0 else 10.0,
    )
    try:
        version = controller.protocol_info.tor_version if controller.protocol_info else None
        deadline = trio.current_time() + wait_s
        status = await controller.bootstrap_status()
        while not status.done and trio.current_time() < deadline:
            # sleep, then ask (never cancel a command mid-reply: that closes the connection)
            await trio.sleep(min(BOOTSTRAP_POLL_INTERVAL_S, deadline - trio.current_time()))
            status = await controller.bootstrap_status()
        if not status.done:
            disabled = (
                "; Tor's DisableNetwork is set" if await controller.network_disabled() else ""
            )
            raise TorNetworkUnreachableError(
                f"cannot reach the Tor network ({status.describe()}{disabled}, after {wait_s:g} s)",
                status.progress,
            )
        return status, version
    finally:
        await controller.aclose()


async def _disabled_network_error(
    endpoints: TorEndpoints, timeout_s: float
) -> TorNetworkUnreachableError | None:
    """The error to report when Tor answers on its control port with DisableNetwork set."""
    if endpoints.control_host is None or endpoints.control_port is None:
        return None
    try:
        controller = await connect_tor_controller(
            endpoints.control_host,
            endpoints.control_port,
            password=endpoints.control_password,
            cookie_path=endpoints.cookie_path,
            timeout_s=timeout_s,
        )
    except TorControlError:
        return None
    try:
        if not await controller.network_disabled():
            return None
        status = await controller.bootstrap_status()
    except TorControlError:
        return None
    finally:
        await controller.aclose()
    return TorNetworkUnreachableError(
        f"cannot reach the Tor network ({status.describe()}; Tor's DisableNetwork is set)",
        status.progress,
    )


def _reply_code(exc: ProxyError) -> int | None:
    if exc.error_code is not None:
        return int(exc.error_code)
    match = _REPLY_CODE_RE.search(str(exc))  # python-socks rejects Tor's 0xF0-0xF7 by text
    return int(match.group(1), 16) if match else None


async def open_tor_stream(
    socks_host: str,
    socks_port: int,
    host: str,
    port: int,
    *,
    timeout_s: float = CONNECT_TIMEOUT_S,
    isolation: str | None = None,
) -> trio.SocketStream:
    """A TCP stream to ``host:port`` through Tor's SOCKS5 port, within ``timeout_s``.

    ``host`` may be an IP literal or a ``.onion`` name (resolved by Tor). ``isolation`` becomes
    the SOCKS username: Tor (IsolateSOCKSAuth) gives different values different circuits.

    Raises:
        TorSocksClosedError: the SOCKS port is closed.
        TorConnectTimeoutError: no stream within ``timeout_s`` (Tor alone would wait 120 s).
        TorConnectError: Tor answered with an error (``reply`` holds the SOCKS5 code).
    """
    proxy = Proxy(
        ProxyType.SOCKS5,
        socks_host,
        socks_port,
        username=isolation,
        password=None if isolation is None else "tunnel",
        rdns=True,
    )
    target = f"{host}:{port}"
    try:
        with trio.fail_after(timeout_s):
            sock = await proxy.connect(host, port, timeout=timeout_s + 1.0)
    except trio.TooSlowError:
        raise TorConnectTimeoutError(
            f"no connection through Tor to {target} within {timeout_s:g} s"
        ) from None
    except ProxyTimeoutError as exc:
        raise TorConnectTimeoutError(
            f"no connection through Tor to {target} within {timeout_s:g} s"
        ) from exc
    except ProxyConnectionError as exc:
        if connection_refused(exc):
            raise TorSocksClosedError(f"Tor SOCKS port {socks_host}:{socks_port} closed") from exc
        raise TorSocksClosedError(
            f"Tor SOCKS port {socks_host}:{socks_port} unreachable: {exc}"
        ) from exc
    except ProxyError as exc:
        code = _reply_code(exc)
        detail = socks_reply_meaning(code)
        suffix = f" (SOCKS reply 0x{code:02X})" if code is not None else f" ({exc})"
        raise TorConnectError(f"Tor could not connect to {target}: {detail}{suffix}", code) from exc
    return trio.SocketStream(sock)


RETRYABLE_ONION_REPLIES = frozenset({0x01, 0x06, 0xF0, 0xF2, 0xF3, 0xF7})
"""Replies worth another attempt for a fresh onion: descriptor not yet published (0xF0),
introduction/rendezvous hiccups, stale cached descriptor (0x01). Not 0xF6 (bad address)."""
ONION_RETRY_INTERVAL_S = 1.0


async def open_onion_stream(
    socks_host: str,
    socks_port: int,
    host: str,
    port: int,
    *,
    timeout_s: float = 2 * CONNECT_TIMEOUT_S,
    attempt_timeout_s: float = CONNECT_TIMEOUT_S,
    isolation: str | None = None,
) -> trio.SocketStream:
    """:func:`open_tor_stream` with retries, for onion services that may be just published.

    Retries retryable replies (:data:`RETRYABLE_ONION_REPLIES`) and per-attempt timeouts until
    ``timeout_s`` is spent; each attempt is bounded by ``attempt_timeout_s``.

    Raises:
        TorSocksClosedError: at once (no point retrying).
        TorConnectError / TorConnectTimeoutError: the last failure when time is up, or a
            non-retryable reply at once.
    """
    deadline = trio.current_time() + timeout_s
    while True:
        remaining = deadline - trio.current_time()
        try:
            return await open_tor_stream(
                socks_host,
                socks_port,
                host,
                port,
                timeout_s=max(0.1, min(attempt_timeout_s, remaining)),
                isolation=isolation,
            )
        except TorConnectTimeoutError:
            if trio.current_time() + ONION_RETRY_INTERVAL_S >= deadline:
                raise TorConnectTimeoutError(
                    f"no connection through Tor to {host}:{port} within {timeout_s:g} s"
                ) from None
        except TorConnectError as exc:
            if exc.reply not in RETRYABLE_ONION_REPLIES:
                raise
            if trio.current_time() + ONION_RETRY_INTERVAL_S >= deadline:
                raise
        await trio.sleep(ONION_RETRY_INTERVAL_S)


async def check_tor(
    endpoints: TorEndpoints,
    *,
    bootstrap_wait_s: float = BOOTSTRAP_WAIT_S,
    probe: tuple[str, int] | None = None,
    probe_timeout_s: float = CONNECT_TIMEOUT_S,
    socks_timeout_s: float = SOCKS_PROBE_TIMEOUT_S,
) -> TorCheckResult:
    """Everything a node checks before it sends relay connections through Tor.

    1. The SOCKS port answers SOCKS5 (within ``socks_timeout_s``).
    2. With a control port: Tor reaches 100 % bootstrap within ``bootstrap_wait_s``.
    3. With ``probe``: one stream through Tor to ``probe`` opens within ``probe_timeout_s``
       (without a control port this is the only way to tell "no network" apart).

    Worst case before an error: ``socks_timeout_s + bootstrap_wait_s + probe_timeout_s``.

    Raises:
        TorSocksClosedError, TorNotSocksError, TorNetworkUnreachableError, TorControlError,
        TorConnectError (TorConnectTimeoutError): see the module table.
    """
    start = trio.current_time()
    try:
        await probe_socks_port(
            endpoints.socks_host, endpoints.socks_port, timeout_s=socks_timeout_s
        )
    except TorSocksClosedError as closed:
        if endpoints.has_control:  # Tor with DisableNetwork runs but opens no SOCKS port
            disabled = await _disabled_network_error(endpoints, socks_timeout_s)
            if disabled is not None:
                raise disabled from closed
        raise
    status: BootstrapStatus | None = None
    version: str | None = None
    if endpoints.has_control:
        status, version = await wait_bootstrapped(endpoints, wait_s=bootstrap_wait_s)
    probe_s: float | None = None
    if probe is not None:
        t0 = trio.current_time()
        try:
            stream = await open_tor_stream(
                endpoints.socks_host,
                endpoints.socks_port,
                probe[0],
                probe[1],
                timeout_s=probe_timeout_s,
            )
        except TorConnectTimeoutError as exc:
            raise TorNetworkUnreachableError(
                f"cannot reach the Tor network (no stream to {probe[0]}:{probe[1]} "
                f"within {probe_timeout_s:g} s)"
            ) from exc
        await stream.aclose()
        probe_s = trio.current_time() - t0
    return TorCheckResult(status, version, probe_s, trio.current_time() - start)


TOR_RETRY_INTERVAL_S = 5.0
"""Default pause between checks while waiting for Tor to become usable."""


async def wait_tor_usable(
    endpoints: TorEndpoints,
    *,
    on_error: Callable[[TorError], None] | None = None,
    retry_interval_s: float = TOR_RETRY_INTERVAL_S,
    bootstrap_wait_s: float = BOOTSTRAP_WAIT_S,
    probe: tuple[str, int] | None = None,
    probe_timeout_s: float = CONNECT_TIMEOUT_S,
) -> TorCheckResult:
    """Run :func:`check_tor` until it passes (recovery after "Tor down"); no overall bound.

    ``on_error`` is called with each failure whose message differs from the previous one, so a
    node logs "Tor SOCKS port 127.0.0.1:9050 closed" once, not every ``retry_interval_s``.
    Wrap in ``trio.move_on_after`` / ``fail_after`` for a bound.
    """
    last: str | None = None
    while True:
        try:
            return await check_tor(
                endpoints,
                bootstrap_wait_s=bootstrap_wait_s,
                probe=probe,
                probe_timeout_s=probe_timeout_s,
            )
        except TorError as exc:
            if on_error is not None and str(exc) != last:
                on_error(exc)
            last = str(exc)
        await trio.sleep(retry_interval_s)


__all__ = [
    "BOOTSTRAP_WAIT_S",
    "CONNECT_TIMEOUT_S",
    "SOCKS_PROBE_TIMEOUT_S",
    "TorCheckResult",
    "TorControlError",
    "TorEndpoints",
    "check_tor",
    "open_onion_stream",
    "open_tor_stream",
    "probe_socks_port",
    "wait_bootstrapped",
    "wait_tor_usable",
]
