"""24-byte nonces: toxcore's big-endian increment and random nonces (tox-protocol.md 1.2).

libsodium's ``sodium_increment`` is little-endian and is *not* what toxcore uses.
"""

from __future__ import annotations

from tunnel.crypto.keys import Rng

NONCE_SIZE = 24
_NONCE_MOD = 1 << (8 * NONCE_SIZE)


def increment_nonce(nonce: bytes) -> bytes:
    """``nonce + 1`` as a 192-bit big-endian integer, wrapping to zero."""
    return ((int.from_bytes(nonce, "big") + 1) % _NONCE_MOD).to_bytes(NONCE_SIZE, "big")


def increment_nonce_number(nonce: bytes, number: int) -> bytes:
    """``nonce + number`` (``number`` a 32-bit unsigned value), big-endian, wrapping."""
    if not 0 <= number <= 0xFFFFFFFF:
        raise ValueError("number must fit in 32 bits")
    return ((int.from_bytes(nonce, "big") + number) % _NONCE_MOD).to_bytes(NONCE_SIZE, "big")


def random_nonce(rng: Rng) -> bytes:
    """24 random bytes from ``rng``."""
    nonce = rng(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise ValueError("rng returned the wrong number of bytes")
    return nonce
