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

Friends' onion relays as paths (issue 10 part 2). A friend's ``.onion`` comes from its 0xB4
announcement or from ``tor.friends``; the node then keeps a relay connection through Tor to that
onion service (our TCP relay protocol, the friend's long-term key as the relay key), so the
friend, which is a client of its own relay, is reachable there. Such private relays sit in the
node's relay pool under a placeholder address (:func:`private_relay_addr`, 240.0.0.0/4, never
routable) that :meth:`TorNode.open_relay_stream` maps to its opener. They are added when the
friend has been offline for :data:`ONION_FALLBACK_AFTER_S` (other paths failed), at once in
Tor-only mode.

Tor-only mode (``tor.only``): no bootstrap node, no DHT, no public relay (the opener refuses
anything but the private relays); the node's DHT key is its long-term key, so a friend is fully
described by its Tox ID plus its .onion: both sides meet on each other's onion relays.

Relay streams use the SOCKS username ``tunnel-<random>`` (``isolate: true``) so Tor keeps them
on circuits of their own (IsolateSOCKSAuth). Relay addresses are IP literals, resolved by us
before they reach Tor: no DNS leaks. The node never opens a UDP socket in this mode (its
``udp_port`` stays ``None``) and never listens on TCP.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from tunnel.crypto import Rng
from tunnel.errors import ConfigError
from tunnel.io.proxy import ProxyConfig
from tunnel.io.tor_onion import FriendOnions, tune_tor_stream
from tunnel.node import Node
from tunnel.node_types import FriendConnected, FriendDisconnected, NodeOptions
from tunnel.profile import Profile
from tunnel.tor.check import (
    SOCKS_PROBE_TIMEOUT_S,
    TorCheckResult,
    TorEndpoints,
    check_tor,
    open_onion_stream,
    open_tor_stream,
)
from tunnel.tor.config import TorConfig
from tunnel.tor.control import CONTROL_TIMEOUT_S
from tunnel.tor.errors import TorError
from tunnel.tor.friend_onions import (
    FriendOnionMap,
    friend_onions_path,
    load_friend_onions,
    save_friend_onions,
)

log = logging.getLogger("tunnel.tor")

ISOLATION_PASSWORD = "tunnel"
"""SOCKS password paired with the isolation username (Tor ignores its value)."""
RELAY_WAITING_STATE = "waiting"
ONION_FALLBACK_AFTER_S = 20.0
"""A friend offline this long (since start or since it went offline) gets its onion relay used."""
ONION_ATTEMPT_TIMEOUT_S = 9.0
"""One SOCKS attempt to a friend's onion (the relay pool bounds a whole connect to 10 s and
retries with back-off)."""
PRIVATE_RELAY_NET = 240
PRIVATE_RELAY_PORT = 1

StreamOpener = Callable[[], Awaitable[trio.abc.Stream]]


def private_relay_addr(public_key: bytes) -> tuple[str, int]:
    """The placeholder address of a private relay in the relay pool: ``240.a.b.c:1`` from the
    relay's key (reserved, never routable: a node that is told it cannot connect anywhere)."""
    return f"{PRIVATE_RELAY_NET}.{public_key[0]}.{public_key[1]}.{public_key[2]}", (
        PRIVATE_RELAY_PORT
    )


