"""A bounds-checked cursor over untrusted bytes (aioquic ``Buffer`` style).

Every read checks the remaining length first and raises :class:`BadPacket`; nothing here can
raise ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

from tunnel.errors import BadPacket


class Reader:
    """Sequential reader over ``data``; raises :class:`BadPacket` on any over-read."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self._data = data
        self._pos = pos

    @property
    def pos(self) -> int:
        """Offset of the next unread byte."""
        return self._pos

    def remaining(self) -> int:
        """How many bytes are left."""
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self._pos >= len(self._data)

    def u8(self) -> int:
        """One unsigned byte."""
        if self._pos >= len(self._data):
            raise BadPacket("truncated: expected 1 more byte")
        value = self._data[self._pos]
        self._pos += 1
        return value

    def u16(self) -> int:
        """Big-endian unsigned 16-bit integer."""
        return int.from_bytes(self.read(2), "big")

    def u32(self) -> int:
        """Big-endian unsigned 32-bit integer."""
        return int.from_bytes(self.read(4), "big")

    def u64(self) -> int:
        """Big-endian unsigned 64-bit integer."""
        return int.from_bytes(self.read(8), "big")

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise BadPacket(f"truncated: expected {n} bytes, {self.remaining()} left")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def rest(self) -> bytes:
        """Everything not yet read (possibly empty)."""
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def expect_end(self) -> None:
        """Raise :class:`BadPacket` if bytes are left over."""
        if self._pos != len(self._data):
            raise BadPacket(f"{self.remaining()} trailing bytes")
