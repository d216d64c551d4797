"""One UDP socket's worth of onion roles: relay, announce store and client behind one
:class:`tunnel.core.DatagramCore`, dispatched on the packet kind (tox-protocol.md 3.2, 5).

The real node multiplexes far more (DHT, net_crypto); this is the onion part of that dispatch,
used by the simulations and usable by ``tunnel/node.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tunnel.crypto import KeyPair, Rng
from tunnel.onion.announce_store import ANNOUNCE_STORE_PACKET_KINDS, OnionAnnounceStore
from tunnel.onion.client import ONION_CLIENT_PACKET_KINDS, OnionClient
from tunnel.onion.relay import RELAY_PACKET_KINDS, OnionRelay
from tunnel.wire.ip_port import Addr
from tunnel.wire.packed_node import PackedNode

ONION_PACKET_KINDS = RELAY_PACKET_KINDS | ANNOUNCE_STORE_PACKET_KINDS | ONION_CLIENT_PACKET_KINDS


class OnionStack:
    """Relay + announce store + client (any may be None) as one datagram core."""

    def __init__(
        self,
        relay: OnionRelay | None,
        store: OnionAnnounceStore | None,
        client: OnionClient | None,
    ) -> None:
        self.relay = relay
        self.store = store
        self.client = client
        self.dropped_unknown = 0

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Dispatch one datagram on its first byte; unknown kinds are counted and dropped."""
        kind = data[0] if data else -1
        if kind in RELAY_PACKET_KINDS and self.relay is not None:
            self.relay.receive(data, addr, now)
        elif kind in ANNOUNCE_STORE_PACKET_KINDS and self.store is not None:
            self.store.receive(data, addr, now)
        elif kind in ONION_CLIENT_PACKET_KINDS and self.client is not None:
            self.client.receive(data, addr, now)
        else:
            self.dropped_unknown += 1

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Everything the three roles want sent."""
        out: list[tuple[Addr, bytes]] = []
        for core in (self.relay, self.store, self.client):
            if core is not None:
                out.extend(core.datagrams_to_send())
        return out

    def next_deadline(self) -> float | None:
        """The earliest deadline of the three roles."""
        deadlines = [
            d
            for core in (self.relay, self.store, self.client)
            if core is not None and (d := core.next_deadline()) is not None
        ]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Run each role's timers."""
        for core in (self.relay, self.store, self.client):
            if core is not None:
                core.handle_timer(now)


class _CloseNodes(Protocol):
    def get_close_nodes(
        self, public_key: bytes, count: int = ..., for_lan: bool = ..., now: float | None = ...
    ) -> Sequence[PackedNode]: ...


class _DaemonContext(Protocol):
    @property
    def keypair(self) -> KeyPair: ...
    @property
    def rng(self) -> Rng: ...
    @property
    def dht(self) -> _CloseNodes: ...


def relay_and_store(dht_keys: KeyPair, rng: Rng, dht: _CloseNodes, now: float) -> OnionStack:
    """The onion roles every node plays for others: relay and announce store (no client).

    ``dht`` supplies ``get_close_nodes`` (a :class:`tunnel.dht.core.DhtCore`); LAN nodes are
    asked for and filtered per requester by the store.
    """

    def close_nodes(public_key: bytes, count: int) -> Sequence[PackedNode]:
        return dht.get_close_nodes(public_key, count, True)

    return OnionStack(
        OnionRelay(dht_keys, rng, now),
        OnionAnnounceStore(dht_keys, rng, close_nodes),
        None,
    )


def bootstrapd_core_factory(
    context: _DaemonContext, now: float = 0.0
) -> tuple[frozenset[int], OnionStack]:
    """A ``tunnel.commands.bootstrapd.CORE_FACTORIES`` entry: relay + announce store on the
    daemon's DHT key, so toxcore peers can announce through a ``tunnel bootstrapd``."""
    stack = relay_and_store(context.keypair, context.rng, context.dht, now)
    return RELAY_PACKET_KINDS | ANNOUNCE_STORE_PACKET_KINDS, stack
