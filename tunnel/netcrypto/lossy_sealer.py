"""Lossy net_crypto data packets built outside the session (tox-protocol.md 6.5, data packets).

For a data path on another thread (the VPN's TUN reader, issue 9): sealing a lossy packet
needs only the session key, a nonce from the session's atomic counter and the session's
current ``recv_start`` / next packet number, so the hot path does not go through the
:class:`~tunnel.netcrypto.session.Session` object on the Trio thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunnel.crypto.databox import DataBox
from tunnel.netcrypto.session_types import Established
from tunnel.wire.netcrypto import (
    MAX_CRYPTO_DATA_SIZE_BYTES,
    PACKET_ID_LOSSY_END,
    PACKET_ID_LOSSY_START,
)

if TYPE_CHECKING:
    from tunnel.netcrypto.session import Session

NONCE_MOD = 1 << 192
"""Nonces are 24-byte big-endian counters; they wrap modulo this."""


class LossySealer:
    """Builds lossy data packets of one established session without going through it.

    For a data path on another thread (the VPN's TUN reader): it has its own
    :class:`DataBox` (buffers are per thread), takes nonces from the session's atomic counter
    and reads ``recv_start`` / the next packet number as they are (a slightly stale ack or
    number in a lossy packet is harmless: the peer ignores older acks). ``seal`` returns None
    once the session is no longer established, or for a payload the session would refuse.
    """

    __slots__ = ("_box", "_session", "max_payload", "session")

    def __init__(self, session: Session, key: bytes) -> None:
        self.session = session
        self._session = session
        self.max_payload = session.max_lossy_payload
        self._box = DataBox(key, max(self.max_payload, MAX_CRYPTO_DATA_SIZE_BYTES))

    def seal(self, payload: bytes | bytearray | memoryview) -> bytes | None:
        """The data packet for the lossy ``[id][data]``, or None (use the normal path)."""
        session = self._session
        size = len(payload)
        if (
            not isinstance(session.state, Established)
            or not 0 < size <= self.max_payload
            or not PACKET_ID_LOSSY_START <= payload[0] <= PACKET_ID_LOSSY_END
        ):
            return None
        nonce = (session._base_sent_nonce + next(session._nonce_counter)) % NONCE_MOD
        packet = self._box.seal(nonce, session.recv_start, session._next_new, payload)
        session.sent_packets += 1  # counters only: a rare lost update is acceptable
        session.sent_bytes += len(packet)
        return packet
