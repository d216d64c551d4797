"""Client lists as c-toxcore 0.2.18 keeps them (tox-protocol.md 4.6.1, 4.6.5).

* :class:`CloseList`: 128 buckets of 8, bucket = first bit differing from our DHT key (capped at
  127). A newcomer takes a slot only if its bucket has a bad or empty slot; there is no
  distance-based eviction inside a bucket.
* :class:`FriendClientList`: the 8 nodes closest to one DHT friend's key; a newcomer replaces
  the worst entry (bad first, then farthest) when that entry is bad or farther than it.

Each entry has an IPv4 and an IPv6 association with ``timestamp`` (last proof of life),
``last_pinged`` and the "returned" address some node reported for a key we care about.
Times are seconds on the driver clock; "never" is :data:`NEVER`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tunnel.dht.distance import LCLIENT_LENGTH, bucket_index_int, key_int
from tunnel.wire.ip_port import IPPort, ip_is_lan

PING_INTERVAL_S = 60.0
PING_ROUNDTRIP_S = 2.0
BAD_NODE_TIMEOUT_S = PING_INTERVAL_S + PING_INTERVAL_S + PING_ROUNDTRIP_S  # 122
KILL_NODE_TIMEOUT_S = BAD_NODE_TIMEOUT_S + PING_INTERVAL_S  # 182
LCLIENT_NODES = 8
MAX_FRIEND_CLIENTS = 8
NEVER = float("-inf")


@dataclass(slots=True)
class Assoc:
    """One address family's association of a client entry."""

    ip_port: IPPort | None = None
    timestamp: float = NEVER
    last_pinged: float = NEVER
    ret_ip_port: IPPort | None = None
    ret_timestamp: float = NEVER
    ret_ip_self: bool = False

    def is_bad(self, now: float) -> bool:
        """Not heard from for ``BAD_NODE_TIMEOUT_S`` (an empty association is bad)."""
        return self.timestamp + BAD_NODE_TIMEOUT_S <= now

    def is_killed(self, now: float) -> bool:
        """Not heard from for ``KILL_NODE_TIMEOUT_S``: no longer pinged."""
        return self.timestamp + KILL_NODE_TIMEOUT_S <= now

    def reset_to(self, ip_port: IPPort, now: float) -> None:
        """toxcore ``update_client_with_reset``: new address, fresh timestamp, no returned info."""
        self.ip_port = ip_port
        self.timestamp = now
        self.ret_ip_port = None
        self.ret_timestamp = NEVER
        self.ret_ip_self = False

    def clear(self) -> None:
        """Wipe the association (as toxcore's zeroing does)."""
        self.ip_port = None
        self.timestamp = NEVER
        self.last_pinged = NEVER
        self.ret_ip_port = None
        self.ret_timestamp = NEVER
        self.ret_ip_self = False


@dataclass(slots=True)
class ClientEntry:
    """A node in a client list: its DHT key and its two associations."""

    public_key: bytes
    pk_int: int
    assoc4: Assoc = field(default_factory=Assoc)
    assoc6: Assoc = field(default_factory=Assoc)

    def assoc_for(self, ip_port: IPPort) -> Assoc:
        """The association of ``ip_port``'s address family."""
        return self.assoc6 if ip_port.is_ipv6 else self.assoc4

    def assocs(self) -> tuple[Assoc, Assoc]:
        """Both associations, IPv4 first."""
        return (self.assoc4, self.assoc6)

    def is_bad(self, now: float) -> bool:
        """Both associations bad."""
        return self.assoc4.is_bad(now) and self.assoc6.is_bad(now)

    def newest_assoc(self) -> Assoc:
        """The association with the newer timestamp (IPv4 on a tie), as get_close_nodes picks."""
        return self.assoc4 if self.assoc4.timestamp >= self.assoc6.timestamp else self.assoc6

    def set_pk(self, public_key: bytes) -> None:
        """Replace the key (toxcore's "same address, new key" rule)."""
        self.public_key = public_key
        self.pk_int = key_int(public_key)


def update_existing(
    entries: Iterator[ClientEntry] | list[ClientEntry],
    by_pk: ClientEntry | None,
    public_key: bytes,
    ip_port: IPPort,
    now: float,
) -> tuple[bool, ClientEntry | None]:
    """toxcore ``client_or_ip_port_in_list``: refresh a known key, or rekey a known address.

    ``by_pk`` is the entry holding ``public_key`` (if any). Returns ``(handled, rekeyed)``:
    ``handled`` is True if the list already accounted for the node; ``rekeyed`` is the entry
    whose key was replaced (the caller updates its indexes).
    """
    if by_pk is not None:
        assoc = by_pk.assoc_for(ip_port)
        # Never overwrite a WAN (or unset) address with a LAN one: toxcore treats an unset
        # address as "not LAN" here, and returns without touching the timestamp.
        old_is_lan = assoc.ip_port is not None and ip_is_lan(assoc.ip_port.ip)
        if not old_is_lan and ip_is_lan(ip_port.ip):
            return True, None
        assoc.ip_port = ip_port
        assoc.timestamp = now
        return True, None
    for entry in entries:
        assoc = entry.assoc_for(ip_port)
        if assoc.ip_port == ip_port:
            # Same address, different key: assume the node restarted. 0.2.18 then wipes this
            # very association (it meant to wipe the other family's), so it needs re-proof.
            entry.set_pk(public_key)
            assoc.clear()
            return True, entry
    return False, None


