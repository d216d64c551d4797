"""A minimal Tor control-port client on Trio (raw protocol, no stem).

Framing and parsing live in :mod:`tunnel.tor.protocol` (sans-IO); this module only moves bytes.
What tunnel uses: authentication (NULL, COOKIE, SAFECOOKIE or password, chosen from
PROTOCOLINFO), ``GETINFO status/bootstrap-phase``, ``SETCONF``, ephemeral v3 onion services
(``ADD_ONION`` with our own persistent key, ``DEL_ONION``) and ``HS_DESC`` events to learn when a
service's descriptor is published.

Every network wait is bounded: connecting and each command by ``timeout_s``
(:data:`CONTROL_TIMEOUT_S` unless given). Errors are :class:`~tunnel.tor.errors.TorControlError`
with a one-line message.

Usage::

    async with open_tor_controller("127.0.0.1", 9051) as ctl:
        status = await ctl.bootstrap_status()
        service = await ctl.add_onion(key, [(33445, "127.0.0.1:40001")])
        await ctl.wait_hs_desc_uploaded(service.service_id, timeout_s=30)

Ephemeral services without ``detach=True`` disappear when the control connection closes, which is
what a node wants: its onion service lives exactly as long as its controller.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from tunnel.errors import BadPacket
from tunnel.tor.errors import TorControlError, connection_refused
from tunnel.tor.onion_key import OnionKey
from tunnel.tor.protocol import (
    COOKIE_SIZE_BYTES,
    SAFECOOKIE_NONCE_SIZE,
    AddOnionResult,
    BootstrapStatus,
    ProtocolInfo,
    Reply,
    ReplyParser,
    add_onion_command,
    authchallenge_command,
    authenticate_command,
    del_onion_command,
    getconf_command,
    getinfo_command,
    parse_add_onion,
    parse_bootstrap_phase,
    parse_getconf,
    parse_getinfo,
    parse_hs_desc_event,
    parse_protocolinfo,
    protocolinfo_command,
    safecookie_response,
    setconf_command,
    setevents_command,
)

CONTROL_TIMEOUT_S = 10.0
"""Bound on connecting to the control port and on each command's reply."""
PUBLISH_TIMEOUT_S = 60.0
"""Default bound on the first descriptor upload after ADD_ONION (lab: ~1.2 s; real Tor: more)."""
RECEIVE_CHUNK_BYTES = 16 * 1024
MAX_QUEUED_EVENTS = 1000
"""Events read while waiting for a reply are queued; beyond this the oldest are dropped."""


