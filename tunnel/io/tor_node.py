"""Tor mode for a :class:`~tunnel.node.Node` (issue 10 part 1): check Tor, then run the node
with UDP off and every TCP relay connection through Tor's SOCKS port, and keep watching Tor.

What the user sees, and within which bound (``TorConfig`` defaults in brackets):

* before the node starts, :func:`~tunnel.tor.check.check_tor`:
  ``Tor SOCKS port 127.0.0.1:9050 closed`` at once (at most ``SOCKS_PROBE_TIMEOUT_S`` = 3 s);
  ``cannot reach the Tor network (bootstrap at 0%: Starting; Tor's DisableNetwork is set)`` at
  once with a control port; ``cannot reach the Tor network (bootstrap at N%: ...)`` after
  ``bootstrap_wait_s`` [30 s] when Tor runs but cannot bootstrap. :meth:`TorNode.startup_bound_s`
  is the worst case. ``run(wait_for_tor=True)`` reports each error once (``on_tor_status``) and
  keeps checking every ``check_interval_s`` [5 s] instead, starting the node when Tor is back;
* while the node runs, the same check every ``check_interval_s``: Tor going away is reported
  within :meth:`TorNode.detect_bound_s` (interval + probe bound); when Tor comes back the relays
  waiting in back-off are retried at once (no 60 s back-off left over), so friends come back
  as soon as Tor carries streams again.

Relay streams use the SOCKS username ``tunnel-<random>`` (``isolate: true``) so Tor keeps them
on circuits of their own (IsolateSOCKSAuth). Relay addresses are IP literals, resolved by us
before they reach Tor: no DNS leaks. The node never opens a UDP socket in this mode (its
``udp_port`` stays ``None``) and never listens on TCP.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from tunnel.crypto import Rng
from tunnel.errors import ConfigError
from tunnel.io.proxy import ProxyConfig
from tunnel.io.tor_onion import FriendOnions
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.tor.check import (
    SOCKS_PROBE_TIMEOUT_S,
    TorCheckResult,
    TorEndpoints,
    check_tor,
    open_tor_stream,
)
from tunnel.tor.config import TorConfig
from tunnel.tor.control import CONTROL_TIMEOUT_S
from tunnel.tor.errors import TorError

log = logging.getLogger("tunnel.tor")

ISOLATION_PASSWORD = "tunnel"
"""SOCKS password paired with the isolation username (Tor ignores its value)."""
RELAY_WAITING_STATE = "waiting"
TOR_SEND_BUFFER_BYTES = 256 * 1024
"""SO_SNDBUF of relay streams to Tor's SOCKS port (Linux doubles it)."""
TOR_NOTSENT_LOWAT_BYTES = 128 * 1024


@dataclass(frozen=True, slots=True)
class TorStatus:
    """Whether Tor is usable right now; ``message`` is one line fit to show users."""

    usable: bool
    message: str
    at: float
    """Trio clock time of the check that found this."""


def tor_node_options(options: NodeOptions, tor: TorConfig, *, rng: Rng = os.urandom) -> NodeOptions:
    """``options`` for Tor mode: UDP and LAN discovery off, Tor's SOCKS port as the proxy.

    Raises:
        ConfigError: bad ``tor.socks`` / ``tor.control``.
    """
    endpoints = tor.endpoints()
    username = f"tunnel-{rng(8).hex()}" if tor.isolate else None
    proxy = ProxyConfig(
        "socks5",
        endpoints.socks_host,
        endpoints.socks_port,
        username,
        ISOLATION_PASSWORD if username is not None else None,
    )
    return dataclasses.replace(
        options, udp_enabled=False, lan_discovery=False, hole_punching=False, proxy=proxy
    )


def _describe_ok(result: TorCheckResult) -> str:
    parts = ["Tor usable"]
    if result.bootstrap is not None:
        parts.append(f"(bootstrap {result.bootstrap.progress}%)")
    if result.tor_version:
        parts.append(f"Tor {result.tor_version}")
    return " ".join(parts)


