"""The VPN routing table: destination address -> member, source checks, drop counters.

Issue 9 "Data path" and "Bad input". Sans-IO and allocation-light, called once per packet by
the data-path threads (:mod:`tunnel.io.tun`):

* :meth:`VpnRouter.route_outbound` for a packet read from the TUN device: checks the header
  (:func:`tunnel.vpn.ip.check_packet`), looks the destination up and returns the
  :class:`Route` (member key plus its packet limit) to send it to, or ``None`` when the packet
  is dropped. Packets for unknown addresses, multicast, offline members are dropped and
  counted. A packet larger than the member's current limit (its path's cap) but within the
  limit agreed with one of our own members is split into VPN fragments
  (:mod:`tunnel.wire.vpn_fragment`, :meth:`take_fragments`): our members never get ICMP from
  us for a size within the agreed MTU (the kernel would keep a smaller MTU for 10 minutes).
  Any other too-big packet gets an ICMP "too big" reply queued for the TUN device
  (:meth:`take_local_replies`), or, for IPv4 without DF, is split into IP fragments;
* :meth:`VpnRouter.check_inbound` for a packet a member sent us: the header must check, the
  source must be one of that member's own addresses (anti-spoofing: a member may only send
  from its own addresses), the destination one of ours, the size within our TUN MTU.

Threading: the table is published as immutable dicts replaced wholesale by
:meth:`VpnRouter.update` (the control plane, on Trio), so the data-path threads read a
consistent snapshot without locks. The outbound methods must be called from one thread and
:meth:`check_inbound` from one thread (possibly another); each side has its own counters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields

from tunnel.vpn.addressing import Assignment
from tunnel.vpn.icmp import too_big_reply
from tunnel.vpn.ip import (
    Buffer,
    check_packet,
    dst_address,
    ipv4_dont_fragment,
    is_multicast,
    src_address,
)
from tunnel.vpn.ip import fragment_ipv4 as _fragment_ipv4
from tunnel.wire.vpn import VPN_DATA_PACKET_ID
from tunnel.wire.vpn_fragment import FRAGMENT_DATA_BYTES, split_packet

DEFAULT_MEMBER_PACKET_LIMIT_BYTES = 1372
"""Largest IP packet in one toxcore lossy custom packet: 1373 (MAX_CRYPTO_DATA_SIZE) - id byte."""
DEFAULT_TUN_MTU_BYTES = DEFAULT_MEMBER_PACKET_LIMIT_BYTES


@dataclass(frozen=True, slots=True)
class Route:
    """Where an outbound packet goes: the member's key and the largest packet it takes."""

    public_key: bytes
    packet_limit_bytes: int
    """The largest packet sent whole now (the agreed limit, or its path's smaller cap)."""
    split_limit_bytes: int = 0
    """Packets larger than ``packet_limit_bytes`` up to this size are split into VPN
    fragments (the limit agreed with one of our own members; 0: never split)."""


@dataclass(frozen=True)
class RouterStats:
    """A snapshot of the router's counters (packets)."""

    out_routed: int = 0
    out_fragmented: int = 0
    out_split: int = 0
    out_split_late: int = 0
    """Split on the control plane: routed whole, but the path was relayed by then."""
    out_malformed: int = 0
    out_no_route: int = 0
    out_multicast: int = 0
    out_offline: int = 0
    out_too_big: int = 0
    in_accepted: int = 0
    in_malformed: int = 0
    in_unknown_member: int = 0
    in_spoofed: int = 0
    in_not_for_us: int = 0
    in_oversize: int = 0


