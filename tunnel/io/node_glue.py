"""The Node's glue between layers and its friend bookkeeping (see :mod:`tunnel.node`).

:class:`NodeGlue` is the half of :class:`tunnel.node.Node` that moves information between the
DHT, the onion client, the TCP relay pool, net_crypto and the Messenger after every input and
timer (``_process``), answers the onion client's hooks, and keeps the profile's friend list in
step. Split out of ``tunnel/node.py`` for size (it lives in ``tunnel/io`` because it runs on
Trio); it is not used on its own.

Direct paths (issue 11, :mod:`tunnel.nat.manager`): friends that answer our extension Hello
get a :class:`~tunnel.nat.probe.DirectPathCore`; the glue feeds it our candidates (interface
addresses found with a connected UDP socket, no packet sent, and the public addresses DHT nodes
report for us, ``ret_ip_self``; while a path is missing we ask two DHT nodes for our own key
every ``SELF_QUERY_INTERVAL_S`` to refresh those reports), carries its messages over the friend
connection, and points the friend's net_crypto session at the direct address when the path
comes up or moves. When it dies, net_crypto falls back to the relay on its own (no UDP heard
for 8 s) and the stream goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import time
from collections.abc import Callable, Hashable, Sequence

import trio

from tunnel.crypto import KeyPair
from tunnel.dht.close_list import BAD_NODE_TIMEOUT_S
from tunnel.dht.core import DhtCore
from tunnel.dht.events import DhtRequestReceived, FriendIpFound
from tunnel.friends import messenger as m
from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.io.udp import BoundSocket, UdpDriver
from tunnel.nat.manager import DirectPaths, local_candidates
from tunnel.nat.probe import DirectPathDown, DirectPathMoved, DirectPathUp
from tunnel.nat.wire import EXTENSION_PACKET_ID, NatBehaviour
from tunnel.netcrypto.core import NetCrypto
from tunnel.node_types import (
    FriendConnected,
    FriendDhtKey,
    FriendDisconnected,
    FriendRequest,
    LosslessPacket,
    LossyPacket,
    Message,
    NodeEvent,
    NodeOptions,
    Path,
    ReadReceipt,
    SelfConnectionChanged,
)
from tunnel.onion.client import (
    FriendDhtKeyLearned,
    FriendRequestReceived,
    OnionClient,
    OnionStatusChanged,
)
from tunnel.profile import Profile
from tunnel.tcp_relay.connections import (
    OnionData,
    OobData,
    PeerData,
    PeerOffline,
    PeerOnline,
    PoolEvent,
    RelayConnected,
    RelayDisconnected,
)
from tunnel.toxid import ToxId
from tunnel.wire.ip_port import Addr
from tunnel.wire.netcrypto import MAX_CRYPTO_DATA_SIZE_BYTES
from tunnel.wire.onion import ONION_DATA_DHTPK
from tunnel.wire.packed_node import PackedNode
from tunnel.wire.savedata import FRIEND_STATUS_CONFIRMED, SavedFriend

MAX_PROCESS_ROUNDS = 1000
MAX_DHTPK_RELAYS = 2
MAX_FRIEND_RELAYS = 8
"""TCP relays learnt from friends' DHT-PK announcements that we connect to, at most."""
DHTPK_NODES = 4
TCP_ONION_REQUEST_ID = 0x08
MAX_SAVED_NAME_BYTES = 128
MAX_PENDING_FRIEND_REQUESTS = 64
"""Unanswered friend requests remembered (oldest forgotten first)."""

LOCAL_REFRESH_S = 1.0
"""How often our direct-path candidates are recomputed (cheap: DHT list scan)."""
LOCAL_IP_REFRESH_S = 10.0
SELF_QUERY_INTERVAL_S = 5.0
SELF_QUERY_NODES = 2
SILENT_PATH_S = 2.5
"""A direct path this quiet (a keepalive went unanswered) starts the self-address queries."""

log = logging.getLogger("tunnel.node")


