"""Where the Node starts from and what it keeps for the next start (see :mod:`tunnel.node`).

tox-protocol.md 4.7 (bootstrapping) and 9.7 (persistence): at start the DHT queries the DHT
nodes saved in the profile and the pool connects to the saved TCP relays; the configured
bootstrap nodes (host names resolved, IPv6 results only with IPv6 on) go to the DHT and to the
onion client's bootstrap path nodes, their TCP ports and the configured relays to the relay
pool. At shutdown the closest good DHT nodes and the connected relays (8 of each, as toxcore)
replace the saved ones, unless there are none.

:class:`NodeBootstrap` is a mixin of :class:`tunnel.node.Node`, split out of ``tunnel/node.py``
for size (it lives in ``tunnel/io`` because it runs on Trio); it is not used on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from tunnel.crypto import KeyPair
from tunnel.dht.core import DhtCore
from tunnel.io.tcp_relay import RelayPoolDriver
from tunnel.node_types import NodeOptions
from tunnel.onion.client import OnionClient
from tunnel.profile import Profile
from tunnel.wire.ip_port import IPPort
from tunnel.wire.packed_node import PackedNode

SAVED_NODES = 8
"""DHT nodes and TCP relays kept in the profile (toxcore saves up to 8 of each kind too)."""

log = logging.getLogger("tunnel.node")


class NodeBootstrap:
    """Bootstrapping and the saved network; :class:`tunnel.node.Node` sets every attribute
    below."""

    profile: Profile
    options: NodeOptions
    dht_keys: KeyPair
    dht: DhtCore
    onion: OnionClient
    relays: RelayPoolDriver

    if TYPE_CHECKING:

        def _connected_relay_nodes(self) -> list[PackedNode]: ...

    async def _resolve(self, host: str, port: int) -> list[IPPort]:
        try:
            return [IPPort.parse(host, port)]
        except ValueError:
            pass
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve %s: %s", host, exc)
            return []
        out: list[IPPort] = []
        for family, *_, sockaddr in infos:
            if family == trio.socket.AF_INET6 and not self.options.ipv6:
                continue
            ip_port = IPPort.parse(str(sockaddr[0]), int(sockaddr[1]))
            if ip_port not in out:
                out.append(ip_port)
        return out

    def _remember_network(self) -> None:
        """Keep good DHT nodes and connected relays in the profile for the next start."""
        saved = self.profile.savedata
        nodes: tuple[PackedNode, ...] = ()
        if self.options.use_udp:
            now = trio.current_time()
            nodes = tuple(
                self.dht.get_close_nodes(self.dht_keys.public_key, SAVED_NODES, True, now)
            )
        relays = tuple(self._connected_relay_nodes()[:SAVED_NODES])
        self.profile.update(
            dht_nodes=nodes or saved.dht_nodes, tcp_relays=relays or saved.tcp_relays
        )

    async def _bootstrap(self) -> None:
        opts = self.options
        now = trio.current_time()
        saved = self.profile.savedata
        for packed in saved.dht_nodes[:SAVED_NODES] if opts.use_udp else ():
            self.dht.bootstrap(packed.public_key, packed.ip_port, now)
        for packed in saved.tcp_relays[:SAVED_NODES]:
            host, port = packed.ip_port.to_addr()
            self.relays.add_relay(host, port, packed.public_key)
        for node in opts.bootstrap:
            for ip_port in await self._resolve(node.host, node.port):
                if opts.use_udp:
                    self.dht.bootstrap(node.public_key, ip_port, now)
                self.onion.add_bootstrap_node(PackedNode(ip_port, node.public_key))
            for tcp_port in node.tcp_ports:
                for ip_port in (await self._resolve(node.host, tcp_port))[:1]:
                    host, port = ip_port.to_addr()
                    self.relays.add_relay(host, port, node.public_key)
        for relay in opts.tcp_relays:
            for ip_port in (await self._resolve(relay.host, relay.port))[:1]:
                host, port = ip_port.to_addr()
                self.relays.add_relay(host, port, relay.public_key)
