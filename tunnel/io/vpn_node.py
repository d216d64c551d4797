"""The mesh VPN on a running :class:`tunnel.node.Node` (issue 9): Tox events <-> membership and
engine <-> TUN pump.

Control plane (Trio thread, one task, :meth:`VpnNode.run`): node events go to
:class:`~tunnel.vpn.membership.Membership` (friend request -> ``handle_friend_request``,
connected/disconnected -> ``friend_online``/``friend_offline``, custom lossless 0xB0 ->
``handle_control``, its timer at ``next_deadline``); after each input its actions are carried
out on the node (friend request, accept, remove, lossless control packet: queued per friend in
order, never dropped) and :meth:`VpnEngine.refresh` republishes the routes. Our addresses go
onto the TUN device when they change; member records and revocations are saved next to the
profile whenever they change (:mod:`tunnel.vpn.state`). Being revoked ends :meth:`run`.

Data plane (data-path.md): the :class:`~tunnel.io.tun.TunPump` thread reads batches from the
TUN device with blocking waits (after moving packets it busy-polls for ``busy_poll_us``;
with ``keep_warm_ms`` it keeps the crypto path warm for a while, and with ``warm_ahead_us``
warms it up just before the next packet of a regular flow is due) and routes them right there
(``engine.outbound``: lock-free snapshots). To members reached by direct UDP it also seals the
packets itself (a :class:`~tunnel.netcrypto.session.LossySealer` per member: its own buffers,
nonces from the session's atomic counter) and sends each batch with UDP GSO
(``UdpDriver.send_batch_now``); the Trio thread republishes that member snapshot on every
control-plane change and every ``PATH_CHECK_INTERVAL_S``. Packets to relayed members go to the
Trio thread in batches (one ``run_sync_soon``), straight to net_crypto, with one node glue
round per batch. Inbound, the sessions of verified members hand their lossy 0xE4 packets (and
0xE6 path MTU probes, to :class:`~tunnel.io.vpn_large.LargePackets`) to a sink here (no node
events): checked by ``engine.inbound`` (member, source address, size), collected per received
batch and written to the TUN device (on the Trio thread for a few packets while the writer
thread sleeps, else on the writer thread). Larger IP packets than toxcore's 1372 bytes are used
with members whose HELLO announced a larger MTU, over direct UDP only and once a probe of that
size made it over the path (:mod:`tunnel.io.vpn_large`, :mod:`tunnel.vpn.pmtu`); until then
they go as toxcore-sized 0xE8 fragments (:mod:`tunnel.vpn.fragments`). Every packet that does
not make it is counted (:meth:`VpnNode.statistics`)."""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import trio

from tunnel.io.tun import PacketSlot, TunDevice, TunError, TunPump
from tunnel.io.vpn_datapath import (
    INLINE_WRITE_MAX_PACKETS,
    MAX_PENDING_BATCHES,
    Route,
    TunWriter,
    UdpReceiver,
    crypto_warmer,
)
from tunnel.io.vpn_large import LargePackets
from tunnel.io.vpn_setup import asdict_of, member_rows, network_fields
from tunnel.netcrypto.session import LossySealer, NotConnected, Session
from tunnel.node import Node, NodeClosed
from tunnel.node_types import (
    FriendConnected,
    FriendDisconnected,
    FriendRequest,
    LosslessPacket,
    LossyPacket,
    NodeEvent,
)
from tunnel.profile import write_file_atomic
from tunnel.vpn.config import VpnConfig
from tunnel.vpn.engine import OwnAddressesChanged, VpnEngine
from tunnel.vpn.membership import (
    AcceptFriend,
    Action,
    MembersChanged,
    Membership,
    ParamsLearned,
    PeerDown,
    PeerRejected,
    PeerUp,
    RemovedFromNetwork,
    RemoveFriend,
    SendControl,
    SendFriendRequest,
)
from tunnel.vpn.state import VpnState
from tunnel.wire.ip_port import Addr
from tunnel.wire.vpn import (
    MAX_IP_PACKET_BYTES,
    VPN_CONTROL_PACKET_ID,
    VPN_DATA_PACKET_ID,
    VPN_PROBE_PACKET_ID,
)
from tunnel.wire.vpn_fragment import VPN_FRAGMENT_PACKET_ID

