"""XOR distance between DHT keys (tox-protocol.md 4.1, 4.6.1).

Keys compare as 256-bit big-endian integers; the close-list bucket of a key is the index of
the first bit in which it differs from our key, capped at 127 (c-toxcore 0.2.18 keeps 128
buckets).
"""

from __future__ import annotations

LCLIENT_LENGTH = 128
"""Number of close-list buckets in 0.2.18."""


def key_int(public_key: bytes) -> int:
    """The key as a big-endian integer (distances are XORs of these)."""
    return int.from_bytes(public_key, "big")


def distance(a: bytes, b: bytes) -> int:
    """XOR distance of two keys as an integer."""
    return key_int(a) ^ key_int(b)


def closer(base: bytes, a: bytes, b: bytes) -> bool:
    """True when ``a`` is strictly closer to ``base`` than ``b``."""
    return distance(base, a) < distance(base, b)


def bucket_index_int(base: int, other: int) -> int:
    """Bucket index (first differing bit, capped at 127) for integer keys."""
    diff = base ^ other
    if diff == 0:
        return LCLIENT_LENGTH - 1
    return min(256 - diff.bit_length(), LCLIENT_LENGTH - 1)


def bucket_index(base: bytes, other: bytes) -> int:
    """Bucket index of ``other`` in the close list of ``base``."""
    return bucket_index_int(key_int(base), key_int(other))