class CloseList:
    """Our close list: 128 buckets x 8 entries keyed by the first bit differing from ``base``."""

    __slots__ = ("_buckets", "_by_pk", "base", "base_int")

    def __init__(self, base: bytes) -> None:
        self.base = base
        self.base_int = key_int(base)
        self._buckets: list[list[ClientEntry]] = [[] for _ in range(LCLIENT_LENGTH)]
        self._by_pk: dict[bytes, ClientEntry] = {}

    def __len__(self) -> int:
        return len(self._by_pk)

    def __iter__(self) -> Iterator[ClientEntry]:
        for bucket in self._buckets:
            yield from bucket

    def get(self, public_key: bytes) -> ClientEntry | None:
        """The entry holding ``public_key``."""
        return self._by_pk.get(public_key)

    def entries(self) -> list[ClientEntry]:
        """All entries (a new list; in insertion order, not bucket order)."""
        return list(self._by_pk.values())

    def bucket(self, index: int) -> list[ClientEntry]:
        """The entries of bucket ``index`` (a copy)."""
        return list(self._buckets[index])

    def _slot_for(self, pk_int: int, now: float) -> tuple[list[ClientEntry], int] | None:
        bucket = self._buckets[bucket_index_int(self.base_int, pk_int)]
        for i, entry in enumerate(bucket):
            if entry.is_bad(now):
                return bucket, i
        if len(bucket) < LCLIENT_NODES:
            return bucket, len(bucket)
        return None

    def can_add(self, public_key: bytes, now: float) -> bool:
        """toxcore ``add_to_close(simulate=true)``: the bucket has a bad or empty slot."""
        return self._slot_for(key_int(public_key), now) is not None

    def add_or_update(self, public_key: bytes, ip_port: IPPort, now: float) -> bool:
        """Refresh a known node or insert a new one (toxcore ``addto_lists`` close-list part).

        Returns True if the node is now in the list (refreshed or inserted).
        """
        if public_key == self.base:
            return False
        handled, rekeyed = update_existing(
            iter(self), self._by_pk.get(public_key), public_key, ip_port, now
        )
        if rekeyed is not None:
            self._by_pk = {entry.public_key: entry for entry in self}
        if handled:
            return True
        pk_int = key_int(public_key)
        slot = self._slot_for(pk_int, now)
        if slot is None:
            return False
        bucket, index = slot
        entry = ClientEntry(public_key, pk_int)
        entry.assoc_for(ip_port).reset_to(ip_port, now)
        if index < len(bucket):
            old = bucket[index]
            self._by_pk.pop(old.public_key, None)
            bucket[index] = entry
        else:
            bucket.append(entry)
        self._by_pk[public_key] = entry
        return True

    def has_good(self, public_key: bytes, ip_port: IPPort, now: float) -> bool:
        """The node is stored with exactly this address and that association is good."""
        entry = self._by_pk.get(public_key)
        if entry is None:
            return False
        assoc = entry.assoc_for(ip_port)
        return assoc.ip_port == ip_port and not assoc.is_bad(now)

    def good_count(self, now: float) -> int:
        """Number of entries with at least one good association."""
        return sum(1 for entry in self._by_pk.values() if not entry.is_bad(now))


class FriendClientList:
    """The up to 8 nodes closest to one DHT friend's key, worst entry first when sorted."""

    __slots__ = ("base", "base_int", "entries")

    def __init__(self, base: bytes) -> None:
        self.base = base
        self.base_int = key_int(base)
        self.entries: list[ClientEntry] = []

    def __iter__(self) -> Iterator[ClientEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, public_key: bytes) -> ClientEntry | None:
        """The entry holding ``public_key``."""
        for entry in self.entries:
            if entry.public_key == public_key:
                return entry
        return None

    def sort(self, now: float) -> None:
        """Bad entries first, then by decreasing distance to the friend key (toxcore order)."""
        base = self.base_int
        self.entries.sort(key=lambda e: (not e.is_bad(now), -(e.pk_int ^ base)))

    def _store_ok(self, entry: ClientEntry, pk_int: int, now: float) -> bool:
        return entry.is_bad(now) or (pk_int ^ self.base_int) < (entry.pk_int ^ self.base_int)

    def can_add(self, public_key: bytes, now: float) -> bool:
        """toxcore ``replace_all`` condition: an empty slot, or one of the two worst entries
        (bad first, then farthest) is bad or farther from the friend key than the newcomer.
        That holds exactly when *any* entry is bad or farther, which needs no sort."""
        if len(self.entries) < MAX_FRIEND_CLIENTS:
            return self.get(public_key) is None
        pk_int = key_int(public_key)
        found = False
        for entry in self.entries:
            if entry.public_key == public_key:
                return False
            found = found or self._store_ok(entry, pk_int, now)
        return found

    def _worst_index(self, now: float) -> int:
        base = self.base_int
        return max(
            range(len(self.entries)),
            key=lambda i: (self.entries[i].is_bad(now), self.entries[i].pk_int ^ base),
        )

    def add_or_update(self, public_key: bytes, ip_port: IPPort, now: float) -> bool:
        """Refresh a known node or store a new one if it qualifies. True if now stored."""
        handled, _ = update_existing(self.entries, self.get(public_key), public_key, ip_port, now)
        if handled:
            return True
        if not self.can_add(public_key, now):
            return False
        entry = ClientEntry(public_key, key_int(public_key))
        entry.assoc_for(ip_port).reset_to(ip_port, now)
        if len(self.entries) < MAX_FRIEND_CLIENTS:
            self.entries.append(entry)
        else:
            self.entries[self._worst_index(now)] = entry
        return True
