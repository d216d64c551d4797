""":class:`ToxPeerFactory`: real toxcore peers on pool ports, bootstrapped off tox-bootstrapd.

Used by the ``tox_peer_factory`` pytest fixture (tests/conftest.py), which kills every peer at
teardown even when the test fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_process import ToxPeerProcess


class ToxPeerFactory:
    """Creates :class:`ToxPeer` objects on ports from a :class:`PortPool` and kills them all.

    ``factory("a", bootstrap=bsd)`` bootstraps the new peer off ``bsd`` (a
    :class:`~tunnel.testing.bootstrapd.Bootstrapd`, or several) and adds its TCP relays.
    Other keyword arguments go to :class:`ToxPeer`. With ``tcp_server=True`` the peer also
    runs a TCP relay server on a pool port. :meth:`process` makes a :class:`ToxPeerProcess`.
    """

    def __init__(self, port_pool: PortPool, ports_per_peer: int = 3) -> None:
        self.port_pool = port_pool
        self.ports_per_peer = ports_per_peer
        self.peers: list[ToxPeer | ToxPeerProcess] = []

    def __call__(
        self,
        name: str = "tox",
        *,
        bootstrap: Bootstrapd | Sequence[Bootstrapd] | None = None,
        tcp_relays: bool = True,
        tcp_server: bool = False,
        **kwargs: Any,
    ) -> ToxPeer:
        peer = ToxPeer(name, **self._port_kwargs(tcp_server, kwargs))
        self.peers.append(peer)
        _bootstrap(peer, bootstrap, tcp_relays)
        return peer

    def process(
        self,
        name: str = "tox",
        *,
        bootstrap: Bootstrapd | Sequence[Bootstrapd] | None = None,
        tcp_relays: bool = True,
        tcp_server: bool = False,
        **kwargs: Any,
    ) -> ToxPeerProcess:
        """Like calling the factory, but the peer runs in a child process."""
        peer = ToxPeerProcess(name, **self._port_kwargs(tcp_server, kwargs))
        self.peers.append(peer)
        _bootstrap(peer, bootstrap, tcp_relays)
        return peer

    def _port_kwargs(self, tcp_server: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("udp", True) and "start_port" not in kwargs:
            ports = self.port_pool.allocate(self.ports_per_peer)
            kwargs["start_port"], kwargs["end_port"] = ports[0], ports[-1]
        if tcp_server:
            kwargs["tcp_port"] = self.port_pool.allocate_one()
        return kwargs

    def kill_all(self) -> None:
        """Kill every peer made so far (idempotent); one failing kill does not spare the rest."""
        errors: list[BaseException] = []
        for peer in self.peers:
            try:
                peer.kill()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def _bootstrap(
    peer: ToxPeer | ToxPeerProcess,
    bootstrap: Bootstrapd | Sequence[Bootstrapd] | None,
    tcp_relays: bool,
) -> None:
    if bootstrap is None:
        nodes: Sequence[Bootstrapd] = ()
    elif isinstance(bootstrap, Bootstrapd):
        nodes = (bootstrap,)
    else:
        nodes = bootstrap
    for bsd in nodes:
        peer.bootstrap(bsd.host, bsd.udp_port, bsd.public_key)
        if tcp_relays:
            for port in bsd.tcp_ports:
                peer.add_tcp_relay(bsd.host, port, bsd.public_key)