class TorController:
    """An authenticated control connection. Create with :func:`open_tor_controller`."""

    def __init__(self, stream: trio.abc.Stream, where: str, timeout_s: float) -> None:
        self._stream = stream
        self.where = where
        self.timeout_s = timeout_s
        self._parser = ReplyParser()
        self._events: list[Reply] = []
        self._lock = trio.Lock()
        self._closed = False
        self.events_dropped = 0
        self.protocol_info: ProtocolInfo | None = None

    # ------------------------------------------------------------------ plumbing

    async def _read_reply(self) -> Reply:
        while True:
            reply = self._parser.next_reply()
            if reply is not None:
                return reply
            try:
                data = await self._stream.receive_some(RECEIVE_CHUNK_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TorControlError(f"Tor control connection {self.where} lost: {exc}") from exc
            if not data:
                raise TorControlError(f"Tor control connection {self.where} closed by Tor")
            try:
                self._parser.feed(bytes(data))
            except BadPacket as exc:
                await self.aclose()
                raise TorControlError(f"Tor control port {self.where}: {exc}") from exc

    def _queue_event(self, event: Reply) -> None:
        self._events.append(event)
        if len(self._events) > MAX_QUEUED_EVENTS:
            del self._events[0]
            self.events_dropped += 1

    async def command(self, line: bytes, *, timeout_s: float | None = None) -> Reply:
        """Send one command line and return its reply (any status); events are queued.

        If the call is cancelled before the reply arrives, the connection is closed (the
        reply would otherwise answer the next command).

        Raises:
            TorControlError: the connection failed or no reply came within the timeout.
        """
        bound = self.timeout_s if timeout_s is None else timeout_s
        async with self._lock:
            if self._closed:
                raise TorControlError(f"Tor control connection {self.where} is closed")
            try:
                with trio.fail_after(bound):
                    try:
                        await self._stream.send_all(line)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                        raise TorControlError(
                            f"Tor control connection {self.where} lost: {exc}"
                        ) from exc
                    while True:
                        reply = await self._read_reply()
                        if not reply.is_event:
                            return reply
                        self._queue_event(reply)
            except trio.TooSlowError:
                verb = line.split(b" ", 1)[0].strip().decode("ascii", "replace")
                await self.aclose()
                raise TorControlError(
                    f"Tor control port {self.where} did not answer {verb} within {bound:g} s"
                ) from None
            except BaseException:
                # cancelled (or failed) between sending and reading the reply: a late reply
                # would be taken for the next command's, so this connection is done
                await self.aclose()
                raise

    async def _ok(self, line: bytes, what: str) -> Reply:
        reply = await self.command(line)
        if not reply.ok:
            raise TorControlError(
                f"{what} refused by Tor: {reply.status} {reply.message}", reply.status
            )
        return reply

    async def aclose(self) -> None:
        """Close the connection (non-detached onion services go away with it)."""
        if not self._closed:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self._stream.aclose()

    # --------------------------------------------------------------- authentication

    async def authenticate(
        self,
        *,
        password: str | None = None,
        cookie_path: str | os.PathLike[str] | None = None,
        method: str | None = None,
    ) -> None:
        """Authenticate using what PROTOCOLINFO offers.

        Order: ``password`` if given; NULL if allowed; COOKIE; SAFECOOKIE. ``cookie_path``
        overrides Tor's COOKIEFILE; ``method`` forces one method (tests).

        Raises:
            TorControlError: no usable method, unreadable cookie, or Tor refused.
        """
        try:
            info = parse_protocolinfo(await self.command(protocolinfo_command()))
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc
        self.protocol_info = info
        methods = info.auth_methods
        if method is None:
            if password is not None and "HASHEDPASSWORD" in methods:
                method = "HASHEDPASSWORD"
            elif "NULL" in methods:
                method = "NULL"
            elif "COOKIE" in methods:
                method = "COOKIE"
            elif "SAFECOOKIE" in methods:
                method = "SAFECOOKIE"
            else:
                raise TorControlError(
                    f"Tor control port {self.where} needs {','.join(sorted(methods))}: "
                    "configure a control password"
                )
        if method == "NULL":
            await self._ok(authenticate_command(), "AUTHENTICATE")
        elif method == "HASHEDPASSWORD":
            await self._ok(authenticate_command(password=password or ""), "AUTHENTICATE")
        elif method in ("COOKIE", "SAFECOOKIE"):
            cookie = await self._read_cookie(cookie_path or info.cookie_file)
            if method == "COOKIE":
                await self._ok(authenticate_command(cookie=cookie), "AUTHENTICATE")
            else:
                nonce = os.urandom(SAFECOOKIE_NONCE_SIZE)
                reply = await self.command(authchallenge_command(nonce))
                try:
                    line = safecookie_response(reply, cookie, nonce)
                except BadPacket as exc:
                    raise TorControlError(f"Tor control port {self.where}: {exc}") from exc
                await self._ok(line, "AUTHENTICATE")
        else:
            raise TorControlError(f"unknown Tor control auth method {method!r}")

    async def _read_cookie(self, path: str | os.PathLike[str] | None) -> bytes:
        if path is None:
            raise TorControlError(f"Tor control port {self.where} gave no cookie file")
        try:
            cookie = await trio.Path(path).read_bytes()
        except OSError as exc:
            raise TorControlError(f"cannot read Tor control cookie {path}: {exc}") from exc
        if len(cookie) != COOKIE_SIZE_BYTES:
            raise TorControlError(f"Tor control cookie {path} is {len(cookie)} bytes, not 32")
        return cookie

    # ------------------------------------------------------------------- queries

    async def getinfo(self, *keys: str) -> dict[str, str]:
        """``GETINFO`` values by key.

        Raises:
            TorControlError: Tor rejected a key, or the connection failed.
        """
        reply = await self._ok(getinfo_command(*keys), "GETINFO")
        try:
            return parse_getinfo(reply)
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc

    async def bootstrap_status(self) -> BootstrapStatus:
        """Tor's current bootstrap phase (``GETINFO status/bootstrap-phase``)."""
        text = (await self.getinfo("status/bootstrap-phase")).get("status/bootstrap-phase", "")
        try:
            return parse_bootstrap_phase(text)
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc

    async def getconf(self, *keys: str) -> dict[str, str | None]:
        """``GETCONF`` values by key (``None``: at its default)."""
        reply = await self._ok(getconf_command(*keys), "GETCONF")
        try:
            return parse_getconf(reply)
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc

    async def network_disabled(self) -> bool:
        """True when Tor's ``DisableNetwork`` is set (it then opens no SOCKS port either)."""
        return (await self.getconf("DisableNetwork")).get("DisableNetwork") == "1"

    async def setconf(self, settings: dict[str, str]) -> None:
        """``SETCONF`` (e.g. ``{"DisableNetwork": "0"}``)."""
        await self._ok(setconf_command(settings), "SETCONF")

    async def set_events(self, *events: str) -> None:
        """Subscribe to asynchronous events (replaces the previous subscription)."""
        await self._ok(setevents_command(*events), "SETEVENTS")

    async def next_event(self) -> Reply:
        """The next asynchronous event (queued or read now). Unbounded: wrap in a timeout."""
        async with self._lock:
            if self._events:
                return self._events.pop(0)
            while True:
                reply = await self._read_reply()
                if reply.is_event:
                    return reply
                # a reply nobody waits for cannot happen while we hold the lock; drop it

    # ------------------------------------------------------------- onion services

    async def add_onion(
        self,
        key: OnionKey,
        ports: list[tuple[int, str]],
        *,
        detach: bool = False,
        max_streams: int | None = None,
    ) -> AddOnionResult:
        """Publish an ephemeral v3 onion service with our persistent ``key``.

        ``ports`` maps virtual ports to local targets: ``[(33445, "127.0.0.1:40001")]``.
        The reply's service id is checked against the address derived from ``key``.

        Raises:
            TorControlError: Tor refused (e.g. 550 "Onion address collision" when it is
                already published on this Tor), or the reply does not match the key.
        """
        reply = await self._ok(
            add_onion_command(key.blob, ports, detach=detach, max_streams=max_streams),
            "ADD_ONION",
        )
        try:
            result = parse_add_onion(reply)
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc
        if result.service_id != key.service_id:
            raise TorControlError(
                f"Tor published {result.service_id}, expected {key.service_id} for our key"
            )
        return result

    async def add_onion_new(
        self, ports: list[tuple[int, str]], *, detach: bool = False
    ) -> tuple[AddOnionResult, OnionKey]:
        """Publish a service with a key Tor generates (``NEW:ED25519-V3``); returns the key."""
        reply = await self._ok(
            add_onion_command("NEW:ED25519-V3", ports, detach=detach, discard_pk=False),
            "ADD_ONION",
        )
        try:
            result = parse_add_onion(reply)
            key = OnionKey.from_blob(result.private_key or "")
        except BadPacket as exc:
            raise TorControlError(f"Tor control port {self.where}: {exc}") from exc
        return result, key

    async def del_onion(self, service_id: str) -> None:
        """Remove an ephemeral onion service created by this (or a detached) controller."""
        await self._ok(del_onion_command(service_id), "DEL_ONION")

    async def wait_hs_desc_uploaded(self, service_id: str, *, timeout_s: float) -> None:
        """Wait until an ``HS_DESC UPLOADED`` event for ``service_id`` arrives.

        Subscribe first with ``set_events("HS_DESC")`` *before* ``add_onion`` so the event is
        not missed.

        Raises:
            TorControlError: none within ``timeout_s``.
        """
        with trio.move_on_after(timeout_s):
            while True:
                event = parse_hs_desc_event(await self.next_event())
                if event and event.service_id == service_id and event.action == "UPLOADED":
                    return
        raise TorControlError(
            f"onion service {service_id}.onion descriptor not uploaded within {timeout_s:g} s"
        )


def _describe_connect_error(where: str, exc: OSError) -> str:
    if connection_refused(exc):
        return f"Tor control port {where} closed"
    return f"cannot connect to Tor control port {where}: {exc.strerror or exc}"


async def connect_tor_controller(
    host: str,
    port: int,
    *,
    password: str | None = None,
    cookie_path: str | os.PathLike[str] | Path | None = None,
    auth_method: str | None = None,
    timeout_s: float = CONTROL_TIMEOUT_S,
) -> TorController:
    """Connect and authenticate; the caller must ``aclose()`` the controller.

    Raises:
        TorControlError: closed port ("Tor control port 127.0.0.1:N closed"), timeout or
            authentication failure.
    """
    where = f"{host}:{port}"
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise TorControlError(
            f"Tor control port {where} did not accept within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise TorControlError(_describe_connect_error(where, exc)) from exc
    controller = TorController(stream, where, timeout_s)
    try:
        await controller.authenticate(
            password=password, cookie_path=cookie_path, method=auth_method
        )
    except BaseException:
        await controller.aclose()
        raise
    return controller


@asynccontextmanager
async def open_tor_controller(
    host: str,
    port: int,
    *,
    password: str | None = None,
    cookie_path: str | os.PathLike[str] | None = None,
    auth_method: str | None = None,
    timeout_s: float = CONTROL_TIMEOUT_S,
) -> AsyncIterator[TorController]:
    """``async with`` form of :func:`connect_tor_controller` (closes on exit)."""
    controller = await connect_tor_controller(
        host,
        port,
        password=password,
        cookie_path=cookie_path,
        auth_method=auth_method,
        timeout_s=timeout_s,
    )
    try:
        yield controller
    finally:
        await controller.aclose()


@dataclass(frozen=True, slots=True)
class OnionService:
    """A published onion service; alive while its :func:`open_onion_service` block runs."""

    key: OnionKey
    address: str
    ports: tuple[tuple[int, str], ...]
    controller: TorController

    @property
    def service_id(self) -> str:
        """The address without ``.onion``."""
        return self.key.service_id


@asynccontextmanager
async def open_onion_service(
    host: str,
    port: int,
    key: OnionKey,
    ports: list[tuple[int, str]],
    *,
    password: str | None = None,
    cookie_path: str | os.PathLike[str] | None = None,
    publish_timeout_s: float | None = PUBLISH_TIMEOUT_S,
    timeout_s: float = CONTROL_TIMEOUT_S,
) -> AsyncIterator[OnionService]:
    """Publish ``key``'s onion service on the Tor at ``host:port`` for the ``async with`` block.

    The service is tied to its own control connection (no Detach): it disappears when the
    block ends, when the process dies, or when Tor restarts (re-enter the block then; the
    address stays the same because the key does). With ``publish_timeout_s`` the block is
    entered only after the first descriptor upload (``HS_DESC UPLOADED``), so friends can
    reach it within seconds; ``None`` skips the wait.

    Raises:
        TorControlError: control port closed, auth refused, ADD_ONION refused, or not
            published within ``publish_timeout_s``.
    """
    async with open_tor_controller(
        host, port, password=password, cookie_path=cookie_path, timeout_s=timeout_s
    ) as ctl:
        if publish_timeout_s is not None:
            await ctl.set_events("HS_DESC")
        result = await ctl.add_onion(key, ports)
        if publish_timeout_s is not None:
            await ctl.wait_hs_desc_uploaded(result.service_id, timeout_s=publish_timeout_s)
            await ctl.set_events()
        yield OnionService(key, result.address, tuple(ports), ctl)