MAX_CUSTOM_LOSSY_BYTES = MAX_IP_PACKET_BYTES + 1
"""toxcore's limit for one lossy packet (id byte + IP packet)."""
MAX_CONTROL_QUEUE = 4096
"""Control packets queued for one friend at most (a friend that never drains is cut off)."""
INBOUND_BATCH = 256
REMOVE_FLUSH_TIMEOUT_S = 3.0
REMOVE_GRACE_S = 1.0
"""A revoked friend is removed this long after its REVOKE was queued (so it gets it)."""
STATE_FILE_MODE = 0o600
PATH_CHECK_INTERVAL_S = 1.0
"""How often members with a large packet limit are checked for a (new) direct UDP path."""

log = logging.getLogger(__name__)


class VpnNode:
    """The VPN member running on ``node`` with ``tun`` (see module docstring).

    Create it before starting the node (it subscribes to the node's events at once), then run
    :meth:`run` in a nursery next to ``node.run``. ``tun=None`` runs the control plane only
    (tests of the membership over real Tox without root).
    """

    def __init__(
        self,
        node: Node,
        config: VpnConfig,
        membership: Membership,
        tun: TunDevice | None,
        *,
        state_path: Path | None = None,
    ) -> None:
        self.node = node
        self.config = config
        self.membership = membership
        self.engine = VpnEngine(membership, tun_mtu=config.mtu)
        self.tun = tun
        self.state_path = state_path
        self._events = node.subscribe()
        self.pump: TunPump | None = None
        self._writer: TunWriter | None = None
        self._receiver: UdpReceiver | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._batches: deque[list[tuple[bytes, bytes]]] = deque()
        self._scheduled = False
        self._schedule_lock = threading.Lock()
        self._control: dict[bytes, deque[bytes]] = {}
        self._control_wakeup: dict[bytes, trio.Event] = {}
        self._removing: set[bytes] = set()
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._configured: list[str] = []
        self.large = LargePackets(node, self.engine, config.mtu)
        self._fast: dict[bytes, tuple[LossySealer, tuple[str, int]]] = {}
        self._rx_lock = threading.Lock()  # net_crypto receive state, Trio vs TUN thread
        self._sinks: dict[bytes, Session] = {}  # sessions whose lossy packets come to us
        self._inbound: list[memoryview] = []
        self._inbound_ready = trio.Event()
        """Members on direct UDP: the TUN thread seals and sends to them itself (a snapshot,
        replaced whole by the Trio thread)."""
        self.removed_by: bytes | None = None
        self.failure: str | None = None
        """Why :meth:`run` ended on its own other than being removed (TUN device gone)."""
        self.counters: dict[str, int] = {
            "out_packets": 0,
            "out_dropped_backlog": 0,
            "out_dropped_offline": 0,
            "out_fast": 0,
            "out_fast_dropped": 0,
            "in_packets": 0,
            "in_dropped": 0,
            "in_dropped_backlog": 0,
            "control_sent": 0,
            "control_dropped": 0,
            "lossless_other": 0,
            "tun_configure_errors": 0,
            "state_save_errors": 0,
        }

    # ================================================================== running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled or revoked (then :attr:`removed_by` is set)."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._after_input()
                if self.tun is not None:
                    self.pump = TunPump(
                        self.tun,
                        self._on_tun_packets,
                        busy_poll_window_s=self.config.busy_poll_us / 1e6,
                        warm=crypto_warmer(),
                        warm_interval_ms=self.config.keep_warm_ms,
                        warm_ahead_lead_s=self.config.warm_ahead_us / 1e6,
                    )
                    self._writer = TunWriter(self.pump)
                    self._writer.start()
                    if self.node.udp is not None:
                        self._receiver = UdpReceiver(
                            self.node.udp, self.pump, self._writer, self.engine.inbound
                        )
                    self.pump.start()
                    nursery.start_soon(self._watch_pump, self.pump)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._path_loop)
                nursery.start_soon(self._inbound_loop)
                nursery.start_soon(self.large.run)
                task_status.started()
                await self._event_loop()
                nursery.cancel_scope.cancel()
        finally:
            for session in self._sinks.values():
                session.lossy_sink = None
            if self.pump is not None:
                self.pump.stop()
            if self._receiver is not None:
                self._receiver.detach()
            if self._writer is not None:
                self._writer.stop()
            self._save_state()

    async def _watch_pump(self, pump: TunPump) -> None:
        """The TUN device went away (deleted, fd error): the VPN cannot work, stop."""
        await trio.to_thread.run_sync(pump.join, abandon_on_cancel=True)
        if pump.failure is not None:
            self.failure = f"TUN device {pump.device.name}: {pump.failure}"
            log.error("%s; stopping", self.failure)
            assert self._nursery is not None
            self._nursery.cancel_scope.cancel()

    async def _event_loop(self) -> None:
        now = trio.current_time()
        for pk in self.node.friends():  # friends that came online before we subscribed
            if self.node.is_online(pk):
                self.large.prepare_session(pk)
                self.membership.friend_online(pk, now)
        for pk, message in self.node.pending_friend_requests().items():
            self.membership.handle_friend_request(pk, message)
        self._after_input()
        receive = self._events
        while not self.membership.removed:
            try:
                event = await receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            inbound: list[memoryview] = []
            control = self._handle(event, inbound)
            for _ in range(INBOUND_BATCH):  # drain what is already waiting
                try:
                    event = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                control = self._handle(event, inbound) or control
            if inbound:
                self._write_tun(inbound)
            if control:
                self._after_input()

    def _handle(self, event: NodeEvent, inbound: list[memoryview]) -> bool:
        """One node event; True if the control plane must run its actions."""
        membership = self.membership
        if isinstance(event, LossyPacket):
            if (
                event.data[:1] == bytes([VPN_PROBE_PACKET_ID])
                and event.public_key in membership.verified_peers()
            ):  # members only
                self.large.handle_packet(event.public_key, event.data)
                return False
            if event.data[:1] == bytes([VPN_FRAGMENT_PACKET_ID]):
                packet = self.engine.inbound_fragment(
                    event.public_key, event.data, trio.current_time()
                )
                if packet is not None:  # the reassembler counts what it drops
                    inbound.append(packet)
                return False
            packet = self.engine.inbound(event.public_key, event.data)
            if packet is None:
                self.counters["in_dropped"] += 1
            else:
                inbound.append(packet)
            return False
        if isinstance(event, LosslessPacket):
            if event.data[:1] == bytes([VPN_CONTROL_PACKET_ID]):
                membership.handle_control(event.public_key, event.data)
                return True
            self.counters["lossless_other"] += 1
            return False
        if isinstance(event, FriendConnected):
            self.large.prepare_session(event.public_key)
            membership.friend_online(event.public_key, trio.current_time())
            return True
        if isinstance(event, FriendDisconnected):
            self.large.forget(event.public_key)
            membership.friend_offline(event.public_key)
            return True
        if isinstance(event, FriendRequest):
            membership.handle_friend_request(event.public_key, event.message)
            return True
        return False

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.membership.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._changed.wait()
            self._changed = trio.Event()
            now = trio.current_time()
            deadline = self.membership.next_deadline()
            if deadline is not None and deadline <= now:
                self.membership.handle_timer(now)
                self._after_input()

    # ================================================================== control plane

    def _after_input(self) -> None:
        """Carry out the membership's actions, republish routes, react to its events."""
        for action in self.membership.actions():
            self._do(action)
        save = False
        for event in self.engine.refresh():
            if isinstance(event, OwnAddressesChanged):
                self._configure_tun()
            elif isinstance(event, PeerUp):
                log.info(
                    "member %s up (IP packets up to %d bytes)",
                    event.public_key.hex().upper()[:16],
                    event.max_ip_packet,
                )
                self.large.agree(event.public_key, event.max_ip_packet)
            elif isinstance(event, PeerDown):
                log.info("member %s down", event.public_key.hex().upper()[:16])
                self.large.forget(event.public_key)
            elif isinstance(event, PeerRejected):
                log.warning(
                    "friend %s refused: %s", event.public_key.hex().upper()[:16], event.reason
                )
            elif isinstance(event, ParamsLearned):
                log.info("network parameters learned: %s", event.params)
                save = True
            elif isinstance(event, MembersChanged):
                save = True
            elif isinstance(event, RemovedFromNetwork):
                self.removed_by = event.issuer
                log.warning("removed from the network by %s", event.issuer.hex().upper()[:16])
                save = True
        if save:
            self._save_state()
        self._refresh_fast()
        self._changed.set()

    def _do(self, action: Action) -> None:
        node = self.node
        try:
            if isinstance(action, SendFriendRequest):
                if not node.is_friend(action.tox_id.public_key):
                    node.add_friend(action.tox_id, action.message)
            elif isinstance(action, AcceptFriend):
                node.accept_friend_request(action.public_key)
            elif isinstance(action, RemoveFriend):
                if action.public_key not in self._removing:
                    self._removing.add(action.public_key)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._remove_later, action.public_key)
            elif isinstance(action, SendControl):
                self._queue_control(action.public_key, action.data)
        except (ValueError, KeyError) as exc:
            log.warning("VPN action %s failed: %s", type(action).__name__, exc)

    async def _remove_later(self, public_key: bytes) -> None:
        """Remove a revoked friend once what we queued for it (its REVOKE: it must learn it
        was removed) has gone out, plus a grace period for delivery."""
        try:
            with trio.move_on_after(REMOVE_FLUSH_TIMEOUT_S):
                await self.node.wait_for(lambda: not self._control.get(public_key))
            await trio.sleep(REMOVE_GRACE_S)
            self._control.pop(public_key, None)
            wakeup = self._control_wakeup.pop(public_key, None)
            if wakeup is not None:
                wakeup.set()
            if self.node.is_friend(public_key):
                self.node.remove_friend(public_key)
        except NodeClosed:
            pass
        finally:
            self._removing.discard(public_key)

    def _queue_control(self, public_key: bytes, data: bytes) -> None:
        queue = self._control.get(public_key)
        if queue is None:
            queue = self._control[public_key] = deque()
            assert self._nursery is not None
            self._nursery.start_soon(self._control_sender, public_key, queue)
        if len(queue) >= MAX_CONTROL_QUEUE:
            self.counters["control_dropped"] += 1
            return
        queue.append(data)
        event = self._control_wakeup.get(public_key)
        if event is not None:
            event.set()

    async def _control_sender(self, public_key: bytes, queue: deque[bytes]) -> None:
        """Sends ``queue`` to one friend in order; a friend going offline discards it (the
        membership sends a fresh HELLO and everything else when it comes back)."""
        node = self.node
        while self._control.get(public_key) is queue:
            if not queue:
                event = self._control_wakeup[public_key] = trio.Event()
                await event.wait()
                continue
            try:
                await node.send_lossless(public_key, queue[0])
            except (NotConnected, KeyError, ValueError, NodeClosed):
                self.counters["control_dropped"] += len(queue)
                queue.clear()
                continue
            queue.popleft()
            self.counters["control_sent"] += 1

    def _configure_tun(self) -> None:
        if self.tun is None:
            return
        wanted = self.engine.own_interfaces()
        tun = self.tun
        try:
            for address in self._configured:
                if address not in wanted:
                    argv = ["ip", *(("-n", tun.netns) if tun.netns else ())]
                    argv += ["addr", "del", address, "dev", tun.name]
                    subprocess.run(argv, capture_output=True, timeout=10, check=False)
            new = [a for a in wanted if a not in self._configured]
            tun.configure(new, mtu=self.config.mtu)
        except TunError as exc:
            self.counters["tun_configure_errors"] += 1
            log.error("configuring %s failed: %s", tun.name, exc)
            return
        self._configured = list(wanted)
        log.info("%s addresses: %s", tun.name, ", ".join(wanted) or "none")

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        m = self.membership
        state = VpnState(
            m.network_id,
            m.own,
            tuple(r for k, r in m.records().items() if k != m.own_key),
            tuple(sorted(m.revoked())),
        )
        try:
            write_file_atomic(self.state_path, state.to_json().encode(), STATE_FILE_MODE)
        except OSError as exc:
            self.counters["state_save_errors"] += 1
            log.error("saving VPN state to %s failed: %s", self.state_path, exc)

    def remove_member(self, public_key: bytes) -> None:
        """Revoke a member (our own key: leave the network) and tell everyone."""
        self.membership.remove(public_key)
        self._after_input()

    # ================================================================== large packets

    async def _path_loop(self) -> None:
        while True:
            await trio.sleep(PATH_CHECK_INTERVAL_S)
            if self.large.probers:
                self.large.check_paths()
            self._refresh_fast()

    def _refresh_fast(self) -> None:
        """Republish which members the TUN thread may send to directly (direct UDP only:
        relayed packets, and everything but our lossy packets, stay on the Trio thread)."""
        udp = self.node.udp
        if self.pump is None or udp is None:
            return
        now = trio.current_time()
        netcrypto = self.node.netcrypto
        old = self._fast
        fast: dict[bytes, tuple[LossySealer, tuple[str, int]]] = {}
        receiver = self._receiver
        routes: dict[Addr, Route] = {}
        for public_key in self.membership.verified_peers():
            session = netcrypto.sessions.get(public_key)
            addr = netcrypto.udp_addr(public_key)
            if (
                session is None
                or addr is None
                or not session.established
                or not netcrypto.is_direct(public_key, now)
            ):
                continue
            previous = old.get(public_key)
            if (
                previous is not None
                and previous[0].session is session
                and previous[0].max_payload == session.max_lossy_payload
            ):
                sealer = previous[0]
            else:
                maybe = session.lossy_sealer()
                if maybe is None:
                    continue
                sealer = maybe
            fast[public_key] = (sealer, udp.bound.wire_addr(addr))
            if receiver is not None:
                route = receiver.routes.get(addr)
                if route is None or not route[1].serves(session):
                    session.rx_lock = self._rx_lock  # before its packets are opened elsewhere
                    opener = netcrypto.lossy_opener(public_key, VPN_DATA_PACKET_ID)
                    route = None if opener is None else (public_key, opener)
                if route is not None:
                    routes[addr] = route
        self._fast = fast
        if receiver is not None and receiver.attach():
            receiver.sync_clock()
            receiver.routes = routes
        self._refresh_sinks()

    def _refresh_sinks(self) -> None:
        """Verified members' sessions hand their lossy packets straight to us (no events
        through net_crypto, the messenger, the glue and the node's channel)."""
        sessions = self.node.netcrypto.sessions
        wanted: dict[bytes, Session] = {}
        for public_key in self.membership.verified_peers():
            session = sessions.get(public_key)
            if session is not None and not session.closed:
                wanted[public_key] = session
        for public_key, session in self._sinks.items():
            if wanted.get(public_key) is not session:
                session.lossy_sink = None
        for public_key, session in wanted.items():
            if self._sinks.get(public_key) is not session:
                session.lossy_sink = self._make_sink(public_key)
        self._sinks = wanted

    def _make_sink(self, public_key: bytes) -> Callable[[bytes], bool]:
        inbound = self.engine.inbound
        inbound_fragment = self.engine.inbound_fragment
        counters = self.counters

        def sink(payload: bytes) -> bool:
            kind = payload[0]
            if kind == VPN_DATA_PACKET_ID:
                packet = inbound(public_key, payload)
            elif kind == VPN_FRAGMENT_PACKET_ID:
                packet = inbound_fragment(public_key, payload, trio.current_time())
                if packet is None:  # more to come, or dropped (the reassembler counts)
                    return True
            elif kind == VPN_PROBE_PACKET_ID:
                self.large.handle_packet(public_key, payload)
                return True
            else:
                return False
            if packet is None:
                counters["in_dropped"] += 1
            else:
                if not self._inbound:
                    self._inbound_ready.set()
                self._inbound.append(packet)
            return True

        return sink

    async def _inbound_loop(self) -> None:
        """Writes what the session sinks collected, once per batch of received datagrams."""
        while True:
            await self._inbound_ready.wait()
            self._inbound_ready = trio.Event()
            packets, self._inbound = self._inbound, []
            if packets:
                self._write_tun(packets)

    # ================================================================== data plane

    def _on_tun_packets(self, slots: list[PacketSlot]) -> None:
        """TUN pump thread: route a batch, hand the framed packets to the Trio thread."""
        engine = self.engine
        fast = self._fast
        udp = self.node.udp
        batch: list[tuple[bytes, bytes]] = []
        sealed: dict[tuple[str, int], list[bytes]] = {}  # one GSO batch per destination
        for slot in slots:
            framed = engine.outbound(slot.buffer, slot.offset, slot.length)
            if framed is None:
                continue
            route = fast.get(framed[0])
            if route is not None:
                packet = route[0].seal(framed[1])
                if packet is not None:
                    sealed.setdefault(route[1], []).append(packet)
                    continue
            batch.append((framed[0], bytes(framed[1])))
        for public_key, data in engine.take_extra_packets():
            route = fast.get(public_key)
            packet = None if route is None else route[0].seal(data)
            if packet is None or route is None:
                batch.append((public_key, data))
            else:
                sealed.setdefault(route[1], []).append(packet)
        sent = dropped = 0
        for addr, packets in sealed.items():
            done = 0 if udp is None else udp.send_batch_now(addr, packets)
            sent += done
            dropped += len(packets) - done
        if sent or dropped:
            self.counters["out_fast"] += sent  # written by this thread only
            self.counters["out_fast_dropped"] += dropped
        replies = engine.take_local_replies()
        if replies and self.pump is not None:
            self.pump.write_packets(replies)
        if not batch:
            return
        if len(self._batches) >= MAX_PENDING_BATCHES:
            self.counters["out_dropped_backlog"] += len(batch)
            return
        self._batches.append(batch)
        with self._schedule_lock:
            if self._scheduled:
                return
            self._scheduled = True
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._send_batches)

    def _send_batches(self) -> None:
        """Trio thread: send every queued batch with one node glue round."""
        with self._schedule_lock:
            self._scheduled = False
        packets: list[tuple[bytes, bytes]] = []
        while self._batches:
            packets.extend(self._batches.popleft())
        if not packets:
            return
        # Straight to net_crypto (the messenger adds nothing for lossy packets, and would
        # refuse the large ones agreed with our own members); one glue round per batch.
        netcrypto = self.node.netcrypto
        now = trio.current_time()
        sent = 0
        relayed = False
        for public_key, data in packets:
            try:
                if len(data) > MAX_CUSTOM_LOSSY_BYTES and not netcrypto.is_direct(public_key, now):
                    relayed = True  # relayed now (check_paths caps the route): split it
                    for fragment in self.engine.split(data):
                        netcrypto.send_lossy(public_key, fragment, now)
                else:
                    netcrypto.send_lossy(public_key, data, now)
            except (NotConnected, ValueError):
                continue
            sent += 1
        if relayed:
            self.large.check_paths()
        if sent:
            self.node.flush()
        self.counters["out_packets"] += sent
        self.counters["out_dropped_offline"] += len(packets) - sent

    def _write_tun(self, packets: list[memoryview]) -> None:
        if self.pump is None or self._writer is None:
            self.counters["in_dropped"] += len(packets)
            return
        self.counters["in_packets"] += len(packets)
        if len(packets) <= INLINE_WRITE_MAX_PACKETS and self._writer.idle():
            # A few packets while the writer sleeps: waking it costs more (and adds a thread
            # hand-off to the latency) than writing them here.
            self.pump.write_packets(packets)
            return
        if not self._writer.put(packets):
            self.counters["in_dropped_backlog"] += len(packets)

    # ================================================================== status

    def statistics(self) -> dict[str, object]:
        """Everything for ``tunnel status``: members, addresses, routes, drop counters."""
        m = self.membership
        pump = self.pump.statistics() if self.pump is not None else None
        counters = dict(self.counters)
        # out_packets: every packet sent, out_fast: those the TUN thread sent itself (two
        # counters because each is written by one thread only)
        counters["out_packets"] += counters["out_fast"]
        if self._receiver is not None:  # written by the TUN thread only
            fast_in = self._receiver.counters
            counters["in_packets"] += fast_in["in_fast"]
            counters["in_dropped"] += fast_in["in_fast_dropped"]
            counters.update(fast_in)
        return {
            **network_fields(m),
            "interface": None if self.tun is None else self.tun.name,
            "addresses": self.engine.own_interfaces(),
            "members": member_rows(m, self.engine, self.node, self.large),
            "counters": counters,
            "membership": asdict_of(m.statistics()),
            "router": asdict_of(self.engine.router.statistics()),
            "fragments": asdict_of(self.engine.reassembler.statistics()),
            "inbound_wrong_id": self.engine.inbound_wrong_id,
            "pmtu": self.large.statistics(),
            "pump": None if pump is None else asdict_of(pump),
            "tun_writer": None
            if self._writer is None
            else {"batches": self._writer.batches, "dropped": self._writer.dropped},
        }
