"""Curve25519 key pairs, public-key validity and the precomputed shared-key cache.

tox-protocol.md 1.1-1.4: toxcore always precomputes ``crypto_box_beforenm`` and caches the
result per peer key (entries unused for 600 s are evicted). Our cache is a bounded LRU keyed by
the peer's public key; it is only a performance matter, never a correctness one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings as _nb
import nacl.exceptions

from tunnel.errors import DecryptError

Rng = Callable[[int], bytes]
"""A source of random bytes: ``rng(n)`` returns ``n`` bytes."""

PUBLIC_KEY_SIZE = 32
SECRET_KEY_SIZE = 32
SHARED_KEY_SIZE = 32
SHARED_KEY_CACHE_DEFAULT_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A Curve25519 key pair (``crypto_box`` keys)."""

    public_key: bytes
    secret_key: bytes = field(repr=False)

    @classmethod
    def generate(cls, rng: Rng) -> KeyPair:
        """A fresh key pair whose secret key is 32 bytes from ``rng``."""
        return cls.from_secret_key(rng(SECRET_KEY_SIZE))

    @classmethod
    def from_secret_key(cls, secret_key: bytes) -> KeyPair:
        """The key pair of ``secret_key`` (public key derived as libsodium does)."""
        if len(secret_key) != SECRET_KEY_SIZE:
            raise ValueError(f"secret key must be {SECRET_KEY_SIZE} bytes, got {len(secret_key)}")
        return cls(_nb.crypto_scalarmult_base(secret_key), bytes(secret_key))


def public_key_valid(public_key: bytes) -> bool:
    """toxcore's ``public_key_valid``: 32 bytes and the top bit of the last byte clear.

    Only applied to long-term keys given by users (Tox IDs, friend add).
    """
    return len(public_key) == PUBLIC_KEY_SIZE and public_key[31] < 128


def beforenm(public_key: bytes, secret_key: bytes) -> bytes:
    """``crypto_box_beforenm``, with libsodium's refusal of a low-order key made a drop.

    libsodium refuses public keys of small order (the shared secret would be all zeros);
    PyNaCl reports that as ``nacl.exceptions.RuntimeError``. Such keys only come from the
    network (forged or broken peers), so they raise :class:`DecryptError`, a ``BadPacket``
    that every core already counts and drops. c-toxcore ignores the return code instead.

    Raises:
        DecryptError: ``public_key`` is a low-order point or otherwise unusable.
    """
    try:
        return _nb.crypto_box_beforenm(public_key, secret_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptError("unusable (low-order or malformed) public key") from exc


class SharedKeyCache:
    """Bounded LRU of ``crypto_box_beforenm(peer_pk, own_sk)`` results for one own key."""

    __slots__ = ("_cache", "_max_entries", "_secret_key", "hits", "misses")

    def __init__(
        self, secret_key: bytes, max_entries: int = SHARED_KEY_CACHE_DEFAULT_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._secret_key = secret_key
        self._max_entries = max_entries
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, peer_public_key: bytes) -> bytes:
        """The shared key with ``peer_public_key`` (computed once, then cached).

        Raises:
            DecryptError: ``peer_public_key`` is unusable (see :func:`beforenm`).
        """
        key = self._cache.get(peer_public_key)
        if key is not None:
            self.hits += 1
            self._cache.move_to_end(peer_public_key)
            return key
        self.misses += 1
        key = beforenm(peer_public_key, self._secret_key)
        self._cache[peer_public_key] = key
        if len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)
        return key

    def __len__(self) -> int:
        return len(self._cache)
