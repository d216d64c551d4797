"""Friends as onion services (issue 10 part 2, first half): a Tor-mode node publishes an
ephemeral v3 onion service that speaks our TCP relay protocol, and tells its friends the address
over the friend connection (lossless custom packet 0xB4, :mod:`tunnel.tor.announce`).

* The relay runs on 127.0.0.1 (ephemeral port) with the node's **long-term** key pair as its
  identity, so a friend who knows only our Tox ID can complete the relay handshake.
* The onion key persists (``tor.onion_key``), so the address is stable across restarts.
  The service lives as long as its control connection: when Tor stops or restarts, it is
  published again (every ``REPUBLISH_RETRY_S`` until Tor takes it) with the same address.
* Each friend that comes online gets our announcement; announcements from friends are kept in
  :attr:`FriendOnions.friend_onions` (withdrawals remove them, queries are answered). Malformed
  0xB4 packets are counted in :attr:`FriendOnions.bad_packets` and dropped.

* The relay serves the node's own friends only (``admit``, :attr:`RelayServer.admit`): routing
  requests that involve any other key are refused, OOB and onion packets of strangers dropped.
* The node itself is a client of its own relay over an in-process memory stream
  (:meth:`FriendOnions.open_local_stream`), so a friend that reaches the relay through Tor
  meets the node there; :class:`~tunnel.io.tor_node.TorNode` adds it to the node's relay pool
  and uses the friends' addresses (:attr:`FriendOnions.on_friend_onion`) as relay paths.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from tunnel.errors import BadPacket
from tunnel.io.quickack import QuickAckStream
from tunnel.io.tcp_relay import TcpRelayServer, serve_tcp_relay
from tunnel.netcrypto.session import NotConnected
from tunnel.node import Node
from tunnel.node_types import FriendConnected, LosslessPacket, NodeEvent
from tunnel.tor.announce import (
    TOR_ONION_PACKET_ID,
    OnionAddressAnnouncement,
    OnionQuery,
    OnionWithdraw,
    decode_onion_message_untrusted,
)
from tunnel.tor.check import TorEndpoints
from tunnel.tor.control import open_onion_service
from tunnel.tor.errors import TorError
from tunnel.tor.keystore import load_or_create_onion_key

log = logging.getLogger("tunnel.tor")

LOCALHOST = "127.0.0.1"
TOR_SEND_BUFFER_BYTES = 256 * 1024
"""SO_SNDBUF of relay streams to and from Tor (Linux doubles it)."""
TOR_NOTSENT_LOWAT_BYTES = 128 * 1024
REPUBLISH_RETRY_S = 2.0
"""Pause between attempts to publish the onion service again after Tor went away."""


def tune_tor_stream(stream: trio.SocketStream) -> QuickAckStream:
    """Small send buffers on a relay stream to or from Tor: Tor reads only as fast as its
    circuit window allows, so a default (megabytes on loopback) buffer would hold many seconds
    of data ahead of the relay's pings and pongs, and the other end would drop the connection
    on its 10 s ping timeout. Small buffers leave the queue in the relay outbox, where control
    packets go first. Reads are acknowledged at once (:mod:`tunnel.io.quickack`)."""
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TOR_SEND_BUFFER_BYTES)
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, TOR_NOTSENT_LOWAT_BYTES)
    return QuickAckStream(stream)


class FriendOnions:
    """Publishes our onion relay and keeps the friends' announced addresses."""

    def __init__(
        self, node: Node, endpoints: TorEndpoints, key_path: Path, virtual_port: int
    ) -> None:
        if endpoints.control_host is None or endpoints.control_port is None:
            raise ValueError("onion services need Tor's control port")
        self.node = node
        self.endpoints = endpoints
        self.key_path = key_path
        self.virtual_port = virtual_port
        self.address: str | None = None
        """Our ``<id>.onion`` once published."""
        self.relay: TcpRelayServer | None = None
        self.friend_onions: dict[bytes, tuple[str, int]] = {}
        """Friend's long-term key -> (``.onion`` address, virtual port) they announced."""
        self.announcements_sent = 0
        self.bad_packets = 0
        self.local_streams = 0
        self.publications = 0
        """How many times the service was published (more than 1: Tor came back)."""
        self.published = False
        self.on_relay_ready: Callable[[FriendOnions], None] | None = None
        """Called once the relay serves (before the service is published)."""
        self.on_friend_onion: Callable[[bytes, str, int], None] | None = None
        """Called with (friend's key, ``.onion``, port) for each announcement received."""
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    def admit(self, public_key: bytes) -> bool:
        """The relay's filter: our own keys, our friends' long-term and known DHT keys."""
        node = self.node
        if public_key in (node.public_key, node.dht_public_key) or node.is_friend(public_key):
            return True
        return any(node.friend_dht_public_key(pk) == public_key for pk in node.friends())

    async def open_local_stream(self) -> trio.abc.Stream:
        """A client stream into our own relay, in process (no socket).

        Raises:
            OSError: the relay is not running.
        """
        relay, nursery = self.relay, self._nursery
        if relay is None or nursery is None:
            raise OSError("our onion relay is not running")
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(relay.serve_stream, server)
        self.local_streams += 1
        return client

    async def wait_friend_onion(self, public_key: bytes) -> tuple[str, int]:
        """Return the friend's announced address once known (bound it with ``fail_after``)."""
        while public_key not in self.friend_onions:
            await self._changed.wait()
        return self.friend_onions[public_key]

    def _announcement(self) -> bytes | None:
        if self.address is None:
            return None
        return OnionAddressAnnouncement.from_address(self.address, self.virtual_port).encode()

    def _announce(self, public_key: bytes) -> None:
        packet = self._announcement()
        if packet is None:
            return
        try:
            if self.node.try_send_lossless(public_key, packet):
                self.announcements_sent += 1
        except NotConnected:
            pass

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the relay, publish the onion service, exchange addresses; ``started(address)``.

        Raises:
            TorControlError: the control port refused us or the service was not published.
        """
        events = self.node.subscribe()
        async with trio.open_nursery() as nursery:
            self.relay = await nursery.start(
                lambda task_status: serve_tcp_relay(
                    self.node.real_keys,
                    [0],
                    host=LOCALHOST,
                    admit=self.admit,
                    task_status=task_status,
                )
            )
            assert self.relay is not None
            self.relay.tune_accepted = tune_tor_stream  # its clients come through Tor
            self._nursery = nursery
            if self.on_relay_ready is not None:
                self.on_relay_ready(self)
            nursery.start_soon(self._handle_events, events, nursery.cancel_scope)
            await self._publish_forever(task_status)

    async def _publish_forever(self, task_status: trio.TaskStatus[str]) -> None:
        """Publish; when the control connection drops (Tor stopped or restarted), publish
        again every :data:`REPUBLISH_RETRY_S` until it works (same key: same address)."""
        assert self.relay is not None
        key = load_or_create_onion_key(self.key_path)
        target = f"{LOCALHOST}:{self.relay.ports[0]}"
        assert self.endpoints.control_host is not None
        assert self.endpoints.control_port is not None
        started = False
        while True:
            try:
                async with open_onion_service(
                    self.endpoints.control_host,
                    self.endpoints.control_port,
                    key,
                    [(self.virtual_port, target)],
                    password=self.endpoints.control_password,
                    cookie_path=self.endpoints.cookie_path,
                ) as service:
                    self.address = service.address
                    self.publications += 1
                    self.published = True
                    log.info("onion relay %s:%d published", service.address, self.virtual_port)
                    for pk in self.node.friends():
                        if self.node.is_online(pk):
                            self._announce(pk)
                    if not started:
                        started = True
                        task_status.started(service.address)
                    while True:  # events are off: this returns only when the connection ends
                        await service.controller.next_event()
            except TorError as exc:
                if not started:
                    raise
                if self.published:
                    log.warning("onion relay unpublished (%s); publishing again", exc)
                self.published = False
            await trio.sleep(REPUBLISH_RETRY_S)

    async def _handle_events(
        self, events: trio.MemoryReceiveChannel[NodeEvent], scope: trio.CancelScope
    ) -> None:
        async for event in events:
            self._on_event(event)
        scope.cancel()  # the node stopped

    def _on_event(self, event: object) -> None:
        if isinstance(event, FriendConnected):
            self._announce(event.public_key)
        elif isinstance(event, LosslessPacket) and event.data[:1] == bytes([TOR_ONION_PACKET_ID]):
            try:
                message = decode_onion_message_untrusted(event.data)
            except BadPacket:
                self.bad_packets += 1
                return
            if isinstance(message, OnionAddressAnnouncement):
                self.friend_onions[event.public_key] = (message.address, message.virtual_port)
                log.info("friend %s announced %s", event.public_key.hex()[:16], message.address)
                if self.on_friend_onion is not None:
                    self.on_friend_onion(event.public_key, message.address, message.virtual_port)
            elif isinstance(message, OnionWithdraw):
                self.friend_onions.pop(event.public_key, None)
            elif isinstance(message, OnionQuery):
                self._announce(event.public_key)
            self._changed.set()
            self._changed = trio.Event()


__all__ = ["FriendOnions"]
