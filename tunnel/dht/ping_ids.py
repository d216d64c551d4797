"""Request ids that cannot be forged or replayed: toxcore's ping array (tox-protocol.md 4.5).

A ring of ``size`` slots (a power of two). :meth:`PingArray.add` stores ``data`` in the next
slot and returns a random 64-bit id whose value modulo ``size`` is the slot index;
:meth:`PingArray.check` accepts an id only if the slot still holds exactly that id, it has not
expired, and it frees the slot, so each id is good for one answer only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

PING_ARRAY_SIZE = 512
PING_TIMEOUT_S = 5.0
_U64 = (1 << 64) - 1


@dataclass(slots=True)
class _Slot(Generic[T]):
    ping_id: int
    time: float
    data: T


class PingArray(Generic[T]):
    """Outstanding request ids with their data (typically ``(pk, ip_port)``)."""

    __slots__ = ("_last_added", "_last_deleted", "_rng", "_size", "_slots", "_timeout_s")

    def __init__(
        self,
        rng: Callable[[int], bytes],
        size: int = PING_ARRAY_SIZE,
        timeout_s: float = PING_TIMEOUT_S,
    ) -> None:
        if size < 1 or size & (size - 1):
            raise ValueError("size must be a power of two")
        self._rng = rng
        self._size = size
        self._timeout_s = timeout_s
        self._slots: list[_Slot[T] | None] = [None] * size
        self._last_added = 0
        self._last_deleted = 0

    def _clear_old(self, now: float) -> None:
        while self._last_deleted != self._last_added:
            index = self._last_deleted % self._size
            slot = self._slots[index]
            if slot is not None and slot.time + self._timeout_s > now:
                break
            self._slots[index] = None
            self._last_deleted += 1

    def add(self, data: T, now: float) -> int:
        """Store ``data`` and return its new non-zero 64-bit id."""
        self._clear_old(now)
        index = self._last_added % self._size
        if self._slots[index] is not None:
            self._last_deleted += 1  # overwriting the oldest slot
        random = int.from_bytes(self._rng(8), "big") & _U64
        ping_id = (random // self._size) * self._size + index
        if ping_id == 0:
            ping_id += self._size
        self._slots[index] = _Slot(ping_id, now, data)
        self._last_added += 1
        return ping_id

    def check(self, ping_id: int, now: float) -> T | None:
        """The data stored under ``ping_id`` (freeing the slot), or None if unknown/expired."""
        if ping_id == 0:
            return None
        index = ping_id % self._size
        slot = self._slots[index]
        if slot is None or slot.ping_id != ping_id:
            return None
        if slot.time + self._timeout_s <= now:
            return None
        self._slots[index] = None
        return slot.data

    def __len__(self) -> int:
        return sum(1 for slot in self._slots if slot is not None)