class NodeGlue:
    """Glue and friend bookkeeping; :class:`tunnel.node.Node` sets every attribute below."""

    profile: Profile
    options: NodeOptions
    dht_keys: KeyPair
    dht: DhtCore
    onion: OnionClient
    netcrypto: NetCrypto
    messenger: m.Messenger
    relays: RelayPoolDriver
    udp: UdpDriver | None
    _bound: BoundSocket | None
    direct_paths: DirectPaths
    tcp_send_failures: int
    glue_errors: int
    _subscribers: list[trio.MemorySendChannel[NodeEvent]]
    _relay_events: list[PoolEvent]
    _processing: bool
    _changed: trio.Event
    _wakeup: trio.Event
    _friend_dht: dict[bytes, bytes]
    _by_dht: dict[bytes, bytes]
    _pending_requests: dict[bytes, bytes]
    _friend_relays: dict[bytes, None]
    _fast_lossless_ids: frozenset[int]
    _direct_receive: Callable[[bytes, bytes, float], None] | None = None
    _direct_done: Callable[[], None] | None = None
    _direct_clear = False
    _direct_pending = False
    direct_lossless = 0
    """Packets handed over by :meth:`set_direct_lossless` (the rest went as events)."""
    # direct-path timers and caches (class defaults; the instance assigns its own)
    _nat_refresh_at: float = -1.0
    _self_query_at: float = -1.0
    _local_addrs_cache: tuple[float, list[Addr]] | None = None

    # ======================================================================= queries
    def is_friend(self, public_key: bytes) -> bool:
        """True if ``public_key`` is in our friend list."""
        return self.messenger.friend_number(public_key) is not None

    def is_online(self, public_key: bytes) -> bool:
        """True if the friend is online (its ONLINE packet arrived)."""
        number = self.messenger.friend_number(public_key)
        return number is not None and self.messenger.friend_state(number) is m.FriendState.ONLINE

    def friend_path(self, public_key: bytes) -> Path | None:
        """``"udp"``/``"tcp"`` while the friend is online, else None."""
        if not self.is_online(public_key):
            return None
        return "udp" if self.netcrypto.is_direct(public_key, trio.current_time()) else "tcp"

    def direct_path_status(self, public_key: bytes) -> str | None:
        """The friend's direct-path line (``direct udp ...`` / ``relay (why)``), None when the
        friend does not speak the extension (a toxcore peer: toxcore's hole punching only)."""
        return self.direct_paths.status(public_key)

    def friend_dht_public_key(self, public_key: bytes) -> bytes | None:
        """The friend's DHT key if we learnt it."""
        return self._friend_dht.get(public_key)

    # ======================================================================= friends

    def _number(self, public_key: bytes) -> int:
        number = self.messenger.friend_number(public_key)
        if number is None:
            raise KeyError("not a friend")
        return number

    def _load_friends(self, now: float) -> None:
        for saved in self.profile.friends:
            if saved.status >= FRIEND_STATUS_CONFIRMED or not saved.request_message:
                self.onion.accept_friend_request(saved.public_key)
            else:
                try:
                    self.onion.send_friend_request(
                        ToxId(saved.public_key, saved.nospam), saved.request_message
                    )
                except ValueError:
                    self.onion.accept_friend_request(saved.public_key)
            self._add_friend_record(saved.public_key, now)
        for pk in self.options.friends:
            if not self.is_friend(pk) and pk != self.profile.public_key:
                self.onion.accept_friend_request(pk)
                self._add_friend_record(pk, now)
                self._store_friend(SavedFriend(FRIEND_STATUS_CONFIRMED, pk), save=False)

    def _add_friend_record(self, public_key: bytes, now: float) -> None:
        self.messenger.add_friend_norequest(public_key, now)

    def _store_friend(self, friend: SavedFriend, *, save: bool = True) -> None:
        others = tuple(f for f in self.profile.friends if f.public_key != friend.public_key)
        self.profile.update(friends=(*others, friend))
        if save:
            self._save()

    def _mark_confirmed(self, public_key: bytes) -> None:
        for saved in self.profile.friends:
            if saved.public_key == public_key:
                if saved.status < FRIEND_STATUS_CONFIRMED:
                    self._store_friend(SavedFriend(FRIEND_STATUS_CONFIRMED, public_key))
                return

    def _touch_friend(self, public_key: bytes) -> None:
        """Record the friend's name and "last seen now" in the profile (not saved yet)."""
        number = self.messenger.friend_number(public_key)
        if number is None:
            return
        name = self.messenger.friend_name(number)[:MAX_SAVED_NAME_BYTES]
        friends = tuple(
            dataclasses.replace(f, name=name or f.name, last_seen=int(time.time()))
            if f.public_key == public_key
            else f
            for f in self.profile.friends
        )
        self.profile.update(friends=friends)

    def _save(self) -> None:
        if self.profile.path is None:
            return
        try:
            self.profile.save()
        except Exception as exc:  # a full disk must not take the node down
            log.error("saving the profile failed: %s", exc)

    def _set_friend_dht(self, real_pk: bytes, dht_pk: bytes, now: float) -> None:
        old = self._friend_dht.get(real_pk)
        if old == dht_pk:
            return
        if old is not None:
            self._drop_friend_dht(real_pk)
        self._friend_dht[real_pk] = dht_pk
        self._by_dht[dht_pk] = real_pk
        self.dht.add_friend(dht_pk, now)
        self.relays.add_peer(dht_pk)
        self.messenger.connections.set_dht_pk(real_pk, dht_pk, now)
        self._emit(FriendDhtKey(real_pk, dht_pk))

    def _drop_friend_dht(self, real_pk: bytes) -> None:
        old = self._friend_dht.pop(real_pk, None)
        if old is None:
            return
        self._by_dht.pop(old, None)
        self.dht.remove_friend(old)
        self.relays.remove_peer(old)

    # ======================================================================= onion hooks

    def _random_dht_nodes(self, count: int) -> Sequence[PackedNode]:
        if not self.options.use_udp:
            return ()
        return self.dht.random_good_nodes(count, trio.current_time())

    def _dht_connected(self) -> bool:
        return self.options.use_udp and self.dht.is_connected(trio.current_time())

    def _onion_tcp_relays(self) -> Sequence[Hashable]:
        return [info.public_key for info in self.relays.pool.connected_relays()]

    def _connected_relay_nodes(self) -> list[PackedNode]:
        """Connected relays a friend could use too (SHARE_RELAYS, DHT-PK announcements).

        Private relays (a friend's onion relay, our own, reached by a custom opener) sit in
        the pool under reserved placeholder addresses (240.0.0.0/4): useless to anyone else,
        so they are never shared.
        """
        return [
            PackedNode(info.ip_port, info.public_key, tcp=True)
            for info in self.relays.pool.connected_relays()
            if not info.ip_port.ip.is_reserved
        ]

    def _dhtpk_nodes(self) -> Sequence[PackedNode]:
        nodes = self._connected_relay_nodes()[:MAX_DHTPK_RELAYS]
        if self.options.use_udp:
            close = self.dht.get_close_nodes(
                self.dht_keys.public_key, DHTPK_NODES, True, trio.current_time()
            )
            nodes.extend(close[: DHTPK_NODES - len(nodes)])
        return nodes

    # ======================================================================= glue

    def _on_relay_event(self, event: PoolEvent) -> None:
        self._relay_events.append(event)
        if not self._processing:
            self._process(trio.current_time())

    def enable_fast_lossless(self, packet_ids: frozenset[int]) -> None:
        """Deliver custom lossless packets with these ids (added to those enabled) straight
        from each online friend's session to the subscribers, past friend_connection, the
        messenger and the glue (the forwarding data path: a tenth of the receiver's time).

        Order stays that of the one subscriber channel: a session gets its sink when the
        glue reports its friend online (after the ``FriendConnected`` event and every packet
        before it), and the ids chosen are not used by anything in between.
        """
        self._fast_lossless_ids = self._fast_lossless_ids | packet_ids
        for pk in list(self.netcrypto.sessions):
            if self.is_friend(pk) and self.is_online(pk):
                self._install_lossless_sink(pk)

    def _install_lossless_sink(self, pk: bytes) -> None:
        session = self.netcrypto.sessions.get(pk)
        if session is None:
            return
        ids = self._fast_lossless_ids
        if not ids:
            session.lossless_sink = None
            return
        emit = self._emit
        subscribers = self._subscribers
        netcrypto = self.netcrypto

        def sink(payload: bytes) -> bool:
            if payload[0] not in ids:
                return False
            direct = self._direct_receive
            if direct is not None and self._direct_clear and len(subscribers) == 1:
                self._direct_pending = True
                self.direct_lossless += 1
                try:
                    direct(pk, payload, netcrypto.last_now)
                except Exception:  # a subscriber's bug must not take the node down
                    self.glue_errors += 1
                    log.exception("direct lossless delivery failed (counted)")
                return True
            emit(LosslessPacket(pk, payload))
            return True

        session.lossless_sink = sink

    def set_direct_lossless(
        self,
        receive: Callable[[bytes, bytes, float], None] | None,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Hand fast-path packets (:meth:`enable_fast_lossless`) to ``receive(pk, payload,
        now)`` synchronously instead of queueing a :class:`LosslessPacket` each, and call
        ``done()`` once after the batch that delivered any (one glue round). Only for the only
        subscriber, and only while it has read everything queued before (it says so with
        :meth:`direct_lossless_clear`; every event queued since turns the direct path off
        again), so the subscriber sees one order. None turns it off.
        """
        self._direct_receive = receive
        self._direct_done = done
        self._direct_clear = False

    def direct_lossless_clear(self) -> None:
        """The subscriber found its channel empty: direct delivery may go on."""
        self._direct_clear = True

    def _emit(self, event: NodeEvent) -> None:
        self._direct_clear = False
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._subscribers.remove(channel)

    def _kick(self) -> None:
        """After an API call: run the glue, flush output, re-read deadlines."""
        self._process(trio.current_time())

    def _process(self, now: float) -> None:
        if self._processing:
            return
        self._processing = True
        try:
            for _ in range(MAX_PROCESS_ROUNDS):
                try:
                    if not self._process_once(now):
                        break
                except Exception:  # a glue bug must not take the whole node down
                    self.glue_errors += 1
                    log.exception("node glue error (counted, node continues)")
        finally:
            self._processing = False
        if self._direct_pending:
            self._direct_pending = False
            done = self._direct_done
            if done is not None:
                try:
                    done()
                except Exception:
                    self.glue_errors += 1
                    log.exception("direct lossless batch hook failed (counted)")
        if self.udp is not None:
            self.udp.kick()
        self._wakeup.set()
        self._changed.set()
        self._changed = trio.Event()

    def _process_once(self, now: float) -> bool:
        """One round of moving information between layers; True if anything happened."""
        busy = False
        while self._relay_events:
            busy = True
            self._handle_relay_event(self._relay_events.pop(0), now)
        while (dht_event := self.dht.next_event()) is not None:
            busy = True
            if isinstance(dht_event, FriendIpFound):
                real = self._by_dht.get(dht_event.public_key)
                if real is not None:
                    addr = dht_event.ip_port.to_addr()
                    self.messenger.connections.set_udp_addr(real, addr, now)
            elif (
                isinstance(dht_event, DhtRequestReceived)
                and dht_event.request_id == ONION_DATA_DHTPK
            ):
                self.onion.handle_dht_dhtpk(dht_event.sender_pk, dht_event.data, now)
        while (onion_event := self.onion.next_event()) is not None:
            busy = True
            self._handle_onion_event(onion_event, now)
        for friend_dht_pk, data in self.onion.dht_dhtpk_to_send():
            if self.options.use_udp:
                packet = self.dht.send_dht_request(friend_dht_pk, ONION_DATA_DHTPK, data)
                self.dht.route_to_friend(friend_dht_pk, packet, now)
        for handle, packet in self.onion.tcp_onion_requests_to_send():
            ok = (
                bool(packet)
                and packet[0] == TCP_ONION_REQUEST_ID
                and isinstance(handle, bytes)
                and self.relays.send_onion_request(packet[1:], handle)
            )
            if not ok:
                self.tcp_send_failures += 1
        for event in self.messenger.events():
            busy = True
            self._handle_messenger_event(event, now)
        if self._direct_paths_round(now):
            busy = True
        for tcp in self.netcrypto.tcp_packets_to_send():
            if isinstance(tcp.via, bytes):
                sent = self.relays.send_oob(tcp.via, tcp.dht_pk, tcp.data)
            else:
                sent = self.relays.send_to_peer(tcp.dht_pk, tcp.data)
            if not sent:
                self.tcp_send_failures += 1
        return busy or bool(self._relay_events)

    # ======================================================================= direct paths

    def _direct_paths_round(self, now: float) -> bool:
        """Candidates in, messages and path events out; True if anything happened."""
        paths = self.direct_paths
        if now >= self._nat_refresh_at and paths.cores:
            self._nat_refresh_at = now + LOCAL_REFRESH_S
            candidates, nat = local_candidates(self._local_addrs(now), self._observed_addrs(now))
            paths.set_local(candidates, nat, now)
            # refresh DHT reports of our address while a path that could work is missing
            # (not toward a friend whose NAT maps ports at random: nothing to gain)
            missing = any(
                (core.addr is None and core.remote_nat is not NatBehaviour.SYMMETRIC_RANDOM)
                or core.silent_for(now) > SILENT_PATH_S  # keepalive missed: rebinding?
                for core in paths.cores.values()
            )
            if missing and now >= self._self_query_at:
                self._self_query_at = now + SELF_QUERY_INTERVAL_S
                for node in self.dht.random_good_nodes(SELF_QUERY_NODES, now):
                    self.dht.bootstrap(node.public_key, node.ip_port, now)
        busy = False
        for message in paths.messages_to_friends():
            busy = True
            number = self.messenger.friend_number(message.public_key)
            if number is None:
                continue
            try:
                if message.extension:
                    self.messenger.send_extension(number, message.data, now)
                else:  # 0xB8 Endpoints: small and rare, no congestion back-pressure
                    self.messenger.connections.send(
                        message.public_key, message.data, now, congestion=False
                    )
            except (m.NotConnected, m.SendQueueFull, ValueError):
                paths.stats.send_failures += 1
        for public_key, event in paths.events():
            busy = True
            short = public_key.hex().upper()[:16]
            if isinstance(event, DirectPathUp | DirectPathMoved):
                addr = event.addr if isinstance(event, DirectPathUp) else event.new
                self.messenger.connections.set_udp_addr(public_key, addr, now)
                log.info("friend %s: direct path %s:%d", short, addr[0], addr[1])
            elif isinstance(event, DirectPathDown):
                # keepalives unanswered: relay now (net_crypto alone would wait 8 s, and our
                # fresh Endpoints would be lost on the dead path meanwhile)
                self.netcrypto.udp_path_lost(public_key)
                log.info("friend %s: direct path lost, relay until it is back", short)
        return busy

    def _local_addrs(self, now: float) -> list[Addr]:
        """Our interface address(es) with our UDP port (cached for ``LOCAL_IP_REFRESH_S``)."""
        bound = self._bound
        if bound is None:
            return []
        cached = self._local_addrs_cache
        if cached is not None and now < cached[0]:
            return cached[1]
        host = self.options.udp_host
        ips: list[str] = []
        if host and host not in ("0.0.0.0", "::"):
            ips.append(host)
        else:
            for node in self.dht.random_good_nodes(4, now):
                if ":" in node.ip_port.to_addr()[0]:
                    continue
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                        probe.connect(node.ip_port.to_addr())  # routing lookup, nothing sent
                        ip = str(probe.getsockname()[0])
                except OSError:
                    continue
                if ip not in ips:
                    ips.append(ip)
                break
        addrs = [(ip, bound.port) for ip in ips]
        self._local_addrs_cache = (now + LOCAL_IP_REFRESH_S, addrs)
        return addrs

    def _observed_addrs(self, now: float) -> list[tuple[float, Addr]]:
        """``(when, address)``: how DHT nodes that answered us lately see us (one per node)."""
        out: list[tuple[float, Addr]] = []
        for entry in self.dht.close:
            best = None
            for assoc in entry.assocs():
                if (
                    assoc.ret_ip_self
                    and assoc.ret_ip_port is not None
                    and assoc.ret_timestamp + BAD_NODE_TIMEOUT_S > now
                    and (best is None or assoc.ret_timestamp > best[0])
                ):
                    best = (assoc.ret_timestamp, assoc.ret_ip_port.to_addr())
            if best is not None:
                out.append(best)
        return out

    def _handle_relay_event(self, event: PoolEvent, now: float) -> None:
        if isinstance(event, PeerData):
            self.messenger.receive_tcp(event.data, event.peer, event.relay, now)
        elif isinstance(event, OobData):
            self.messenger.receive_tcp(event.data, event.sender, event.relay, now)
        elif isinstance(event, OnionData):
            self.onion.receive_tcp_onion_response(event.data, now)
        elif isinstance(event, RelayConnected | RelayDisconnected):
            log.info(
                "TCP relay %s %s",
                event.relay.ip_port,
                "connected" if isinstance(event, RelayConnected) else "disconnected",
            )
            self.messenger.connections.set_own_relays(self._connected_relay_nodes(), now)
        elif isinstance(event, PeerOnline | PeerOffline):
            real = self._by_dht.get(event.peer)
            if real is not None:
                self.netcrypto.set_tcp_available(real, self.relays.pool.peer_online(event.peer))

    def _handle_onion_event(
        self, event: OnionStatusChanged | FriendDhtKeyLearned | FriendRequestReceived, now: float
    ) -> None:
        if isinstance(event, OnionStatusChanged):
            log.info("onion %s", "connected" if event.connected else "disconnected")
            self._emit(SelfConnectionChanged(event.connected, event.tcp))
        elif isinstance(event, FriendDhtKeyLearned):
            if not self.is_friend(event.public_key):
                return
            self._set_friend_dht(event.public_key, event.dht_public_key, now)
            for node in event.nodes:
                if node.tcp and len(self._friend_relays) < MAX_FRIEND_RELAYS:
                    if node.public_key not in self._friend_relays:
                        self._friend_relays[node.public_key] = None
                        host, port = node.ip_port.to_addr()
                        self.relays.add_relay(host, port, node.public_key)
                elif not node.tcp and self.options.use_udp:
                    self.onion.add_path_node(node)
        elif isinstance(event, FriendRequestReceived):
            if self.is_friend(event.public_key):
                return
            self._pending_requests.pop(event.public_key, None)
            self._pending_requests[event.public_key] = event.message
            while len(self._pending_requests) > MAX_PENDING_FRIEND_REQUESTS:
                del self._pending_requests[next(iter(self._pending_requests))]
            log.info("friend request from %s", event.public_key.hex().upper())
            self._emit(FriendRequest(event.public_key, event.message))

    def _handle_messenger_event(self, event: m.MessengerEvent, now: float) -> None:
        try:
            pk = self.messenger.friend_public_key(event.friend)
        except KeyError:
            return
        if isinstance(event, m.FriendOnline):
            session = self.netcrypto.sessions.get(pk)
            if session is not None:  # the established session proves the friend's DHT key
                self._set_friend_dht(pk, session.peer_dht_pk, now)
                if self.direct_paths.large_lossless:  # before the Hello announces it
                    session.enable_large_receive(self.direct_paths.large_lossless)
            self.onion.set_friend_online(pk, True)
            self._mark_confirmed(pk)
            path = self.friend_path(pk) or "tcp"
            log.info("friend %s online (%s)", pk.hex().upper()[:16], path)
            self.direct_paths.friend_online(pk, now)  # Hello (probes only with UDP on)
            self._emit(FriendConnected(pk, path))
            if self._fast_lossless_ids:
                self._install_lossless_sink(pk)
        elif isinstance(event, m.FriendOffline):
            self.direct_paths.friend_offline(pk)
            self.onion.set_friend_online(pk, False)
            self._touch_friend(pk)
            self._save()
            log.info("friend %s offline (%s)", pk.hex().upper()[:16], event.reason or "?")
            self._emit(FriendDisconnected(pk, event.reason))
        elif isinstance(event, m.MessageReceived):
            self._emit(Message(pk, event.text, event.action))
        elif isinstance(event, m.ReadReceipt):
            self._emit(ReadReceipt(pk, event.message_id))
        elif isinstance(event, m.CustomLossless):
            if event.data[0] == EXTENSION_PACKET_ID and pk in self.direct_paths.cores:
                self.direct_paths.on_friend_message(pk, event.data, now)
                return
            self._emit(LosslessPacket(pk, event.data))
        elif isinstance(event, m.ExtensionLossless):
            self.direct_paths.on_extension(pk, event.data, now)
            session = self.netcrypto.sessions.get(pk)
            if session is not None and pk in self.direct_paths.extension_peers:
                session.congestion.peer_is_ours = True
                theirs = self.direct_paths.peer_large_lossless.get(pk, 0)
                ours = self.direct_paths.large_lossless
                if theirs > MAX_CRYPTO_DATA_SIZE_BYTES and ours > MAX_CRYPTO_DATA_SIZE_BYTES:
                    session.set_large_lossless(min(theirs, ours))
        elif isinstance(event, m.CustomLossy):
            self._emit(LossyPacket(pk, event.data))
        elif isinstance(event, m.FriendRelays):
            # SHARE_RELAYS: relays the friend is connected to; ours reach it through them.
            for node in event.relays:
                if len(self._friend_relays) >= MAX_FRIEND_RELAYS:
                    break
                if node.public_key not in self._friend_relays:
                    self._friend_relays[node.public_key] = None
                    host, port = node.ip_port.to_addr()
                    self.relays.add_relay(host, port, node.public_key)
        elif isinstance(event, m.FriendRequestOverConnection) and (
            # Same rules as an onion friend request: nospam, dedupe, friends filtered.
            self.onion.requests.accept_incoming(pk, event.request, self.is_friend(pk))
        ):
            self._handle_onion_event(FriendRequestReceived(pk, event.request.message), now)
