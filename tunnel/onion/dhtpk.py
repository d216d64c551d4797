"""DHT-PK announcements: telling friends our DHT key, learning theirs (tox-protocol.md 5.8.1).

c-toxcore 0.2.18 ``onion_client.c``'s DHT public key handling (``send_dhtpk_announce``,
``handle_dhtpk_announce``, ``handle_dht_dhtpk``) on a sans-IO core. Pure bookkeeping:
:class:`tunnel.onion.client.OnionClient` owns one :class:`DhtPkAnnouncements` and moves the
bytes.

Out: while a friend is offline it gets our announcement ``[0x9c][no_replay][our DHT pk]
[up to 4 nodes]`` as onion data every ``ONION_DHTPK_SEND_INTERVAL_S`` and, once we know its DHT
pk, DHT-routed (a DHT request 0x20 with id 0x9c, drained by :meth:`DhtPkAnnouncements.
drain_dht`) every ``DHT_DHTPK_SEND_INTERVAL_S``. ``no_replay`` is Unix seconds (the driver's
clock plus an offset), strictly growing across our announcements.

In: an announcement from a friend, by onion data or DHT-routed (whose DHT pk must equal the
DHT request's sender), sets the friend's DHT pk and yields :class:`FriendDhtKeyLearned` when its
``no_replay`` is above the last one taken; older ones are dropped and counted.

Strangers (an extension of ours, nothing on the wire): an announcement from someone who is not
a friend yet is kept ``STRANGER_DHTPK_KEEP_S`` (toxcore drops it). A friend request comes
together with one, so a request accepted meanwhile has its sender's DHT key at the next tick
instead of after a search for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from tunnel.crypto import KeyPair, Rng
from tunnel.errors import BadPacket, DecryptError
from tunnel.onion.announce import OnionFriend
from tunnel.onion.events import FriendDhtKeyLearned, OnionClientStats, OnionEvent, OnionHooks
from tunnel.onion.paths import is_timeout
from tunnel.wire.onion import DhtPkPayload, DhtPkViaDht

ONION_DHTPK_SEND_INTERVAL_S = 30
DHT_DHTPK_SEND_INTERVAL_S = 20
STRANGER_DHTPK_KEEP_S = 60.0
"""A DHT-PK announcement from someone who is not a friend yet is kept this long."""
MAX_STRANGER_DHTPKS = 16

SendOnionData = Callable[[bytes, bytes, float], int]
"""``send_onion_data(friend real pk, payload, now) -> packets sent`` of the onion client."""


class DhtPkAnnouncements:
    """Our DHT-PK announcements and the ones friends send us (see the module docstring).

    Args:
        real_keys: our long-term key pair (seals and opens the DHT-routed form).
        dht_keys: our DHT key pair (the key we announce).
        rng: randomness.
        hooks: the onion client's hooks (``dhtpk_nodes`` gives the nodes we announce).
        friends: the onion client's friends (shared, not copied).
        stats: the onion client's counters (shared).
        events: the onion client's event queue (shared).
        unix_time_offset: added to ``now`` for ``no_replay``.
    """

    def __init__(
        self,
        real_keys: KeyPair,
        dht_keys: KeyPair,
        rng: Rng,
        hooks: OnionHooks,
        friends: dict[bytes, OnionFriend],
        stats: OnionClientStats,
        events: deque[OnionEvent],
        unix_time_offset: float,
    ) -> None:
        self._real_keys = real_keys
        self._dht_keys = dht_keys
        self._rng = rng
        self._hooks = hooks
        self._friends = friends
        self._stats = stats
        self._events = events
        self._unix_offset = unix_time_offset
        self._last_no_replay = 0
        self._dht_out: list[tuple[bytes, bytes]] = []
        self._strangers: dict[bytes, tuple[float, DhtPkPayload]] = {}
        self._adopted: dict[bytes, tuple[float, DhtPkPayload]] = {}

    def drain_dht(self) -> list[tuple[bytes, bytes]]:
        """Drain DHT-routed announcements: ``(friend DHT pk, data after id 0x9c)``."""
        out, self._dht_out = self._dht_out, []
        return out

    # --- friends coming and going -----------------------------------------------------------

    def adopt(self, public_key: bytes) -> None:
        """A new friend: a kept stranger's announcement is taken at the next :meth:`tick`."""
        kept = self._strangers.pop(public_key, None)
        if kept is not None:
            self._adopted[public_key] = kept

    def forget(self, public_key: bytes) -> None:
        """A friend removed."""
        self._adopted.pop(public_key, None)

    def tick(self, now: float) -> None:
        """Take the announcements adopted since the last tick (if still fresh and a friend)."""
        for public_key, (at, payload) in self._adopted.items():
            if public_key in self._friends and now - at <= STRANGER_DHTPK_KEEP_S:
                self.handle(public_key, payload, now)
        self._adopted.clear()

    # --- receiving --------------------------------------------------------------------------

    def handle_via_dht(self, source_dht_public_key: bytes, data: bytes, now: float) -> None:
        """A DHT request 0x20 with id 0x9c addressed to us (``data`` after the id byte)."""
        try:
            packet = DhtPkViaDht.decode(data)
            payload = packet.open(self._real_keys.secret_key)
        except DecryptError:
            self._stats.dropped_decrypt += 1
            return
        except BadPacket:
            self._stats.dropped_malformed += 1
            return
        if payload.dht_public_key != source_dht_public_key:
            self._stats.dropped_malformed += 1
            return
        self.handle(packet.sender_public_key, payload, now)

    def handle(self, sender: bytes, payload: DhtPkPayload, now: float) -> None:
        """An announcement from ``sender`` (authenticated by its real key)."""
        friend = self._friends.get(sender)
        if friend is None:
            self._stats.dropped_not_friend += 1
            strangers = self._strangers
            strangers.pop(sender, None)
            strangers[sender] = (now, payload)  # the sender is authenticated (its real key)
            while len(strangers) > MAX_STRANGER_DHTPKS:
                del strangers[next(iter(strangers))]
            return
        if payload.no_replay <= friend.last_no_replay:
            self._stats.dropped_replay += 1
            return
        friend.last_no_replay = payload.no_replay
        friend.dht_public_key = payload.dht_public_key
        self._events.append(FriendDhtKeyLearned(sender, payload.dht_public_key, payload.nodes))

    # --- sending ----------------------------------------------------------------------------

    def send_due(self, friend: OnionFriend, now: float, send_onion_data: SendOnionData) -> None:
        """Send an offline friend our announcement by each route that is due."""
        if is_timeout(
            friend.last_dht_pk_onion_sent, ONION_DHTPK_SEND_INTERVAL_S, now
        ) and send_onion_data(friend.public_key, self.payload(now).encode(), now):
            friend.last_dht_pk_onion_sent = now
        if friend.dht_public_key is not None and is_timeout(
            friend.last_dht_pk_dht_sent, DHT_DHTPK_SEND_INTERVAL_S, now
        ):
            sealed = DhtPkViaDht.seal(
                self._rng, self._real_keys, friend.public_key, self.payload(now)
            )
            self._dht_out.append((friend.dht_public_key, sealed.encode()))
            friend.last_dht_pk_dht_sent = now

    def payload(self, now: float) -> DhtPkPayload:
        """A new announcement of ours (each one takes a new ``no_replay``)."""
        no_replay = max(int(now + self._unix_offset), self._last_no_replay + 1)
        self._last_no_replay = no_replay
        nodes = tuple(self._hooks.dhtpk_nodes())[:4]
        return DhtPkPayload(no_replay, self._dht_keys.public_key, nodes)
