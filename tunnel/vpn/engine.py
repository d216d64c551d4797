"""The VPN engine: membership + addressing + routing behind one small API for the node.

Sans-IO glue (issue 9). The node owns a Tox identity, a TUN device (:mod:`tunnel.io.tun`)
and friend connections; it feeds the engine friend events and packets and does what the
engine returns. Control plane (on the Trio thread)::

    engine = VpnEngine(Membership(...), tun_mtu=cfg.mtu)
    engine.membership.join(invite.tox_id)               # when joining
    ... friend request        -> engine.membership.handle_friend_request(pk, message)
    ... friend connected      -> engine.membership.friend_online(pk, now)
    ... friend disconnected   -> engine.membership.friend_offline(pk)
    ... lossless 0xB0 packet  -> engine.membership.handle_control(pk, data)
    ... timer                 -> engine.membership.handle_timer(now) at next_deadline()
    after each of these:
        for action in engine.membership.actions(): carry it out (friend add/accept/remove,
                                                   send lossless custom packet)
        for event in engine.refresh(): log it; on OwnAddressesChanged (re)configure the TUN
                                       with engine.own_interfaces()

Data plane (on the data-path threads; :meth:`VpnEngine.outbound` from the TUN reader only,
:meth:`VpnEngine.inbound` from one receiving thread)::

    for slot in slots:                                   # TunPump callback
        framed = engine.outbound(slot.buffer, slot.offset, slot.length)
        if framed: send lossy custom packet framed[1] to friend framed[0]
    for key, data in engine.take_extra_packets(): send lossy data to key   # fragments
    pump.write_packets(engine.take_local_replies())                        # ICMP too big

    packet = engine.inbound(pk, lossy_packet)            # a lossy 0xE4 packet from a friend
    packet = engine.inbound_fragment(pk, lossy_packet, now)  # a lossy 0xE8 fragment
    if packet is not None: pump.write_packets([packet])

Packets to one of our own members that are larger than its path's cap but within the agreed
limit are split into VPN fragments (:mod:`tunnel.wire.vpn_fragment`) and reassembled by
the receiver (:mod:`tunnel.vpn.fragments`), then checked like any other packet.

``outbound`` writes the packet id byte into the slot's headroom (``offset >= 1`` required), so
the framed packet is a view of the receive buffer: no copy. :meth:`refresh` republishes the
routing table (immutable snapshots, see :mod:`tunnel.vpn.routing`), so the data-path threads
never take a lock.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tunnel.vpn.addressing import Assignment
from tunnel.vpn.fragments import Reassembler
from tunnel.vpn.ip import Buffer
from tunnel.vpn.membership import (
    Event,
    MembersChanged,
    Membership,
    ParamsLearned,
    PeerDown,
    PeerUp,
    RemovedFromNetwork,
)
from tunnel.vpn.routing import DEFAULT_TUN_MTU_BYTES, VpnRouter
from tunnel.wire.vpn import VPN_DATA_PACKET_ID
from tunnel.wire.vpn_fragment import split_packet


@dataclass(frozen=True)
class OwnAddressesChanged:
    """Our TUN addresses changed (first assignment, a pin, a collision): reconfigure."""

    ipv4: ipaddress.IPv4Interface | None
    ipv6: ipaddress.IPv6Interface | None


EngineEvent = Event | OwnAddressesChanged


class VpnEngine:
    """See module docstring."""

    def __init__(self, membership: Membership, *, tun_mtu: int = DEFAULT_TUN_MTU_BYTES) -> None:
        self.membership = membership
        self.router = VpnRouter(membership.own_key, tun_mtu)
        self._online: dict[bytes, int] = {}
        self._own: tuple[ipaddress.IPv4Interface | None, ipaddress.IPv6Interface | None] = (
            None,
            None,
        )
        self._extra: list[tuple[bytes, bytes]] = []
        self._path_caps: dict[bytes, int] = {}
        self.reassembler = Reassembler()
        self.inbound_wrong_id = 0
        self._assignment: Assignment | None = None

    # -- control plane -----------------------------------------------------------------------

    def refresh(self) -> list[EngineEvent]:
        """Drain membership events, republish the routing table; returns what happened."""
        events: list[EngineEvent] = list(self.membership.events())
        dirty = self._assignment is None
        for event in events:
            if isinstance(event, PeerUp):
                self._online[event.public_key] = event.max_ip_packet
                dirty = True
            elif isinstance(event, PeerDown):
                self._online.pop(event.public_key, None)
                self._path_caps.pop(event.public_key, None)
                self.reassembler.forget(event.public_key)
                dirty = True
            elif isinstance(event, MembersChanged | ParamsLearned):
                dirty = True
            elif isinstance(event, RemovedFromNetwork):
                self._online.clear()
                self._path_caps.clear()
                dirty = True
        if not dirty:
            return events
        assignment = self.membership.assignment() if not self.membership.removed else None
        self._assignment = assignment or Assignment({})
        self._publish()
        own = self._own_interfaces(self._assignment)
        if own != self._own:
            self._own = own
            events.append(OwnAddressesChanged(*own))
        return events

    def _publish(self) -> None:
        assert self._assignment is not None
        caps = self._path_caps
        limits = {k: min(v, caps.get(k, v)) for k, v in self._online.items()}
        self.router.update(self._assignment, self._online, limits, self._online)

    def negotiated_limit(self, public_key: bytes) -> int | None:
        """The IP packet limit agreed with an online member (its HELLO and our MTU)."""
        return self._online.get(public_key)

    def set_path_cap(self, public_key: bytes, limit: int | None) -> None:
        """Cap a member's packet limit below the agreed one while its path cannot carry more
        (e.g. a TCP relay instead of direct UDP, or a path not probed yet); None lifts the
        cap. Republishes routes: packets between the cap and the agreed limit are split
        into VPN fragments (no ICMP: the kernel keeps the agreed MTU)."""
        if limit is None:
            changed = self._path_caps.pop(public_key, None) is not None
        else:
            changed = self._path_caps.get(public_key) != limit
            self._path_caps[public_key] = limit
        if changed and self._assignment is not None:
            self._publish()

    def _own_interfaces(
        self, assignment: Assignment
    ) -> tuple[ipaddress.IPv4Interface | None, ipaddress.IPv6Interface | None]:
        params = self.membership.params
        mine = assignment.members.get(self.membership.own_key)
        if params is None or mine is None:
            return None, None
        v4 = (
            None
            if mine.ipv4 is None or params.ipv4_pool is None
            else ipaddress.IPv4Interface(f"{mine.ipv4}/{params.ipv4_pool.prefixlen}")
        )
        v6 = (
            None
            if mine.ipv6 is None or params.ipv6_prefix is None
            else ipaddress.IPv6Interface(f"{mine.ipv6}/{params.ipv6_prefix.prefixlen}")
        )
        return v4, v6

    def own_interfaces(self) -> list[str]:
        """Our TUN addresses with the pool prefix length (``ip addr add`` form)."""
        return [str(i) for i in self._own if i is not None]

    def assignment(self) -> Assignment:
        """The current address table (empty before parameters are known)."""
        return self._assignment or Assignment({})

    # -- data plane --------------------------------------------------------------------------

    def outbound(
        self, buffer: bytearray, offset: int, length: int
    ) -> tuple[bytes, memoryview] | None:
        """Route the packet ``buffer[offset:offset+length]`` read from the TUN device.

        Returns ``(friend public key, lossy custom packet)`` with the packet id written at
        ``buffer[offset - 1]``, or None (dropped and counted, or answered via
        :meth:`take_local_replies`, or split into :meth:`take_extra_packets`).
        """
        view = memoryview(buffer)
        route = self.router.route_outbound(view[offset : offset + length], length)
        if route is None:
            return None
        if self.router.fragments:
            key = route.public_key
            self._extra.extend((key, fragment) for fragment in self.router.take_fragments())
            return None
        buffer[offset - 1] = VPN_DATA_PACKET_ID
        return route.public_key, view[offset - 1 : offset + length]

    def take_extra_packets(self) -> list[tuple[bytes, bytes]]:
        """Lossy packets (VPN or IPv4 fragments) to send after a batch: ``(key, packet)``."""
        extra, self._extra = self._extra, []
        return extra

    def take_local_replies(self) -> list[bytes]:
        """ICMP "too big" replies to write into the TUN device after a batch."""
        return self.router.take_local_replies()

    def inbound(self, public_key: bytes, data: Buffer) -> memoryview | None:
        """The IP packet inside a lossy custom packet from a friend, if it may enter the TUN."""
        view = memoryview(data)
        if len(view) < 1 or view[0] != VPN_DATA_PACKET_ID:
            self.inbound_wrong_id += 1
            return None
        packet = view[1:]
        if not self.router.check_inbound(public_key, packet, len(packet)):
            return None
        return packet

    def inbound_fragment(self, public_key: bytes, data: Buffer, now: float) -> memoryview | None:
        """A lossy 0xE8 fragment from a friend: the IP packet it completes, if it may enter
        the TUN (the same checks as :meth:`inbound`). Same thread as :meth:`inbound`."""
        packet = self.reassembler.receive_untrusted(
            public_key, memoryview(data), self._online.get(public_key), now
        )
        if packet is None or not self.router.check_inbound(public_key, packet, len(packet)):
            return None
        return packet

    def split(self, data: Buffer) -> list[bytes]:
        """A lossy 0xE4 data packet too large for a path found relayed after it was routed:
        its VPN fragments (any thread). Raises ValueError when it cannot be split."""
        view = memoryview(data)
        if len(view) < 1 or view[0] != VPN_DATA_PACKET_ID:
            raise ValueError("not a VPN data packet")
        fragments = split_packet(next(self.router.packet_numbers), view[1:])
        self.router.out_split_late += 1
        return fragments
