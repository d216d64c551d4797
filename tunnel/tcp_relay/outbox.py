"""Outgoing packet queue of one TCP relay connection, with priorities and byte caps.

toxcore writes control packets (routing, pings, pongs, disconnects) ahead of data, and never
drops part of a frame (tox-protocol.md 7.2). Frames are sealed only when the driver drains the
queue, so the nonce order always equals the write order even though control packets jump
ahead of data queued earlier.

Caps: data (non-priority) packets are refused when ``max_data_bytes`` are queued; that is the
backpressure signal to the layer above (toxcore's "could not send", net_crypto's SENDQ).
Control packets are refused beyond ``max_control_bytes``; a peer that lets that many control
answers pile up is not reading, and its connection should be closed.
"""

from __future__ import annotations

from collections import deque

from tunnel.tcp_relay.framing import FrameCipher

DEFAULT_MAX_DATA_BYTES = 256 * 1024
DEFAULT_MAX_CONTROL_BYTES = 64 * 1024


class Outbox:
    """Plaintext packets waiting to be sealed and written, control packets first."""

    __slots__ = (
        "_control",
        "_control_bytes",
        "_data",
        "_data_bytes",
        "max_control_bytes",
        "max_data_bytes",
    )

    def __init__(
        self,
        max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
        max_control_bytes: int = DEFAULT_MAX_CONTROL_BYTES,
    ) -> None:
        self._control: deque[bytes] = deque()
        self._data: deque[bytes] = deque()
        self._control_bytes = 0
        self._data_bytes = 0
        self.max_data_bytes = max_data_bytes
        self.max_control_bytes = max_control_bytes

    @property
    def queued_bytes(self) -> int:
        """Plaintext bytes waiting (both priorities)."""
        return self._control_bytes + self._data_bytes

    def __bool__(self) -> bool:
        return bool(self._control) or bool(self._data)

    def data_room(self, size: int) -> bool:
        """Would a data packet of ``size`` bytes be accepted now?"""
        return self._data_bytes + size <= self.max_data_bytes

    def push_data(self, plain: bytes) -> bool:
        """Queue a data packet; False (nothing queued) when the data cap is reached."""
        if self._data_bytes + len(plain) > self.max_data_bytes:
            return False
        self._data.append(plain)
        self._data_bytes += len(plain)
        return True

    def push_control(self, plain: bytes) -> bool:
        """Queue a control packet; False when the control cap is reached."""
        if self._control_bytes + len(plain) > self.max_control_bytes:
            return False
        self._control.append(plain)
        self._control_bytes += len(plain)
        return True

    def drain(self, cipher: FrameCipher, max_bytes: int | None = None) -> bytes:
        """Seal queued packets (control first) into wire bytes, about ``max_bytes`` at most.

        At least one frame is produced when anything is queued, whatever ``max_bytes`` is.
        """
        out: list[bytes] = []
        size = 0
        for queue, is_control in ((self._control, True), (self._data, False)):
            while queue and (max_bytes is None or size < max_bytes):
                plain = queue.popleft()
                if is_control:
                    self._control_bytes -= len(plain)
                else:
                    self._data_bytes -= len(plain)
                frame = cipher.seal(plain)
                out.append(frame)
                size += len(frame)
        return b"".join(out)

    def clear(self) -> None:
        """Drop everything queued."""
        self._control.clear()
        self._data.clear()
        self._control_bytes = 0
        self._data_bytes = 0
