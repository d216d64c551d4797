"""Events, injected hooks and statistics of the onion client (:mod:`tunnel.onion.client`).

tox-protocol.md 5.5-5.10: what the client tells the layers above (friend requests, friends'
DHT keys, its own onion status) and what it needs from the DHT and TCP layers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from tunnel.wire.packed_node import PackedNode

# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnionStatusChanged:
    """Our onion connection status changed (``tox_self_get_connection_status`` != NONE)."""

    connected: bool
    tcp: bool


@dataclass(frozen=True, slots=True)
class FriendDhtKeyLearned:
    """A friend told us its DHT pk; ``nodes`` are its DHT nodes (UDP) and TCP relays (tcp).

    The DHT layer should add a DHT friend for ``dht_public_key``, send a nodes request for it
    to each UDP node, and the TCP layer should try the relays.
    """

    public_key: bytes
    dht_public_key: bytes
    nodes: tuple[PackedNode, ...]


@dataclass(frozen=True, slots=True)
class FriendRequestReceived:
    """Someone sent us a friend request with our current nospam."""

    public_key: bytes
    message: bytes


OnionEvent = OnionStatusChanged | FriendDhtKeyLearned | FriendRequestReceived


# --- injected environment -------------------------------------------------------------------


def _no_nodes(count: int) -> Sequence[PackedNode]:
    return ()


def _no_relays() -> Sequence[Hashable]:
    return ()


def _no_dhtpk_nodes() -> Sequence[PackedNode]:
    return ()


def _udp_ok() -> bool:
    return True


@dataclass(slots=True)
class OnionHooks:
    """What the client needs from the DHT and TCP layers (all optional).

    * ``random_dht_nodes(n)``: up to ``n`` DHT nodes to build paths from (toxcore
      ``randfriends_nodes``).
    * ``dht_connected()``: UDP DHT connectivity; when False paths start at a TCP relay.
    * ``dht_non_lan_connected()``: UDP connectivity beyond the LAN; decides whether
      :class:`OnionStatusChanged` says ``tcp`` (toxcore ``dht_non_lan_connected``). None:
      same as ``dht_connected``.
    * ``onion_tcp_relays()``: handles of connected TCP relays usable as node A.
    * ``dhtpk_nodes()``: up to 4 nodes for our DHT-PK announcement: up to 2 connected TCP relays
      (``tcp=True``) followed by DHT close-list nodes.
    """

    random_dht_nodes: Callable[[int], Sequence[PackedNode]] = _no_nodes
    dht_connected: Callable[[], bool] = _udp_ok
    dht_non_lan_connected: Callable[[], bool] | None = None
    onion_tcp_relays: Callable[[], Sequence[Hashable]] = _no_relays
    dhtpk_nodes: Callable[[], Sequence[PackedNode]] = _no_dhtpk_nodes


@dataclass(slots=True)
class OnionClientStats:
    """Counters of the client (dropped input, traffic)."""

    announce_requests_sent: int = 0
    announce_responses: int = 0
    data_packets_sent: int = 0
    data_packets_received: int = 0
    dropped_malformed: int = 0
    dropped_decrypt: int = 0
    dropped_unknown_sendback: int = 0
    dropped_not_friend: int = 0
    dropped_replay: int = 0
