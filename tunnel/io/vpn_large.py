"""IP packets larger than toxcore's 1372 bytes between two of our own VPN members (issue 9).

Part of :class:`tunnel.io.vpn_node.VpnNode`'s control plane (Trio thread only):

* **agreement**: before our HELLO (it announces our MTU) a member's session accepts data
  packets that large (:meth:`LargePackets.prepare_session`); once the member's HELLO is
  verified we may send it ``min(its MTU, ours)`` (:meth:`LargePackets.agree`). toxcore peers
  never send a HELLO, so they never get a lossy packet over 1373 bytes.
* **path caps**: large packets only over direct UDP (TCP relays take toxcore-sized packets
  only), and only once the path has been **probed** (:mod:`tunnel.vpn.pmtu`): a member's route
  is capped at 1372 (``engine.set_path_cap``) until a probe as large as the agreed limit,
  sent over the same direct path, was acknowledged, so a path that drops IP fragments never
  black-holes large packets. A new direct path (address change, relayed and back) starts
  over at 1372; a failed periodic re-probe falls back to 1372 at once. Meanwhile packets
  above the cap (up to the agreed limit) are split into toxcore-sized VPN fragments
  (:mod:`tunnel.vpn.routing`, :mod:`tunnel.vpn.fragments`), never answered with ICMP "too
  big": the kernel keeps the agreed MTU, and gets whole large packets again once the path
  is proven.
* **probes**: lossy 0xE6 packets (:class:`tunnel.wire.vpn.Probe`, exactly as large as a data
  packet of that size); every member answers probes with a small :class:`ProbeAck`. The
  sessions' lossy sink hands them to :meth:`LargePackets.handle_packet`; answers and probes go
  out from :meth:`LargePackets.run` (never from inside a session's receive).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict

import trio

from tunnel.crypto.databox import MAX_DATA_PAYLOAD_BYTES
from tunnel.errors import BadPacket
from tunnel.netcrypto.session import NotConnected
from tunnel.node import Node
from tunnel.vpn.engine import VpnEngine
from tunnel.vpn.pmtu import PathProber, ProbeTiming
from tunnel.wire.ip_port import Addr
from tunnel.wire.vpn import MAX_IP_PACKET_BYTES, Probe, ProbeAck, decode_probe_untrusted

MAX_LARGE_IP_PACKET_BYTES = MAX_DATA_PAYLOAD_BYTES - 1
"""The largest IP packet one lossy data packet carries between two of our own peers."""
MAX_PENDING_ACKS = 64
"""Probe answers waiting to go out at most (probes come one a second per member)."""

_PROBER_TOTALS = {
    "probes_sent": "probes_sent",
    "probes_acked": "probes_acked",
    "probes_lost": "probes_lost",
    "probe_rounds_failed": "rounds_failed",
    "probe_fallbacks": "fallbacks",
}
"""Statistics totals summed over the probers: name -> PathProber attribute."""

log = logging.getLogger(__name__)


class LargePackets:
    """Agreement, path caps and path MTU probing for large packets (module docstring)."""

    def __init__(
        self,
        node: Node,
        engine: VpnEngine,
        mtu: int,
        *,
        timing: ProbeTiming | None = None,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        self.node = node
        self.engine = engine
        self.mtu = mtu
        self.timing = timing
        self._now = now
        self.limits: dict[bytes, int] = {}  # online members we agreed large packets with
        self.probers: dict[bytes, PathProber] = {}
        self._paths: dict[bytes, tuple[bool, Addr | None]] = {}  # last (direct, UDP address)
        self._acks: list[tuple[bytes, ProbeAck]] = []
        self._wakeup = trio.Event()
        self.counters: dict[str, int] = {"probes_answered": 0, "probes_unsent": 0, "probe_bad": 0}
        self._retired: dict[str, int] = dict.fromkeys(_PROBER_TOTALS, 0)
        """Counts of probers already gone (members offline or re-agreed), kept in the totals."""

    # -- agreement ---------------------------------------------------------------------------

    def prepare_session(self, public_key: bytes) -> None:
        """Before our HELLO goes out (it announces our MTU): accept data packets that large
        from this friend. Only raises what we accept; we send more only once the member's
        HELLO proved it is one of ours and announced its limit."""
        if self.mtu <= MAX_IP_PACKET_BYTES:
            return
        session = self.node.netcrypto.sessions.get(public_key)
        if session is not None:
            session.set_lossy_limits(
                receive_bytes=min(self.mtu, MAX_LARGE_IP_PACKET_BYTES) + 1,
                send_bytes=session.max_lossy_payload,
            )

    def agree(self, public_key: bytes, limit: int) -> None:
        """A member's HELLO verified: ``limit`` is min(its MTU, ours). The route stays capped
        at 1372 until the path is probed."""
        if limit <= MAX_IP_PACKET_BYTES:
            self.forget(public_key)
            return
        limit = min(limit, MAX_LARGE_IP_PACKET_BYTES)
        session = self.node.netcrypto.sessions.get(public_key)
        if session is None:
            return
        session.set_lossy_limits(
            receive_bytes=min(self.mtu, MAX_LARGE_IP_PACKET_BYTES) + 1,
            send_bytes=limit + 1,
        )
        if self.limits.get(public_key) != limit:
            self.limits[public_key] = limit
            self._retire(self.probers.get(public_key))
            self.probers[public_key] = PathProber(limit, timing=self.timing)
            self._paths.pop(public_key, None)
        self.check_paths()

    def forget(self, public_key: bytes) -> None:
        """The member went offline (or no longer agrees): no more large packets to it."""
        self.limits.pop(public_key, None)
        self._paths.pop(public_key, None)
        self._retire(self.probers.pop(public_key, None))

    # -- path caps ---------------------------------------------------------------------------

    def check_paths(self) -> None:
        """Notice new, changed and lost direct paths; cap every route at what its path has
        proven (1372 while relayed or unproven)."""
        now = self._now()
        netcrypto = self.node.netcrypto
        changed = False
        for public_key, prober in self.probers.items():
            direct = netcrypto.is_direct(public_key, now)
            path = (direct, netcrypto.udp_addr(public_key) if direct else None)
            if self._paths.get(public_key) != path:
                if public_key in self._paths or direct:
                    log.info(
                        "member %s: %s; IP packets up to %d bytes until the path is probed",
                        public_key.hex().upper()[:16],
                        f"direct UDP path {path[1]}" if direct else "no direct UDP path",
                        MAX_IP_PACKET_BYTES,
                    )
                self._paths[public_key] = path
                prober.path_changed(now, direct)
                changed = True
        self._apply_caps()
        if changed:
            self._wakeup.set()

    def _apply_caps(self) -> None:
        engine = self.engine
        for public_key, prober in self.probers.items():
            direct = self._paths.get(public_key, (False, None))[0]
            cap = prober.cap if direct else MAX_IP_PACKET_BYTES
            negotiated = engine.negotiated_limit(public_key)
            engine.set_path_cap(
                public_key, None if negotiated is not None and cap >= negotiated else cap
            )

    def path_cap(self, public_key: bytes) -> int | None:
        """The largest IP packet the route to this member takes now (None: no large limit)."""
        prober = self.probers.get(public_key)
        if prober is None:
            return None
        direct = self._paths.get(public_key, (False, None))[0]
        return prober.cap if direct else MAX_IP_PACKET_BYTES

    # -- probes ------------------------------------------------------------------------------

    def handle_packet(self, public_key: bytes, payload: bytes | memoryview) -> None:
        """A lossy 0xE6 packet from a verified member (called from its session's sink)."""
        try:
            message = decode_probe_untrusted(payload)
        except BadPacket:
            self.counters["probe_bad"] += 1
            return
        if isinstance(message, Probe):
            if len(self._acks) < MAX_PENDING_ACKS:
                self._acks.append((public_key, ProbeAck(message.nonce, message.size)))
                self._wakeup.set()
            return
        prober = self.probers.get(public_key)
        if prober is None:
            return
        raised = prober.handle_ack(message, self._now())
        if raised:
            log.info(
                "member %s: path carries %d-byte IP packets",
                public_key.hex().upper()[:16],
                prober.cap,
            )
            self._apply_caps()
        self._wakeup.set()

    async def run(self) -> None:
        """Send probe answers and the probers' probes, each when due."""
        while True:
            deadline = min(
                (d for p in self.probers.values() if (d := p.next_deadline()) is not None),
                default=math.inf,
            )
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self.service()

    def service(self) -> None:
        """Send the probe answers waiting and every probe due now (:meth:`run` calls it)."""
        now = self._now()
        netcrypto = self.node.netcrypto
        sent = False
        acks, self._acks = self._acks, []
        for public_key, ack in acks:
            try:
                netcrypto.send_lossy(public_key, ack.encode(), now)
            except (NotConnected, ValueError):
                continue
            self.counters["probes_answered"] += 1
            sent = True
        caps_changed = False
        for public_key, prober in self.probers.items():
            cap = prober.cap
            probes = prober.poll(now)
            caps_changed = caps_changed or prober.cap != cap
            if prober.cap < cap:
                log.warning(
                    "member %s: probes of %d bytes unanswered; back to %d-byte IP packets",
                    public_key.hex().upper()[:16],
                    cap,
                    prober.cap,
                )
            for probe in probes:
                # only over the direct path the probe stands for (never a TCP relay)
                if not netcrypto.is_direct(public_key, now):
                    self.counters["probes_unsent"] += 1
                    continue
                try:
                    netcrypto.send_lossy(public_key, probe.encode(), now)
                except (NotConnected, ValueError):
                    self.counters["probes_unsent"] += 1
                    continue
                sent = True
        if caps_changed:
            self._apply_caps()
        if sent:
            self.node.flush()

    # -- statistics --------------------------------------------------------------------------

    def _retire(self, prober: PathProber | None) -> None:
        """A prober goes away: its counts stay in the totals."""
        if prober is not None:
            for name, attribute in _PROBER_TOTALS.items():
                self._retired[name] += getattr(prober, attribute)

    def statistics(self) -> dict[str, object]:
        """Totals and, per member with a large limit, its prober's state."""
        members: dict[str, object] = {}
        for public_key, prober in self.probers.items():
            members[public_key.hex().upper()] = {
                **asdict(prober.statistics()),
                "path_cap": self.path_cap(public_key),
            }
        totals = {
            name: self._retired[name]
            + sum(getattr(prober, attribute) for prober in self.probers.values())
            for name, attribute in _PROBER_TOTALS.items()
        }
        return {**totals, **self.counters, "members": members}
