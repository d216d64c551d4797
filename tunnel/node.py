"""The Node: one Tox identity on the network, every layer wired together on Trio.

tox-protocol.md sections 3-8 as one running program (c-toxcore's ``Messenger`` +
``friend_connection`` + ``onion_client`` + ``TCP_connection`` + ``DHT`` + ``net_crypto``).

Wiring. One UDP socket (unless UDP is off) carries a :class:`~tunnel.io.udp.PacketDispatcher`:
DHT kinds go to :class:`~tunnel.dht.core.DhtCore`, onion kinds to an
:class:`~tunnel.onion.stack.OnionStack` (relay + announce store + client), net_crypto kinds to
the :class:`~tunnel.friends.messenger.Messenger`. A :class:`~tunnel.io.tcp_relay.RelayPoolDriver`
keeps connections to the bootstrap nodes' TCP ports and the configured relays (through the
proxy, if any; then UDP is off). After every timer, every batch of received datagrams and
every other input the node runs its glue (:meth:`Node._process`), which moves information
between layers:

* DHT ``FriendIpFound``   -> friend_connection learns the friend's direct UDP address;
* DHT request 0x9c        -> onion client (a friend's DHT-PK announcement via the DHT);
* onion ``FriendDhtKeyLearned`` -> DHT friend + relay peer for that key, friend_connection
  connects; TCP relays in the announcement are added to the pool;
* onion ``FriendRequestReceived`` -> :class:`FriendRequest` event (unless already a friend);
* onion DHT-PK data for the DHT -> routed DHT requests; onion-over-TCP requests -> relays;
* relay events (routed data, OOB, onion responses) -> net_crypto / onion client;
* net_crypto TCP packets -> relays; Messenger events -> node events, onion online state and
  the profile (friends are saved at once, atomically).

The public API is async where it may wait (``send_lossless`` waits for send capacity and never
drops) and plain otherwise. Events go to every :meth:`Node.subscribe` channel. ``aclose``
sends net_crypto kill packets, saves the profile and stops within ``GRACEFUL_SHUTDOWN_S``.

Create the node inside ``trio.run`` (the cores read the Trio clock).
"""

from __future__ import annotations

import logging
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import trio

from tunnel.config import NodeConfig
from tunnel.crypto import KeyPair, Rng
from tunnel.dht.core import PACKET_KINDS as DHT_PACKET_KINDS
from tunnel.dht.core import DhtCore
from tunnel.errors import ConfigError
from tunnel.friends import messenger as m
from tunnel.io.node_bootstrap import NodeBootstrap
from tunnel.io.node_glue import NodeGlue
from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.io.udp import BoundSocket, PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.nat.manager import DirectPaths
from tunnel.nat.wire import PROBE_KIND
from tunnel.netcrypto.core import NetCrypto
from tunnel.netcrypto.session import NotConnected, SendQueueFull
from tunnel.node_stats import node_statistics
from tunnel.node_types import (
    GRACEFUL_SHUTDOWN_S,
    NodeEvent,
    NodeOptions,
    NodeStatistics,
)
from tunnel.onion.announce_store import OnionAnnounceStore
from tunnel.onion.client import (
    OnionClient,
    OnionHooks,
)
from tunnel.onion.relay import OnionRelay
from tunnel.onion.stack import ONION_PACKET_KINDS, OnionStack
from tunnel.profile import Profile
from tunnel.tcp_relay.connections import (
    PoolEvent,
)
from tunnel.toxid import ToxId
from tunnel.wire.ip_port import Addr
from tunnel.wire.netcrypto import (
    COOKIE_REQUEST_KIND,
    COOKIE_RESPONSE_KIND,
    DATA_KIND,
    HANDSHAKE_KIND,
    MAX_CRYPTO_DATA_SIZE_BYTES,
)
from tunnel.wire.savedata import (
    FRIEND_STATUS_CONFIRMED,
    FRIEND_STATUS_REQUESTED,
    SavedFriend,
)

__all__ = ["Node", "NodeOptions"]

NETCRYPTO_PACKET_KINDS = (COOKIE_REQUEST_KIND, COOKIE_RESPONSE_KIND, HANDSHAKE_KIND, DATA_KIND)
SHUTDOWN_FLUSH_S = 0.05
"""How long :meth:`Node.aclose` lets the UDP and relay drivers send the kill packets."""
SHUTDOWN_RELAY_DRAIN_S = 1.0
"""At most this long more for relay streams that still have queued output (kill packets)."""

log = logging.getLogger("tunnel.node")
_T = TypeVar("_T")


