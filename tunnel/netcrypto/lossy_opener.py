"""Lossy net_crypto data packets opened outside the session (tox-protocol.md 6.5, data packets).

The receiving twin of :mod:`tunnel.netcrypto.lossy_sealer`, for a data path on another thread
(the VPN's data thread, issue 9): a lossy packet that carries nothing new for the session's
reliable half (its acknowledgement and packet number change nothing) needs only the session
key, the nonce rebuild and the replay window, so the thread opens it itself and the Trio
thread never sees it. Everything else (lossless data, requests, kills, acks that move the
send window, packets that do not open) is left to the session: :meth:`LossyOpener.open`
returns None without changing anything, and the caller passes the datagram on as usual.

The nonce rebuild and the replay window are shared with the session's own receive; both take
``session.rx_lock`` around them (the data path sets a real lock there before it opens
anything; cores never import threading).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tunnel.crypto.databox import MIN_DATA_PACKET_BYTES, DataBox
from tunnel.errors import BadPacket, DecryptError
from tunnel.netcrypto.lossy_sealer import NONCE_MOD
from tunnel.netcrypto.session_types import PACKET_BUFFER_SIZE, Established
from tunnel.netcrypto.session_types import PACKET_NUMBER_MASK as _U32
from tunnel.wire.netcrypto import DATA_KIND

if TYPE_CHECKING:
    from tunnel.netcrypto.session import Session

DROPPED = b""
"""What :meth:`LossyOpener.open` returns for a replayed packet: taken (and counted), dropped."""


class UdpSeen(Protocol):
    """Where the time of the last authenticated UDP packet of the peer is kept."""

    last_udp_recv: float


class LossyOpener:
    """Opens one established session's lossy data packets of one id without the session.

    Like :class:`~tunnel.netcrypto.lossy_sealer.LossySealer` it reads the session's receive
    state directly (nonce base, size limits, windows): it is part of the session's data path.
    """

    __slots__ = ("_box", "_path", "max_payload", "packet_id", "session")

    def __init__(self, session: Session, key: bytes, path: UdpSeen, packet_id: int) -> None:
        self.session = session
        self.packet_id = packet_id
        self._path = path
        self.max_payload = session._receive_max
        """The largest payload this opener's box takes (the session's limit when built)."""
        self._box = DataBox(key, self.max_payload)

    def serves(self, session: Session) -> bool:
        """This opener is ``session``'s and still takes every size the session accepts."""
        return self.session is session and self.max_payload == session._receive_max

    def open(self, data: bytes, now: float) -> bytes | None:
        """The payload ``[id][data]`` if this is a fresh lossy packet of our id that changes
        nothing else in the session (then it is recorded as received, the UDP path as alive
        at ``now``); :data:`DROPPED` for a replay of one (counted by the session); else None
        and nothing changed (hand the datagram to the session)."""
        session = self.session
        if (
            not isinstance(session.state, Established)
            or not MIN_DATA_PACKET_BYTES <= len(data) <= session._receive_packet_max
            or data[0] != DATA_KIND
        ):
            return None
        base = session._recv_nonce
        diff = (((data[1] << 8) | data[2]) - base) & 0xFFFF
        nonce = (base + diff) % NONCE_MOD
        try:
            buffer_start, packet_number, payload = self._box.open_untrusted(data, nonce)
        except (DecryptError, BadPacket):
            return None
        if payload[0] != self.packet_id or (buffer_start - session.send_start) & _U32:
            return None  # not ours, or an acknowledgement the send side must see
        recv_start = session.recv_start
        number = recv_start + ((packet_number - recv_start) & _U32)
        if number - recv_start <= PACKET_BUFFER_SIZE and number > session.recv_end:
            return None  # tells of lossless packets we have not seen
        with session.rx_lock:
            if not session.accept_nonce(nonce, diff):
                return DROPPED
        session.received_packets += 1  # counters only: a rare lost update is acceptable
        session.received_bytes += len(data)
        session.delivered_lossy += 1
        self._path.last_udp_recv = now
        return payload