class VpnRouter:
    """Routes between the TUN device and members (see module docstring)."""

    def __init__(self, own_key: bytes, tun_mtu: int = DEFAULT_TUN_MTU_BYTES) -> None:
        self.own_key = own_key
        self.tun_mtu = tun_mtu
        self._routes: dict[bytes, Route] = {}  # packed address -> route (online members only)
        self._known: frozenset[bytes] = frozenset()  # every member address, online or not
        self._sources: dict[bytes, frozenset[bytes]] = {}  # member key -> its addresses
        self._own: frozenset[bytes] = frozenset()
        self.local_replies: list[bytes] = []
        """ICMP replies waiting to be written into the TUN device (see take_local_replies)."""
        self.fragments: list[bytes] = []
        """Non-empty right after route_outbound split a packet: the lossy packets (id byte
        included) to send instead."""
        self.packet_numbers = itertools.count()
        """Numbers for split packets (``next()`` is atomic: any thread may split)."""
        # counters: plain ints, each written by one thread only
        self.out_routed = 0
        self.out_fragmented = 0
        self.out_split = 0
        self.out_split_late = 0  # the one counter written by the control plane (engine.split)
        self.out_malformed = 0
        self.out_no_route = 0
        self.out_multicast = 0
        self.out_offline = 0
        self.out_too_big = 0
        self.in_accepted = 0
        self.in_malformed = 0
        self.in_unknown_member = 0
        self.in_spoofed = 0
        self.in_not_for_us = 0
        self.in_oversize = 0

    # -- control plane -----------------------------------------------------------------------

    def update(
        self,
        assignment: Assignment,
        online: Iterable[bytes],
        packet_limits: dict[bytes, int] | None = None,
        split_limits: dict[bytes, int] | None = None,
    ) -> None:
        """Publish a new table: everyone's addresses, who is online, per-member limits
        (``split_limits``: the limits agreed with our own members, see Route)."""
        limits = packet_limits or {}
        split = split_limits or {}
        online_set = frozenset(online)
        routes: dict[bytes, Route] = {}
        known: set[bytes] = set()
        sources: dict[bytes, frozenset[bytes]] = {}
        own: frozenset[bytes] = frozenset()
        for key, member in assignment.members.items():
            addresses = frozenset(a.packed for a in (member.ipv4, member.ipv6) if a is not None)
            if key == self.own_key:
                own = addresses
                continue
            sources[key] = addresses
            known.update(addresses)
            if key in online_set:
                limit = limits.get(key, DEFAULT_MEMBER_PACKET_LIMIT_BYTES)
                split_limit = split.get(key, 0)
                splits = split_limit > limit >= FRAGMENT_DATA_BYTES
                route = Route(key, limit, split_limit if splits else 0)
                for address in addresses:
                    routes[address] = route
        self._routes, self._known, self._sources, self._own = routes, frozenset(known), sources, own

    def member_addresses(self, public_key: bytes) -> frozenset[bytes]:
        """The packed addresses a member may send from (empty when unknown)."""
        return self._sources.get(public_key, frozenset())

    # -- outbound (TUN -> member) ------------------------------------------------------------

    def route_outbound(self, packet: Buffer, length: int) -> Route | None:
        """Where to send ``packet[:length]`` read from the TUN device, or None (dropped).

        A packet too big for the member's path but within its agreed limit queues VPN
        fragments (:meth:`take_fragments`) and returns the route they go to; one too big for
        the agreed limit queues an ICMP reply (:meth:`take_local_replies`) and returns None,
        or for IPv4 without DF queues its IP fragments and returns the route.
        """
        version = check_packet(packet, length)
        if version < 0:
            self.out_malformed += 1
            return None
        dst = dst_address(packet, version)
        route = self._routes.get(dst)
        if route is None:
            if dst in self._known:
                self.out_offline += 1
            elif is_multicast(dst) or dst == b"\xff\xff\xff\xff":
                self.out_multicast += 1
            else:
                self.out_no_route += 1
            return None
        if length > route.packet_limit_bytes:
            if length <= route.split_limit_bytes:
                self.fragments = split_packet(next(self.packet_numbers), packet[:length])
                self.out_split += 1
                return route
            if version == 4 and not ipv4_dont_fragment(packet):
                try:
                    pieces = _fragment_ipv4(packet[:length], route.packet_limit_bytes)
                except ValueError:  # a limit below header + 8 bytes: cannot split
                    self.out_too_big += 1
                    return None
                self.fragments = [bytes([VPN_DATA_PACKET_ID]) + piece for piece in pieces]
                self.out_fragmented += 1
                return route
            mtu = max(route.packet_limit_bytes, route.split_limit_bytes)
            reply = too_big_reply(packet, length, version, mtu)
            if reply is not None:
                self.local_replies.append(reply)
            self.out_too_big += 1
            return None
        self.out_routed += 1
        return route

    def take_local_replies(self) -> list[bytes]:
        """ICMP replies to write into the TUN device (emptied by the call)."""
        replies, self.local_replies = self.local_replies, []
        return replies

    def take_fragments(self) -> list[bytes]:
        """The lossy packets (VPN or IP fragments, id byte included) of the last packet split,
        to send instead of it (emptied)."""
        fragments, self.fragments = self.fragments, []
        return fragments

    # -- inbound (member -> TUN) -------------------------------------------------------------

    def check_inbound(self, public_key: bytes, packet: Buffer, length: int) -> bool:
        """True when ``packet[:length]`` from member ``public_key`` may go into the TUN."""
        sources = self._sources.get(public_key)
        if sources is None:
            self.in_unknown_member += 1
            return False
        if length > self.tun_mtu:
            self.in_oversize += 1
            return False
        version = check_packet(packet, length)
        if version < 0:
            self.in_malformed += 1
            return False
        if src_address(packet, version) not in sources:
            self.in_spoofed += 1
            return False
        if dst_address(packet, version) not in self._own:
            self.in_not_for_us += 1
            return False
        self.in_accepted += 1
        return True

    def statistics(self) -> RouterStats:
        """A frozen snapshot of every counter."""
        return RouterStats(**{f.name: getattr(self, f.name) for f in fields(RouterStats)})