class TorNode:
    """A :class:`Node` in Tor mode (see the module docstring).

    ``async with trio.open_nursery() as n: node = await n.start(tor_node.run)`` gives the running
    :class:`Node`; ``tor_node.node.aclose()`` (or cancelling) stops both.

    Args:
        profile: the node's identity and friends.
        options: network options; UDP/proxy settings are overridden for Tor mode.
        tor: where Tor is and the bounds to use.
        on_tor_status: called on each change of :attr:`status` (down with the error message,
            up again); also logged.
    """

    def __init__(
        self,
        profile: Profile,
        options: NodeOptions,
        tor: TorConfig,
        *,
        rng: Rng = os.urandom,
        on_tor_status: Callable[[TorStatus], None] | None = None,
    ) -> None:
        self.profile = profile
        self.tor = tor
        self.endpoints: TorEndpoints = tor.endpoints()
        self.options = tor_node_options(options, tor, rng=rng)
        self._rng = rng
        self._on_tor_status = on_tor_status
        self.node: Node | None = None
        self.status: TorStatus | None = None
        self.outages = 0
        """How many times a running node saw Tor become unusable."""
        self.recoveries = 0
        """How many times Tor came back while the node ran."""
        self.relay_retries_forced = 0
        self.relay_streams_opened = 0
        self.onions: FriendOnions | None = None
        """Our onion relay and the friends' addresses (``tor.onion_service``)."""
        self.onion_error: str | None = None
        proxy = self.options.proxy
        self._isolation = proxy.username if proxy is not None else None
        self._changed = trio.Event()

    # ------------------------------------------------------------------ bounds

    def startup_bound_s(self) -> float:
        """Worst case before :meth:`run` (``wait_for_tor=False``) raises a :class:`TorError`."""
        control = CONTROL_TIMEOUT_S if self.endpoints.has_control else 0.0
        return SOCKS_PROBE_TIMEOUT_S + control + self.tor.bootstrap_wait_s

    def detect_bound_s(self) -> float:
        """Worst case from Tor going away to :attr:`status` saying so (node running)."""
        control = CONTROL_TIMEOUT_S if self.endpoints.has_control else 0.0
        return self.tor.check_interval_s + SOCKS_PROBE_TIMEOUT_S + control

    # ------------------------------------------------------------------ status

    def _set_status(self, usable: bool, message: str) -> None:
        previous = self.status
        self.status = TorStatus(usable, message, trio.current_time())
        if previous is not None and previous.usable == usable and previous.message == message:
            return
        if usable:
            log.info("%s", message)
        else:
            log.warning("%s", message)
        if self._on_tor_status is not None:
            self._on_tor_status(self.status)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_status(self, usable: bool) -> TorStatus:
        """Return once :attr:`status` says ``usable`` (bound it with ``trio.fail_after``)."""
        while self.status is None or self.status.usable != usable:
            await self._changed.wait()
        return self.status

    async def check(self, *, bootstrap_wait_s: float | None = None) -> TorCheckResult:
        """One bounded check of Tor (updates :attr:`status`).

        Raises:
            TorError: Tor is not usable (the message says why).
        """
        wait_s = self.tor.bootstrap_wait_s if bootstrap_wait_s is None else bootstrap_wait_s
        try:
            result = await check_tor(self.endpoints, bootstrap_wait_s=wait_s)
        except TorError as exc:
            self._set_status(False, str(exc))
            raise
        self._set_status(True, _describe_ok(result))
        return result

    # ------------------------------------------------------------------ relay streams

    async def open_relay_stream(self, host: str, port: int) -> trio.SocketStream:
        """A relay stream through Tor (the node's relay pool calls this in Tor mode).

        The socket's send buffer is kept small (:data:`TOR_SEND_BUFFER_BYTES`): Tor reads only
        as fast as its circuit window allows, so a default (megabytes on loopback) buffer would
        hold many seconds of data ahead of the relay's ping answers, and the relay would drop
        us after its 10 s ping timeout. Small buffers leave the queue in the relay client's
        outbox, where control packets go first.

        Raises:
            OSError: Tor could not open the stream (the message says why).
        """
        self.relay_streams_opened += 1
        try:
            stream = await open_tor_stream(
                self.endpoints.socks_host,
                self.endpoints.socks_port,
                host,
                port,
                timeout_s=self.tor.connect_timeout_s,
                isolation=self._isolation,
            )
        except TorError as exc:
            raise OSError(str(exc)) from exc
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TOR_SEND_BUFFER_BYTES)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, TOR_NOTSENT_LOWAT_BYTES)
        return stream

    # ------------------------------------------------------------------ running

    async def run(
        self,
        *,
        wait_for_tor: bool = False,
        task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Check Tor, run the node, watch Tor; ``started(node)`` once the node listens.

        Raises:
            TorError: (``wait_for_tor=False``) Tor is not usable, within
                :meth:`startup_bound_s`; the node is not started then.
        """
        while True:
            try:
                await self.check()
                break
            except TorError:
                if not wait_for_tor:
                    raise
            await trio.sleep(self.tor.check_interval_s)
        node = Node(self.profile, self.options, rng=self._rng)
        node.relays.opener = self.open_relay_stream
        self.node = node
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(self._run_node, node, nursery.cancel_scope))
            nursery.start_soon(self._watch, node)
            if self.tor.onion_service:
                self.onions = FriendOnions(
                    node, self.endpoints, self._onion_key_path(), self.tor.onion_port
                )
                nursery.start_soon(self._run_onions, self.onions)
            task_status.started(node)

    def _onion_key_path(self) -> Path:
        if self.tor.onion_key is not None:
            return self.tor.onion_key
        if self.profile.path is None:
            raise ConfigError("tor.onion_key: needed when the profile has no file")
        return Path(self.profile.path).with_suffix(".onion.key")

    async def _run_onions(self, onions: FriendOnions) -> None:
        """The onion service is an extra path: a failure is reported, the node keeps running."""
        try:
            await onions.run()
        except TorError as exc:
            log.warning("onion service not published: %s", exc)
            self.onion_error = str(exc)

    @staticmethod
    async def _run_node(
        node: Node, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        try:
            await node.run(task_status=task_status)
        finally:
            scope.cancel()  # the node stopped (aclose): stop watching Tor too

    async def _watch(self, node: Node) -> None:
        while True:
            await trio.sleep(self.tor.check_interval_s)
            was_usable = self.status is not None and self.status.usable
            try:
                await self.check(bootstrap_wait_s=0.0)
            except TorError:
                if was_usable:
                    self.outages += 1
                continue
            if not was_usable:
                self.recoveries += 1
                self._retry_relays(node)

    def _retry_relays(self, node: Node) -> None:
        """Tor is back: relays in back-off are retried now (re-added with a fresh schedule)."""
        driver = node.relays
        now = trio.current_time()
        for status in driver.pool.relays():
            if status.state != RELAY_WAITING_STATE:
                continue
            pk = status.relay.public_key
            driver.pool.remove_relay(pk)
            driver.pool.add_relay(status.relay.ip_port, pk, now)
            self.relay_retries_forced += 1
        driver.wake()


__all__ = ["TorNode", "TorStatus", "tor_node_options"]
