"""Stream framing and frame encryption for TCP relay connections (tox-protocol.md 7.1-7.2).

Two independent pieces:

* :class:`StreamBuffer` splits the byte stream: first a fixed-size handshake (128 bytes at the
  server, 96 at the client), then frames ``[length: u16 BE][ciphertext: length]``. It returns
  :data:`NEED_DATA` when more bytes are needed and raises :class:`BadPacket` when the stream is
  invalid (an announced length above 2048, or more buffered bytes than its cap). Frames may
  arrive split or coalesced in any way.
* :class:`FrameCipher` encrypts and decrypts frame payloads with the session key and one
  counter nonce per direction (starting at the base nonce the *sender* announced, +1 big-endian
  per frame). Nonces advance only when a frame is actually produced or accepted, so the order
  frames are sealed in must be the order they are written.

toxcore quirk mirrored here: a frame announcing length 0 is consumed and ignored
(``read_TCP_length`` returns 0, i.e. "nothing read"); a length 1..16 fails to decrypt and kills
the connection.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

import nacl.exceptions

from tunnel.crypto import MAC_SIZE, decrypt_untrusted, encrypt, increment_nonce, shared_key
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.tcp_relay import (
    FRAME_LENGTH_PREFIX_BYTES,
    MAX_FRAME_CIPHER_SIZE_BYTES,
    MAX_FRAME_PLAIN_SIZE_BYTES,
)

DEFAULT_MAX_BUFFERED_BYTES: Final = 64 * 1024
"""Cap on unprocessed received bytes; drivers read at most 16 KiB at a time and drain at once."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned when the buffered bytes do not yet hold a complete item (h11 style sentinel)."""
NeedData = _NeedData


def shared_key_untrusted(
    public_key: bytes, secret_key: bytes, compute: Callable[[bytes], bytes] | None = None
) -> bytes:
    """``K(secret_key, public_key)`` for a public key that came from the network.

    libsodium refuses low-order points (e.g. an all-zero key); that is the peer's fault.

    Raises:
        DecryptError: no shared key can be made with ``public_key``.
    """
    try:
        if compute is not None:
            return compute(public_key)
        return shared_key(public_key, secret_key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptError("unusable public key") from exc


class StreamBuffer:
    """Accumulates received bytes and cuts them into handshake blobs and frames."""

    __slots__ = ("_buf", "_max_buffered_bytes", "_pos", "empty_frames")

    def __init__(self, max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES) -> None:
        if max_buffered_bytes < FRAME_LENGTH_PREFIX_BYTES + MAX_FRAME_CIPHER_SIZE_BYTES:
            raise ValueError("the cap must hold at least one maximal frame")
        self._buf = bytearray()
        self._pos = 0
        self._max_buffered_bytes = max_buffered_bytes
        self.empty_frames = 0

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes are not yet consumed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        """Append received bytes.

        Raises:
            BadPacket: the unconsumed bytes would exceed the cap.
        """
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        if len(self._buf) + len(data) > self._max_buffered_bytes:
            raise BadPacket(
                f"{len(self._buf) + len(data)} buffered bytes exceed the cap "
                f"of {self._max_buffered_bytes}"
            )
        self._buf += data

    def take_exact(self, n: int) -> bytes | NeedData:
        """The next ``n`` bytes (a handshake), or :data:`NEED_DATA`."""
        if self.buffered_bytes < n:
            return NEED_DATA
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += n
        return out

    def next_frame(self) -> bytes | NeedData:
        """The ciphertext of the next complete frame, or :data:`NEED_DATA`.

        Zero-length frames are skipped (and counted in ``empty_frames``), as toxcore does.

        Raises:
            BadPacket: the frame announces more than 2048 bytes.
        """
        while True:
            if self.buffered_bytes < FRAME_LENGTH_PREFIX_BYTES:
                return NEED_DATA
            length = (self._buf[self._pos] << 8) | self._buf[self._pos + 1]
            if length > MAX_FRAME_CIPHER_SIZE_BYTES:
                raise BadPacket(f"frame length {length} exceeds {MAX_FRAME_CIPHER_SIZE_BYTES}")
            if length == 0:
                self._pos += FRAME_LENGTH_PREFIX_BYTES
                self.empty_frames += 1
                continue
            end = self._pos + FRAME_LENGTH_PREFIX_BYTES + length
            if end > len(self._buf):
                return NEED_DATA
            out = bytes(self._buf[self._pos + FRAME_LENGTH_PREFIX_BYTES : end])
            self._pos = end
            return out


class FrameCipher:
    """Session encryption of one TCP relay connection: a shared key and two counter nonces."""

    __slots__ = ("_key", "_recv_nonce", "_send_nonce")

    def __init__(self, session_key: bytes, send_nonce: bytes, recv_nonce: bytes) -> None:
        self._key = session_key
        self._send_nonce = send_nonce
        self._recv_nonce = recv_nonce

    def seal(self, plain: bytes) -> bytes:
        """One complete frame (length prefix included) carrying ``plain``; advances the nonce.

        Raises:
            ValueError: ``plain`` is empty or longer than 2032 bytes (a bug on our side).
        """
        if not 1 <= len(plain) <= MAX_FRAME_PLAIN_SIZE_BYTES:
            raise ValueError(f"frame plaintext must be 1..{MAX_FRAME_PLAIN_SIZE_BYTES} bytes")
        cipher = encrypt(self._key, self._send_nonce, plain)
        self._send_nonce = increment_nonce(self._send_nonce)
        return (len(plain) + MAC_SIZE).to_bytes(2, "big") + cipher

    def open_untrusted(self, cipher: bytes) -> bytes:
        """Decrypt one frame's ciphertext (as :meth:`StreamBuffer.next_frame` returns it).

        Raises:
            DecryptError: the frame does not authenticate with the expected nonce; the
                connection cannot continue (its nonces are out of step).
        """
        plain = decrypt_untrusted(self._key, self._recv_nonce, cipher)
        self._recv_nonce = increment_nonce(self._recv_nonce)
        return plain
