"""Events and statistics of :class:`tunnel.dht.core.DhtCore`."""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.wire.ip_port import IPPort


@dataclass(frozen=True, slots=True)
class FriendIpFound:
    """A DHT friend answered us directly: net_crypto may use this address."""

    public_key: bytes
    ip_port: IPPort


@dataclass(frozen=True, slots=True)
class DhtRequestReceived:
    """A DHT request (0x20) addressed to us with a request id the DHT does not handle itself
    (e.g. 0x9c DHT-PK announcements, for the onion/friend layer)."""

    sender_pk: bytes
    request_id: int
    data: bytes
    source: IPPort


DhtEvent = FriendIpFound | DhtRequestReceived


@dataclass(slots=True)
class DhtStats:
    """Counters; :meth:`tunnel.dht.core.DhtCore.statistics` returns a frozen copy."""

    packets_received: int = 0
    packets_sent: int = 0
    dropped_malformed: int = 0
    dropped_decrypt: int = 0
    dropped_unsolicited: int = 0
    dropped_unknown_kind: int = 0
    dropped_from_self: int = 0
    dropped_unroutable: int = 0
    dropped_not_friend: int = 0
    dropped_lan_discovery: int = 0
    dropped_empty_nodes_response: int = 0
    pings_answered: int = 0
    nodes_answered: int = 0
    nodes_requests_without_answer: int = 0
    nodes_requests_sent: int = 0
    pings_sent: int = 0
    responses_accepted: int = 0
    dht_requests_forwarded: int = 0
    bootstrap_info_answered: int = 0
    hole_punch_pings_sent: int = 0
    unusable_keys: int = 0
    """Keys libsodium refuses (low-order points): nothing is sent to them."""

    @property
    def dropped(self) -> int:
        """Every datagram dropped for any reason."""
        return (
            self.dropped_malformed
            + self.dropped_decrypt
            + self.dropped_unsolicited
            + self.dropped_unknown_kind
            + self.dropped_from_self
            + self.dropped_unroutable
            + self.dropped_not_friend
            + self.dropped_lan_discovery
            + self.dropped_empty_nodes_response
        )


@dataclass(frozen=True, slots=True)
class DhtStatistics:
    """A frozen snapshot of :class:`DhtStats` plus list sizes."""

    packets_received: int
    packets_sent: int
    dropped: int
    dropped_malformed: int
    dropped_decrypt: int
    dropped_unsolicited: int
    dropped_unknown_kind: int
    pings_answered: int
    nodes_answered: int
    nodes_requests_sent: int
    pings_sent: int
    responses_accepted: int
    close_nodes: int
    good_close_nodes: int
    friends: int
