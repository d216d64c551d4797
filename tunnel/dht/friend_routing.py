"""Reaching a DHT friend through the nodes that know it, and toxcore's NAT hole punching.

tox-protocol.md sections 4.8 (DHT requests routed to a friend: ``route_to_friend``,
``routeone_to_friend``) and 4.9 (NAT ping request/response over those routes, then
``punch_holes`` with guessed ports: :mod:`tunnel.dht.hole_punch`). A mixin of
:class:`tunnel.dht.core.DhtCore`, which owns the state it reads (friend lists, keys, counters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tunnel.crypto import random_nonce
from tunnel.dht.close_list import BAD_NODE_TIMEOUT_S, MAX_FRIEND_CLIENTS
from tunnel.dht.events import DhtStats
from tunnel.dht.hole_punch import PUNCH_INTERVAL_S, common_ip, guess_ports
from tunnel.errors import DecryptError
from tunnel.wire.dht import REQUEST_ID_NAT_PING, DhtRequest, NatPing
from tunnel.wire.ip_port import IPPort

if TYPE_CHECKING:
    from tunnel.dht.core import DhtFriend


class FriendRouting:
    """DHT requests to friends and NAT hole punching, for :class:`~tunnel.dht.core.DhtCore`."""

    public_key: bytes
    friends: dict[bytes, DhtFriend]
    stats: DhtStats
    _rng: Callable[[int], bytes]
    _last_tick: float

    # Provided by DhtCore.
    def _send(self, ip_port: IPPort, data: bytes) -> None:
        raise NotImplementedError

    def _shared_key(self, peer_pk: bytes) -> bytes:
        raise NotImplementedError

    def _send_ping_request(self, ip_port: IPPort, peer_pk: bytes, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ routing

    def friend_ip_port(self, dht_pk: bytes, now: float | None = None) -> IPPort | None:
        """The friend's own direct address if it is good (IPv6 first). toxcore
        ``dht_getfriendip``."""
        if now is None:
            now = self._last_tick
        friend = self.friends.get(dht_pk)
        if friend is None:
            return None
        entry = friend.clients.get(dht_pk)
        if entry is None:
            return None
        for assoc in (entry.assoc6, entry.assoc4):
            if assoc.ip_port is not None and not assoc.is_bad(now):
                return assoc.ip_port
        return None

    # ------------------------------------------------------------------ sending

    def send_dht_request(self, receiver_pk: bytes, request_id: int, data: bytes) -> bytes:
        """A sealed DHT request (0x20) to ``receiver_pk``; route it with ``route_to_friend``.

        Raises:
            DecryptError: ``receiver_pk`` is not a usable Curve25519 key (e.g. low order).
        """
        key = self._shared_key(receiver_pk)
        return DhtRequest.seal(
            receiver_pk, self.public_key, key, random_nonce(self._rng), request_id, data
        ).encode()

    def route_to_friend(self, dht_pk: bytes, packet: bytes, now: float) -> int:
        """Send ``packet`` through every node that reported the friend's address (needs at
        least 2). Returns how many copies were sent. toxcore ``route_to_friend``."""
        routes = self._friend_routes(dht_pk, now)
        if len(routes) < MAX_FRIEND_CLIENTS // 4:
            return 0
        for ip_port in routes:
            self._send(ip_port, packet)
        return len(routes)

    def send_to_friend(self, dht_pk: bytes, request_id: int, data: bytes, now: float) -> int:
        """Seal a DHT request for ``dht_pk`` and :meth:`route_to_friend` it; never raises for
        a bad key (counted in ``unusable_keys``). Returns how many copies were sent."""
        try:
            packet = self.send_dht_request(dht_pk, request_id, data)
        except DecryptError:
            self.stats.unusable_keys += 1
            return 0
        return self.route_to_friend(dht_pk, packet, now)

    def routeone_to_friend(self, dht_pk: bytes, packet: bytes, now: float) -> bool:
        """Send ``packet`` through one random node that reported the friend's address."""
        routes = self._friend_routes(dht_pk, now)
        if not routes:
            return False
        self._send(routes[int.from_bytes(self._rng(4), "big") % len(routes)], packet)
        return True

    # ------------------------------------------------------------------ NAT traversal

    def _friend_routes(self, dht_pk: bytes, now: float) -> list[IPPort]:
        """Addresses of nodes in the friend's list that reported the friend's address."""
        friend = self.friends.get(dht_pk)
        if friend is None:
            return []
        routes: list[IPPort] = []
        for entry in friend.clients:
            for assoc in (entry.assoc4, entry.assoc6):
                if (
                    assoc.ip_port is not None
                    and assoc.ret_ip_port is not None
                    and assoc.ret_timestamp + BAD_NODE_TIMEOUT_S > now
                    and not assoc.is_bad(now)
                ):
                    routes.append(assoc.ip_port)
                    break
        return routes

    def _friend_iplist(self, friend: DhtFriend, now: float) -> list[IPPort]:
        """toxcore ``friend_iplist``: addresses nodes reported for the friend; empty if we
        already have a good direct entry for it."""
        if self.friend_ip_port(friend.public_key, now) is not None:
            return []
        addresses: list[IPPort] = []
        for entry in friend.clients:
            for assoc in (entry.assoc4, entry.assoc6):
                if assoc.ret_ip_port is not None and assoc.ret_timestamp + BAD_NODE_TIMEOUT_S > now:
                    addresses.append(assoc.ret_ip_port)
                    break
        return addresses

    def _send_nat_ping(
        self, friend: DhtFriend, is_response: bool, ping_id: bytes, now: float
    ) -> bool:
        data = NatPing(is_response, ping_id).encode()
        try:
            packet = self.send_dht_request(friend.public_key, REQUEST_ID_NAT_PING, data)
        except DecryptError:
            self.stats.unusable_keys += 1
            return False
        if is_response:
            return self.routeone_to_friend(friend.public_key, packet, now)
        return self.route_to_friend(friend.public_key, packet, now) > 0

    def _handle_nat_ping(self, sender_pk: bytes, ping: NatPing, now: float) -> None:
        friend = self.friends.get(sender_pk)
        if friend is None or friend.fake:
            self.stats.dropped_not_friend += 1
            return
        if not ping.is_response:
            self._send_nat_ping(friend, True, ping.ping_id, now)
            friend.nat.recv_nat_ping_timestamp = now
            return
        if ping.ping_id == friend.nat.nat_ping_id:
            friend.nat.nat_ping_id = self._rng(8)
            friend.nat.hole_punching = True
        else:
            self.stats.dropped_unsolicited += 1

    def _do_nat(self, friend: DhtFriend, now: float) -> None:
        """toxcore ``do_NAT`` for one friend."""
        addresses = self._friend_iplist(friend, now)
        if len(addresses) < MAX_FRIEND_CLIENTS // 2:
            return
        nat = friend.nat
        if nat.nat_ping_timestamp + PUNCH_INTERVAL_S < now:
            self._send_nat_ping(friend, False, nat.nat_ping_id, now)
            nat.nat_ping_timestamp = now
        if (
            nat.hole_punching
            and nat.punching_timestamp + PUNCH_INTERVAL_S < now
            and nat.recv_nat_ping_timestamp + PUNCH_INTERVAL_S * 2 >= now
        ):
            ip = common_ip(addresses, MAX_FRIEND_CLIENTS // 2)
            if ip is None:
                return
            ports = [a.port for a in addresses if a.ip == ip]
            for port in guess_ports(ports, nat, now):
                self.stats.hole_punch_pings_sent += 1
                self._send_ping_request(IPPort(ip, port), friend.public_key, now)
            nat.punching_timestamp = now
            nat.hole_punching = False
