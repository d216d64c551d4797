"""What :class:`tunnel.node.Node` reports and how it is configured: events, statistics, options.

Friends are identified by their long-term (real) public key everywhere in the node API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunnel.config import BootstrapNode, NodeConfig, ProxyConfig, TcpRelayConfig
from tunnel.io.udp import TOX_PORT_RANGE
from tunnel.wire.large_lossless import DEFAULT_LARGE_LOSSLESS_BYTES

Path = Literal["udp", "tcp"]

GRACEFUL_SHUTDOWN_S = 2.0
"""How long :meth:`tunnel.node.Node.aclose` waits for kill packets to go out."""


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SelfConnectionChanged:
    """Our onion connection (reachable by friends) came up or went down."""

    connected: bool
    tcp: bool


@dataclass(frozen=True, slots=True)
class FriendRequest:
    """Someone who is not our friend asked to become one (accept with
    :meth:`tunnel.node.Node.accept_friend_request`)."""

    public_key: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class FriendConnected:
    """A friend is online; ``path`` is how we reach it right now."""

    public_key: bytes
    path: Path


@dataclass(frozen=True, slots=True)
class FriendDisconnected:
    """A friend went offline (``reason``: why its session ended, for the logs)."""

    public_key: bytes
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FriendDhtKey:
    """We learnt (through the onion or the DHT) the friend's current DHT key."""

    public_key: bytes
    dht_public_key: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """A text message (``action``: a /me action)."""

    public_key: bytes
    text: bytes
    action: bool


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """The friend's net_crypto acknowledged our message ``message_id``."""

    public_key: bytes
    message_id: int


@dataclass(frozen=True, slots=True)
class LosslessPacket:
    """A custom lossless packet ``[160..191][data]``."""

    public_key: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class LossyPacket:
    """A custom lossy packet ``[200..254][data]``."""

    public_key: bytes
    data: bytes


NodeEvent = (
    SelfConnectionChanged
    | FriendRequest
    | FriendConnected
    | FriendDisconnected
    | FriendDhtKey
    | Message
    | ReadReceipt
    | LosslessPacket
    | LossyPacket
)


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True, slots=True)
class FriendStatistics:
    """One friend as the node sees it."""

    public_key: bytes
    online: bool
    path: Path | None
    dht_public_key: bytes | None
    rtt_s: float | None
    send_rate_pkt_s: float
    delivery_rate_pkt_s: float
    sent_bytes: int
    received_bytes: int
    resent_packets: int
    send_queue: int


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    """A snapshot of the whole node."""

    udp_port: int | None
    dht_connected: bool
    dht_close_nodes: int
    onion_connected: bool
    tcp_relays_connected: int
    udp_datagrams_sent: int
    udp_datagrams_received: int
    tcp_send_failures: int
    glue_errors: int
    friends: tuple[FriendStatistics, ...]


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How the node talks to the network (a :class:`tunnel.config.NodeConfig` minus files).

    ``udp_host`` binds one address (``None``: dual stack ``::`` or ``0.0.0.0``). With a proxy
    UDP is forced off (everything goes through TCP relays, as toxcore does).
    """

    udp_enabled: bool = True
    udp_host: str | None = None
    ipv6: bool = True
    port_start: int = TOX_PORT_RANGE[0]
    port_end: int = TOX_PORT_RANGE[1]
    lan_discovery: bool = False
    hole_punching: bool = True
    proxy: ProxyConfig | None = None
    bootstrap: tuple[BootstrapNode, ...] = ()
    tcp_relays: tuple[TcpRelayConfig, ...] = ()
    friends: tuple[bytes, ...] = field(default=())
    """Real public keys to keep as confirmed friends (no request needed)."""
    name: bytes = b"tunnel"
    large_lossless_bytes: int = DEFAULT_LARGE_LOSSLESS_BYTES
    """Lossless packets up to this size with friends that are ``tunnel`` nodes too, whole
    over a direct path proven to carry them (issue 8, :mod:`tunnel.netcrypto.large`); 0: toxcore's
    1373 bytes with everyone."""

    @property
    def use_udp(self) -> bool:
        """UDP is used: enabled and no proxy."""
        return self.udp_enabled and self.proxy is None

    @classmethod
    def from_config(cls, config: NodeConfig) -> NodeOptions:
        """The options a ``node`` config file asks for."""
        return cls(
            udp_enabled=config.udp.enabled,
            ipv6=config.udp.ipv6,
            port_start=config.udp.port_start,
            port_end=config.udp.port_end,
            lan_discovery=config.lan_discovery,
            hole_punching=config.hole_punching,
            proxy=config.proxy,
            bootstrap=config.bootstrap,
            tcp_relays=config.tcp_relays,
            friends=tuple(f.public_key for f in config.friends),
        )