def load_or_create_profile(path: pathlib.Path, rng: Rng = os.urandom) -> Profile:
    """The profile at ``path``, created (mode 0600) if it does not exist yet.

    Raises:
        ConfigError: unreadable or corrupt profile.
    """
    if not path.exists() and not path.is_symlink():
        profile = Profile.create(path, rng)
        log.info("created new identity at %s", path)
        return profile
    return Profile.load(path)


class NodeClosed(RuntimeError):
    """The node is shut down (or not running yet)."""


class _Core:
    """The dispatcher as one DatagramCore that runs the node's glue after every timer and
    once after every batch of received datagrams (:meth:`after_batch`)."""

    def __init__(self, node: Node, dispatcher: PacketDispatcher) -> None:
        self._node = node
        self._dispatcher = dispatcher
        self._received = False

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self._dispatcher.receive(data, addr, now)
        self._received = True

    def receive_many(self, items: list[tuple[bytes, Addr]], now: float) -> None:
        if items:
            self._dispatcher.receive_many(items, now)
            self._received = True

    def after_batch(self) -> None:
        """The UDP driver's hook: one glue round for a whole batch of datagrams."""
        if self._received:
            self._received = False
            self._node._process(trio.current_time())

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out = self._dispatcher.datagrams_to_send()
        if not self._node.options.use_udp:
            self._node.udp_discarded += len(out)
            return []
        return out

    def next_deadline(self) -> float | None:
        return self._dispatcher.next_deadline()

    def handle_timer(self, now: float) -> None:
        self._dispatcher.handle_timer(now)
        self._node._process(now)