def is_private_relay_host(host: str) -> bool:
    """True for a placeholder address (:func:`private_relay_addr`)."""
    return host.startswith(f"{PRIVATE_RELAY_NET}.")


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
    options = dataclasses.replace(
        options, udp_enabled=False, lan_discovery=False, hole_punching=False, proxy=proxy
    )
    if tor.only:
        options = dataclasses.replace(options, bootstrap=(), tcp_relays=())
    return options


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
        self.private_relays: dict[tuple[str, int], StreamOpener] = {}
        """Placeholder address -> opener (our own onion relay, friends' onion relays)."""
        self._onions_file = friend_onions_path(profile.path)
        stored: FriendOnionMap = {}
        if self._onions_file is not None:
            stored, problem = load_friend_onions(self._onions_file)
            if problem is not None:
                log.warning("%s", problem)
        self.friend_onions: FriendOnionMap = {
            **stored,
            **{f.public_key: (f.onion, f.port) for f in tor.friends},
        }
        """Friend's long-term key -> its onion relay (remembered announcements, then config;
        new announcements replace them and are saved next to the profile)."""
        self.friend_relays_used: set[bytes] = set()
        self.refused_streams = 0
        self._offline_since: dict[bytes, float] = {}
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

    async def open_relay_stream(self, host: str, port: int) -> trio.abc.Stream:
        """A relay stream through Tor (the node's relay pool calls this in Tor mode).

        The socket's send buffer is kept small (:func:`~tunnel.io.tor_onion.tune_tor_stream`),
        so the relay's pings and pongs do not wait behind seconds of queued data.

        Private relays (placeholder addresses) use their own opener; other addresses are
        refused in Tor-only mode.

        Raises:
            OSError: Tor could not open the stream (the message says why).
        """
        private = self.private_relays.get((host, port))
        if private is not None:
            return await private()
        if is_private_relay_host(host) or self.tor.only:
            self.refused_streams += 1
            raise OSError(f"no route to relay {host}:{port} (Tor-only mode: friends' onions only)")
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
        return tune_tor_stream(stream)

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
        dht_keys = self.profile.key_pair if self.tor.only else None
        node = Node(self.profile, self.options, rng=self._rng, dht_keys=dht_keys)
        node.relays.opener = self.open_relay_stream
        self.node = node
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(self._run_node, node, nursery.cancel_scope))
            self._add_config_friends(node)
            nursery.start_soon(self._watch, node)
            nursery.start_soon(self._use_friend_onions, node)
            if self.tor.onion_service:
                self.onions = FriendOnions(
                    node, self.endpoints, self._onion_key_path(), self.tor.onion_port
                )
                self.onions.on_relay_ready = self._own_relay_ready
                self.onions.on_friend_onion = self._friend_onion_announced
                nursery.start_soon(self._run_onions, self.onions)
            task_status.started(node)

    # ------------------------------------------------------------------ onion relay paths

    def add_private_relay(self, public_key: bytes, opener: StreamOpener) -> None:
        """Keep a relay connection to the relay with ``public_key``, opened by ``opener``."""
        host, port = private_relay_addr(public_key)
        self.private_relays[(host, port)] = opener
        if self.node is not None:
            self.node.relays.add_relay(host, port, public_key)

    def _own_relay_ready(self, onions: FriendOnions) -> None:
        self.add_private_relay(onions.node.public_key, onions.open_local_stream)

    def _friend_onion_announced(self, public_key: bytes, address: str, port: int) -> None:
        if self.friend_onions.get(public_key) == (address, port):
            return
        self.friend_onions[public_key] = (address, port)
        if self._onions_file is not None:
            try:
                save_friend_onions(self._onions_file, self.friend_onions)
            except OSError as exc:
                log.warning(
                    "cannot save friends' onion addresses to %s: %s", self._onions_file, exc
                )

    def use_friend_onion(self, public_key: bytes) -> bool:
        """Add the friend's onion relay (known address) to the relay pool now."""
        target = self.friend_onions.get(public_key)
        if target is None or public_key in self.friend_relays_used:
            return False
        address, port = target
        isolation = f"{self._isolation or 'tunnel'}-{address[:16]}"

        async def open_friend_onion() -> trio.abc.Stream:
            try:
                stream = await open_onion_stream(
                    self.endpoints.socks_host,
                    self.endpoints.socks_port,
                    address,
                    port,
                    timeout_s=ONION_ATTEMPT_TIMEOUT_S,
                    attempt_timeout_s=ONION_ATTEMPT_TIMEOUT_S,
                    isolation=isolation,
                )
            except TorError as exc:
                raise OSError(str(exc)) from exc
            return tune_tor_stream(stream)

        self.friend_relays_used.add(public_key)
        self.add_private_relay(public_key, open_friend_onion)
        log.info("using friend %s's onion relay %s:%d", public_key.hex()[:16], address, port)
        return True

    def _add_config_friends(self, node: Node) -> None:
        """``tor.friends``: befriend them (both sides list each other: no request needed);
        Tor-only: their DHT key is their long-term key."""
        for friend in self.tor.friends:
            if not node.is_friend(friend.public_key):
                node.add_friend_norequest(friend.public_key)
            if self.tor.only:
                node.set_friend_dht_key(friend.public_key, friend.public_key)

    async def _use_friend_onions(self, node: Node) -> None:
        """Use a friend's onion relay once the friend has been offline for
        :data:`ONION_FALLBACK_AFTER_S` (at once in Tor-only mode)."""
        events = node.subscribe()
        start = trio.current_time()
        for pk in node.friends():
            self._offline_since[pk] = start
        wait_s = 0.0 if self.tor.only else ONION_FALLBACK_AFTER_S
        with events:
            while True:
                now = trio.current_time()
                for pk in node.friends():
                    if node.is_online(pk):
                        self._offline_since.pop(pk, None)
                        continue
                    since = self._offline_since.setdefault(pk, now)
                    if now - since >= wait_s:
                        self.use_friend_onion(pk)
                with trio.move_on_after(min(self.tor.check_interval_s, ONION_FALLBACK_AFTER_S)):
                    try:
                        event = await events.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return  # the node stopped
                    if isinstance(event, FriendDisconnected):
                        self._offline_since[event.public_key] = trio.current_time()
                    elif isinstance(event, FriendConnected):
                        self._offline_since.pop(event.public_key, None)

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


__all__ = [
    "ONION_FALLBACK_AFTER_S",
    "TorNode",
    "TorStatus",
    "is_private_relay_host",
    "private_relay_addr",
    "tor_node_options",
]
