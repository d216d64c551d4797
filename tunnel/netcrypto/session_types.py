"""States, events, errors and statistics of a net_crypto session (tox-protocol.md 6.3-6.8).

The vocabulary of :class:`tunnel.netcrypto.session.Session` (which re-exports every name):
its connection states (cookie request, handshake, not confirmed, established, closed), the
events it reports to :class:`~tunnel.netcrypto.core.NetCrypto`, and its counter snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKET_BUFFER_SIZE = 32768
"""Packets a session's send and receive windows hold (toxcore CRYPTO_PACKET_BUFFER_SIZE)."""
PACKET_NUMBER_MASK = 0xFFFFFFFF
"""Lossless packet numbers go on the wire mod 2**32 (a session counts them unbounded)."""


class SendQueueFull(Exception):
    """The lossless send queue is full; wait for :meth:`Session.send_capacity` to rise."""


class NotConnected(Exception):
    """The session is not established (or is closed)."""


# ----------------------------------------------------------------------------- states


@dataclass(frozen=True, slots=True)
class CookieRequesting:
    """Waiting for a cookie response to our (resent) cookie request."""

    echo_id: bytes
    packet: bytes
    tries: int
    last_sent: float


@dataclass(frozen=True, slots=True)
class HandshakeSent:
    """Our handshake is out; waiting for the peer's."""

    packet: bytes
    tries: int
    last_sent: float


@dataclass(frozen=True, slots=True)
class NotConfirmed:
    """Both handshakes known; waiting for the first data packet. Our handshake is resent."""

    packet: bytes
    tries: int
    last_sent: float
    data_key: bytes


@dataclass(frozen=True, slots=True)
class Established:
    """Data flows both ways."""

    data_key: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """Finished; ``reason`` says why."""

    reason: str


State = CookieRequesting | HandshakeSent | NotConfirmed | Established | Closed


@dataclass(frozen=True, slots=True)
class PeerHandshake:
    """A handshake that passed every check (cookie ours and fresh, box opens, hash matches)."""

    real_pk: bytes
    dht_pk: bytes
    base_nonce: bytes
    session_pk: bytes
    other_cookie: bytes


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SessionUp:
    """The session became established."""


@dataclass(frozen=True, slots=True)
class SessionDown:
    """The session closed (kill packet, handshake timeout, local close, key change)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Lossless:
    """An in-order lossless packet ``[id][data]`` (id 16..191)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Lossy:
    """A lossy packet ``[id][data]`` (id 192..254)."""

    payload: bytes


SessionEvent = SessionUp | SessionDown | Lossless | Lossy


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of one session's counters (trio naming: ``statistics()``)."""

    state: str
    sent_packets: int
    sent_bytes: int
    resent_packets: int
    received_packets: int
    received_bytes: int
    delivered_lossless: int
    delivered_lossy: int
    send_queue: int
    unacked: int
    rate_pkt_s: float
    delivery_rate_pkt_s: float
    srtt_s: float
    loss_events: int
    dropped: dict[str, int]