class Node(NodeGlue, NodeBootstrap):
    """One Tox identity on the network (see the module docstring).

    Args:
        profile: keys, nospam and friends; saved whenever friends change if it has a path.
        options: network options (:meth:`NodeOptions.from_config` for a config file).
        rng: randomness (``os.urandom``).
    """

    def __init__(
        self,
        profile: Profile,
        options: NodeOptions | None = None,
        *,
        rng: Rng = os.urandom,
        dht_keys: KeyPair | None = None,
    ) -> None:
        self.profile = profile
        self.options = options or NodeOptions()
        self._rng = rng
        now = trio.current_time()
        self.real_keys = profile.key_pair
        # dht_keys: Tor-only mode (tunnel.io.tor_node) uses the long-term keys, so friends
        # who know only our Tox ID can route to us on their private relays (no DHT, no onion)
        self.dht_keys = dht_keys if dht_keys is not None else KeyPair.generate(rng)
        opts = self.options
        self.dht = DhtCore(
            self.dht_keys,
            rng,
            lan_discovery=opts.lan_discovery and opts.use_udp,
            lan_discovery_ipv6=opts.ipv6,
            hole_punching=opts.hole_punching,
            now=now,
        )
        hooks = OnionHooks(
            random_dht_nodes=self._random_dht_nodes,
            dht_connected=self._dht_connected,
            onion_tcp_relays=self._onion_tcp_relays,
            dhtpk_nodes=self._dhtpk_nodes,
        )
        self.onion = OnionClient(
            self.real_keys,
            self.dht_keys,
            rng,
            now,
            hooks=hooks,
            nospam=profile.nospam,
            unix_time_offset=time.time() - now,
        )
        relay = OnionRelay(self.dht_keys, rng, now) if opts.use_udp else None
        store = (
            OnionAnnounceStore(
                self.dht_keys,
                rng,
                lambda pk, n: self.dht.get_close_nodes(pk, n, True, trio.current_time()),
            )
            if opts.use_udp
            else None
        )
        self.onion_stack = OnionStack(relay, store, self.onion)
        self.netcrypto = NetCrypto(self.real_keys, self.dht_keys, rng)
        self.messenger = m.Messenger(self.netcrypto, name=profile.savedata.name or opts.name)
        self.messenger.batched_receive = True  # the glue drains it after every batch
        dispatcher = PacketDispatcher()
        dispatcher.register(DHT_PACKET_KINDS, self.dht)
        dispatcher.register(ONION_PACKET_KINDS, self.onion_stack)
        dispatcher.register(NETCRYPTO_PACKET_KINDS, self.messenger)
        self.direct_paths = DirectPaths(  # issue 11: node_glue
            rng, now, probing=opts.use_udp, large_lossless=opts.large_lossless_bytes
        )
        dispatcher.register((PROBE_KIND,), self.direct_paths)
        self._core = _Core(self, dispatcher)
        self.relays = RelayPoolDriver(
            self.dht_keys, rng=rng, proxy=opts.proxy, on_event=self._on_relay_event
        )
        self.netcrypto.tcp_enabled = True
        self.udp: UdpDriver | None = None
        self._bound: BoundSocket | None = None
        self._subscribers: list[trio.MemorySendChannel[NodeEvent]] = []
        self._relay_events: list[PoolEvent] = []
        self._processing = False
        self._changed = trio.Event()
        self._wakeup = trio.Event()
        self._friend_dht: dict[bytes, bytes] = {}  # real pk -> DHT pk
        self._by_dht: dict[bytes, bytes] = {}  # DHT pk -> real pk
        self._pending_requests: dict[bytes, bytes] = {}  # real pk -> message
        self._friend_relays: dict[bytes, None] = {}
        self._fast_lossless_ids: frozenset[int] = frozenset()
        self._cancel: trio.CancelScope | None = None
        self._running = False
        self._closing = False
        self._stopped = trio.Event()
        self.udp_discarded = 0
        self.tcp_send_failures = 0
        self.glue_errors = 0
        self._load_friends(now)

    @classmethod
    def from_config(
        cls, config: NodeConfig, profile: Profile | None = None, *, rng: Rng = os.urandom
    ) -> Node:
        """A node as a ``role: node`` config describes it (profile loaded or created)."""
        if profile is None:
            profile = load_or_create_profile(config.profile, rng)
        return cls(profile, NodeOptions.from_config(config), rng=rng)

    # ======================================================================= properties

    @property
    def tox_id(self) -> ToxId:
        """Our Tox ID (public key, current nospam, checksum)."""
        return self.onion.tox_id

    @property
    def public_key(self) -> bytes:
        """Our long-term public key."""
        return self.real_keys.public_key

    @property
    def dht_public_key(self) -> bytes:
        """Our DHT key for this session."""
        return self.dht_keys.public_key

    @property
    def udp_port(self) -> int | None:
        """The bound UDP port (None with UDP off or before :meth:`run`)."""
        return self._bound.port if self._bound is not None else None

    @property
    def onion_connected(self) -> bool:
        """Announced on the onion: friends can find us."""
        return self.onion.connected

    # ======================================================================= running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every layer until cancelled or :meth:`aclose`; ``started()`` once listening."""
        if self._running or self._closing:
            raise RuntimeError("a Node runs once")
        self._running = True
        opts = self.options
        if opts.use_udp:
            try:
                self._bound = await open_udp_socket(
                    opts.udp_host, opts.port_start, opts.port_end, ipv6=opts.ipv6
                )
            except OSError as exc:
                self._running = False
                raise ConfigError(
                    f"udp: cannot bind a port in {opts.port_start}..{opts.port_end}:"
                    f" {exc.strerror or exc}"
                ) from exc
        try:
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    if self._bound is not None:
                        self.udp = UdpDriver(self._core, self._bound, self._core.after_batch)
                        await nursery.start(self.udp.run)
                    else:
                        nursery.start_soon(self._timer_loop)
                    await nursery.start(self.relays.run)
                    await self._bootstrap()
                    log.info("node %s listening (UDP port %s)", self.tox_id, self.udp_port)
                    self._kick()
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._running = False
            if self._bound is not None:
                self._bound.close()
            for channel in self._subscribers:
                channel.close()
            self._stopped.set()

    async def aclose(self, timeout_s: float = GRACEFUL_SHUTDOWN_S) -> None:
        """Say goodbye to friends (net_crypto kill), save the profile, stop :meth:`run`."""
        if self._closing:
            with trio.move_on_after(timeout_s):
                await self._stopped.wait()
            return
        self._closing = True
        now = trio.current_time()
        for pk in self.friends():
            if self.is_online(pk):
                self._touch_friend(pk)
        sessions = len(self.netcrypto.sessions)
        # Forget every friend in the messenger (the profile keeps them): that kills each
        # session with a kill packet AND stops friend_connection from reconnecting in the
        # moments before we stop, which would leave the friend with a dead session.
        for pk in self.friends():
            number = self.messenger.friend_number(pk)
            if number is not None:
                self.messenger.delete_friend(number, now)
        for pk in list(self.netcrypto.sessions):
            self.netcrypto.kill(pk, now)
        self._process(now)
        log.debug("shutting down: %d session(s) killed", sessions)
        with trio.move_on_after(timeout_s):
            if self.udp is not None or self.relays.pool.connected_relays():
                await trio.sleep(SHUTDOWN_FLUSH_S)  # let the drivers send the kill packets
            # a relay stream under load may need longer: its writer is paced
            await self.relays.drain(SHUTDOWN_RELAY_DRAIN_S)
        self._remember_network()
        self._save()
        if self._cancel is not None:
            self._cancel.cancel()
        if self._running:
            with trio.move_on_after(timeout_s):
                await self._stopped.wait()

    async def _timer_loop(self) -> None:
        """Timers only (UDP off): the same core, no socket."""
        core = self._core
        while True:
            now = trio.current_time()
            core.datagrams_to_send()
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._wakeup.wait()
            self._wakeup = trio.Event()

    # ======================================================================= public API

    def subscribe(self) -> trio.MemoryReceiveChannel[NodeEvent]:
        """A new channel receiving every event from now on (closed when the node stops).

        The buffer is unbounded: read it, or close it when done.
        """
        send, receive = trio.open_memory_channel[NodeEvent](math.inf)
        self._subscribers.append(send)
        return receive

    def set_friend_dht_key(self, public_key: bytes, dht_public_key: bytes) -> None:
        """Use ``dht_public_key`` for a friend now (learned out of band, e.g. a Tor-only
        friend's DHT key is its long-term key): relay routing and net_crypto follow."""
        if not self.is_friend(public_key):
            raise ValueError("not a friend")
        self._set_friend_dht(public_key, dht_public_key, trio.current_time())
        self._kick()

    def friends(self) -> list[bytes]:
        """Real public keys of our friends (confirmed and requested)."""
        return [f.public_key for f in self.profile.friends]

    def add_friend(self, tox_id: ToxId | str | bytes, message: bytes) -> bytes:
        """Send a friend request (resent until the friend comes online); returns its public key.

        Raises:
            ValueError: bad Tox ID, our own ID, empty or over-long message, already a friend.
        """
        if isinstance(tox_id, str):
            tox_id = ToxId.parse(tox_id)
        elif isinstance(tox_id, bytes):
            tox_id = ToxId.from_bytes(tox_id)
        pk = tox_id.public_key
        if self.is_friend(pk):
            raise ValueError("already a friend")
        self.onion.send_friend_request(tox_id, message)
        self._add_friend_record(pk, trio.current_time())
        self._store_friend(
            SavedFriend(FRIEND_STATUS_REQUESTED, pk, request_message=message, nospam=tox_id.nospam)
        )
        self._kick()
        return pk

    def add_friend_norequest(self, public_key: bytes) -> None:
        """Add a friend by key without a request (both sides must add each other)."""
        if self.is_friend(public_key):
            return
        if public_key == self.public_key:
            raise ValueError("that is our own key")
        self.onion.accept_friend_request(public_key)
        self._add_friend_record(public_key, trio.current_time())
        self._store_friend(SavedFriend(FRIEND_STATUS_CONFIRMED, public_key))
        self._kick()

    def accept_friend_request(self, public_key: bytes) -> None:
        """Accept a :class:`FriendRequest` (the friend connection follows)."""
        self._pending_requests.pop(public_key, None)
        self.add_friend_norequest(public_key)

    def pending_friend_requests(self) -> dict[bytes, bytes]:
        """Requests received and not accepted yet: public key -> message."""
        return dict(self._pending_requests)

    def remove_friend(self, public_key: bytes) -> None:
        """Forget a friend (its session is killed)."""
        now = trio.current_time()
        number = self.messenger.friend_number(public_key)
        if number is not None:
            self.messenger.delete_friend(number, now)
        self.onion.remove_friend(public_key)
        self._drop_friend_dht(public_key)
        self.profile.update(
            friends=tuple(f for f in self.profile.friends if f.public_key != public_key)
        )
        self._save()
        self._process(now)

    def set_nospam(self, nospam: bytes) -> None:
        """Change our nospam (old Tox IDs stop working for new friend requests); saved."""
        self.profile.set_nospam(nospam)
        self.onion.set_nospam(nospam)
        self._save()

    def set_name(self, name: bytes) -> None:
        """Our name (at most 128 bytes), sent to friends and saved in the profile."""
        self.messenger.set_name(name, trio.current_time())
        self.profile.update(name=name)
        self._save()
        self._kick()

    def send_message(self, public_key: bytes, text: bytes, *, action: bool = False) -> int:
        """Send a text message; returns its id (a :class:`ReadReceipt` follows on delivery).

        Raises:
            NotConnected: the friend is not online.  KeyError: not a friend.
        """
        message_id = self.messenger.send_message(
            self._number(public_key), text, trio.current_time(), action=action
        )
        self._kick()
        return message_id

    def lossless_limit(self, public_key: bytes) -> int:
        """The size to build custom lossless packets for the friend up to now: 1373 bytes, or
        the large limit agreed with a ``tunnel`` friend over a direct path proven to carry it
        (issue 8). Packets built to it are never refused if the path changes meanwhile."""
        session = self.netcrypto.sessions.get(public_key)
        return MAX_CRYPTO_DATA_SIZE_BYTES if session is None else session.lossless_payload_now

    def send_capacity(self, public_key: bytes) -> int:
        """Custom lossless packets that can be queued now without waiting (0: offline/full)."""
        number = self.messenger.friend_number(public_key)
        return 0 if number is None else self.messenger.send_capacity(number)

    def try_send_lossless(self, public_key: bytes, data: bytes, *, flush: bool = True) -> bool:
        """Queue a custom lossless packet if there is room (False: full, nothing queued).

        ``flush=False`` leaves handing it to the network to a later :meth:`flush` (one glue
        round for a burst of packets instead of one per packet).

        Raises:
            NotConnected: the friend is not online.  ValueError: bad packet id or size.
        """
        try:
            self.messenger.send_custom_lossless(self._number(public_key), data, trio.current_time())
        except SendQueueFull:
            return False
        if flush:
            self._kick()
        return True

    def try_send_lossless_many(
        self, public_key: bytes, packets: list[bytes], *, flush: bool = True
    ) -> int:
        """Queue custom lossless packets in order while there is room; how many were queued
        (one pass through the layers for a burst; see :meth:`try_send_lossless`).

        Raises:
            NotConnected: the friend is not online.  ValueError: bad packet id or size.
        """
        queued = self.messenger.send_custom_lossless_many(
            self._number(public_key), packets, trio.current_time()
        )
        if flush and queued:
            self._kick()
        return queued

    async def send_lossless(self, public_key: bytes, data: bytes) -> None:
        """Send a custom lossless packet ``[160..191][data]``, waiting while the queue is full.

        Never drops: it returns once the packet is queued for reliable, in-order delivery.

        Raises:
            NotConnected: the friend is (or went) offline.  ValueError: bad id or size.
        """
        while not self.try_send_lossless(public_key, data):
            await self.wait_send_space(public_key)

    async def wait_send_space(self, public_key: bytes) -> None:
        """Return once :meth:`send_capacity` is positive.

        Raises:
            NotConnected: the friend is (or went) offline.  NodeClosed: the node stopped.
        """

        def ready() -> bool:
            if not self.is_online(public_key):
                raise NotConnected("friend is not online")
            return self.send_capacity(public_key) > 0

        await self.wait_for(ready)

    def send_lossy(self, public_key: bytes, data: bytes) -> None:
        """Send a custom lossy packet ``[200..254][data]`` once.

        Raises:
            NotConnected: the friend is not online.  ValueError: bad id or size.
        """
        self.messenger.send_custom_lossy(self._number(public_key), data, trio.current_time())
        self._kick()

    def send_lossy_batch(self, packets: Iterable[tuple[bytes, bytes]]) -> int:
        """Send many custom lossy packets ``(public_key, [200..254][data])`` with one glue round
        (one UDP flush / relay hand-off for the whole batch). Packets to friends that are not
        online, or malformed ones, are skipped. Returns how many were sent.
        """
        messenger = self.messenger
        now = trio.current_time()
        numbers: dict[bytes, int | None] = {}
        sent = 0
        for public_key, data in packets:
            if public_key not in numbers:
                numbers[public_key] = messenger.friend_number(public_key)
            number = numbers[public_key]
            if number is None:
                continue
            try:
                messenger.send_custom_lossy(number, data, now)
            except (NotConnected, ValueError):
                continue
            sent += 1
        if sent:
            self._kick()
        return sent

    def flush(self) -> None:
        """Run one glue round now: after calling :attr:`messenger` methods directly, this hands
        their output to the UDP socket and the TCP relays."""
        self._kick()

    async def wait_for(self, predicate: Callable[[], _T | None]) -> _T:
        """Wait until ``predicate()`` returns something truthy (checked after every change).

        Raises:
            NotConnected: raised by the predicate, e.g. a friend went offline.
        """
        while True:
            value = predicate()
            if value:
                return value
            if self._stopped.is_set():
                raise NodeClosed("node stopped")
            await self._changed.wait()

    def statistics(self) -> NodeStatistics:
        """A snapshot of the node and every friend (path, RTT, rates)."""
        return node_statistics(self, trio.current_time())


__all__ += ["NodeClosed", "NotConnected"]
