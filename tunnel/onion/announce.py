"""Announce-node lists of the onion client (tox-protocol.md 5.5, 5.10; toxcore ``Onion_Node``).

Our own list holds the 12 nodes closest to our real pk that answered our announce requests;
each friend's list holds the 8 nodes closest to the friend's real pk that answered a search.
Lists are kept in toxcore's order: timed-out entries first, then farthest first, so index 0
is the entry a better node replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnel.crypto import KeyPair
from tunnel.onion.paths import NEVER, is_timeout
from tunnel.wire.onion import ANNOUNCE_IS_STORED_OTHER
from tunnel.wire.packed_node import PackedNode

MAX_ONION_CLIENTS = 8
MAX_ONION_CLIENTS_ANNOUNCE = 12
ONION_NODE_PING_INTERVAL_S = 15
ONION_NODE_TIMEOUT_S = ONION_NODE_PING_INTERVAL_S
ONION_NODE_MAX_PINGS = 3
MAX_STORED_PINGED_NODES = 9
MIN_NODE_PING_TIME_S = 10


@dataclass(slots=True)
class OnionNode:
    """An announce node in our list or in a friend's list (toxcore ``Onion_Node``)."""

    node: PackedNode
    ping_id: bytes = bytes(32)
    data_public_key: bytes = bytes(32)
    is_stored: int = 0
    added_time: float = NEVER
    timestamp: float = NEVER
    last_pinged: float = NEVER
    pings_since_last_response: int = 0
    path_used: int = -1
    skipped_first_round: bool = False

    def timed_out(self, now: float) -> bool:
        """toxcore ``onion_node_timed_out``."""
        return self.timestamp == NEVER or (
            self.pings_since_last_response >= ONION_NODE_MAX_PINGS
            and is_timeout(self.last_pinged, ONION_NODE_TIMEOUT_S, now)
        )


@dataclass(slots=True)
class LastPinged:
    keys: list[tuple[bytes, float]] = field(default_factory=list)
    index: int = 0

    def good_to_ping(self, public_key: bytes, now: float) -> bool:
        for key, when in self.keys:
            if key == public_key and not is_timeout(when, MIN_NODE_PING_TIME_S, now):
                return False
        if len(self.keys) < MAX_STORED_PINGED_NODES:
            self.keys.append((public_key, now))
        else:
            self.keys[self.index % MAX_STORED_PINGED_NODES] = (public_key, now)
        self.index += 1
        return True


@dataclass(slots=True)
class OnionFriend:
    """Search state for one friend (toxcore ``Onion_Friend``)."""

    public_key: bytes
    temp_keys: KeyPair
    nodes: list[OnionNode] = field(default_factory=list)
    is_online: bool = False
    dht_public_key: bytes | None = None
    last_dht_pk_onion_sent: float = NEVER
    last_dht_pk_dht_sent: float = NEVER
    last_no_replay: int = 0
    last_populated: float = NEVER
    time_last_pinged: float = NEVER
    run_count: int = 0
    pings: int = 0
    last_pinged: LastPinged = field(default_factory=LastPinged)


def closer(base: bytes, a: bytes, b: bytes) -> bool:
    """``a`` strictly closer to ``base`` than ``b``."""
    ref = int.from_bytes(base, "big")
    return int.from_bytes(a, "big") ^ ref < int.from_bytes(b, "big") ^ ref


def sort_nodes(nodes: list[OnionNode], reference: bytes, now: float) -> None:
    """toxcore's order: timed-out first, then farthest first (index 0 = worst)."""
    ref = int.from_bytes(reference, "big")
    nodes.sort(
        key=lambda n: (not n.timed_out(now), -(int.from_bytes(n.node.public_key, "big") ^ ref))
    )


def add_to_list(
    nodes: list[OnionNode],
    capacity: int,
    reference: bytes,
    node: PackedNode,
    is_stored: int,
    field_: bytes,
    path_used: int,
    now: float,
) -> bool:
    """toxcore ``client_add_to_list``; True if ``node`` is (now) in the list."""
    sort_nodes(nodes, reference, now)
    entry = next((n for n in nodes if n.node.public_key == node.public_key), None)
    stored = entry is not None
    if entry is None:
        if len(nodes) < capacity:
            entry = OnionNode(node)
            nodes.append(entry)
        elif nodes[0].timed_out(now) or closer(
            reference, node.public_key, nodes[0].node.public_key
        ):
            entry = OnionNode(node)
            nodes[0] = entry
        else:
            return False
    entry.node = node
    if is_stored == ANNOUNCE_IS_STORED_OTHER:
        entry.data_public_key = field_
    else:
        entry.ping_id = field_
    entry.is_stored = is_stored
    entry.timestamp = now
    entry.pings_since_last_response = 0
    if not stored:
        entry.last_pinged = NEVER
        entry.skipped_first_round = False
        entry.added_time = now
    entry.path_used = path_used
    return True


def would_enter(
    nodes: list[OnionNode], capacity: int, reference: bytes, pk: bytes, now: float
) -> bool:
    """toxcore ``client_ping_nodes``: an empty or timed-out slot among the two worst
    entries, or ``pk`` closer than one of them."""
    if len(nodes) < capacity:
        return True
    sort_nodes(nodes, reference, now)
    return any(n.timed_out(now) or closer(reference, pk, n.node.public_key) for n in nodes[:2])
