"""The replay window of a net_crypto session (ours, on top of tox-protocol.md 6.6).

toxcore rebuilds a data packet's 24-byte nonce from its 2-byte tail and accepts whatever
decrypts. We also remember which reconstructed nonces arrived in the last
``REPLAY_WINDOW_PKTS``, so a replayed or very old packet is dropped and counted instead of
being delivered twice. The window is a ring of bytes (one byte written per packet; a shifted
8192-bit mask copied a KiB per packet).
"""

from __future__ import annotations

import enum

REPLAY_WINDOW_PKTS = 8192
_SLOT_MASK = REPLAY_WINDOW_PKTS - 1  # a power of two


class Replay(enum.Enum):
    """What :meth:`ReplayWindow.check` found."""

    NEW = "new"
    TOO_OLD = "too_old"
    REPLAYED = "replayed"


class ReplayWindow:
    """Which packet offsets (nonce minus the session's base nonce) arrived lately."""

    __slots__ = ("_ring", "_top")

    def __init__(self) -> None:
        self._top = -1
        self._ring = bytearray(REPLAY_WINDOW_PKTS)

    def check(self, offset: int) -> Replay:
        """Record ``offset`` (>= 0) as arrived; NEW unless it is a repeat or too old."""
        top = self._top
        ring = self._ring
        if offset == top + 1:  # the usual case: the next packet in order
            ring[offset & _SLOT_MASK] = 1
            self._top = offset
            return Replay.NEW
        if offset > top:
            if offset - top >= REPLAY_WINDOW_PKTS:
                ring[:] = bytes(REPLAY_WINDOW_PKTS)
            else:
                for missing in range(top + 1, offset):  # usually none: packets come in order
                    ring[missing & _SLOT_MASK] = 0
            ring[offset & _SLOT_MASK] = 1
            self._top = offset
            return Replay.NEW
        if top - offset >= REPLAY_WINDOW_PKTS:
            return Replay.TOO_OLD
        slot = offset & _SLOT_MASK
        if ring[slot]:
            return Replay.REPLAYED
        ring[slot] = 1
        return Replay.NEW
