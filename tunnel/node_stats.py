"""The node's statistics snapshot: every layer's counters and each friend's path in one
:class:`~tunnel.node_types.NodeStatistics` (what :meth:`tunnel.node.Node.statistics` returns).

It implements no protocol section of its own: it reads the state of the DHT (tox-protocol.md
section 4), the onion client (5), net_crypto sessions (6), the TCP relay pool (7) and the
friend connections (8) as the running node keeps them. Split out of ``tunnel/node.py`` for
size; sans-IO (the node passes the time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunnel.node_types import FriendStatistics, NodeStatistics

if TYPE_CHECKING:
    from tunnel.node import Node


def node_statistics(node: Node, now: float) -> NodeStatistics:
    """A snapshot of ``node`` and every friend (path, RTT, rates) at ``now``."""
    friends: list[FriendStatistics] = []
    for saved in node.profile.friends:
        pk = saved.public_key
        session = node.netcrypto.statistics(pk)
        online = node.is_online(pk)
        friends.append(
            FriendStatistics(
                public_key=pk,
                online=online,
                path=node.friend_path(pk),
                dht_public_key=node.friend_dht_public_key(pk),
                rtt_s=session.srtt_s if session is not None else None,
                send_rate_pkt_s=session.rate_pkt_s if session is not None else 0.0,
                delivery_rate_pkt_s=(session.delivery_rate_pkt_s if session is not None else 0.0),
                sent_bytes=session.sent_bytes if session is not None else 0,
                received_bytes=session.received_bytes if session is not None else 0,
                resent_packets=session.resent_packets if session is not None else 0,
                send_queue=session.send_queue if session is not None else 0,
            )
        )
    dht_stats = node.dht.statistics()
    return NodeStatistics(
        udp_port=node.udp_port,
        dht_connected=node.options.use_udp and node.dht.is_connected(now),
        dht_close_nodes=dht_stats.close_nodes,
        onion_connected=node.onion.connected,
        tcp_relays_connected=len(node.relays.pool.connected_relays()),
        udp_datagrams_sent=node.udp.sent if node.udp is not None else 0,
        udp_datagrams_received=node.udp.received if node.udp is not None else 0,
        tcp_send_failures=node.tcp_send_failures,
        glue_errors=node.glue_errors,
        friends=tuple(friends),
    )
