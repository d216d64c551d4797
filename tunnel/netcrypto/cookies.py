"""Cookies and the identity a net_crypto instance works with (tox-protocol.md 6.1-6.3).

A cookie is ``[nonce][box(cookie key, [time][real pk][DHT pk])]``: only we can open it, so the
responder keeps no state between a cookie request and the handshake that presents the cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.crypto import KeyPair, Rng, SharedKeyCache, decrypt_untrusted, encrypt, random_nonce
from tunnel.errors import BadPacket
from tunnel.wire.netcrypto import Cookie, CookiePlain

COOKIE_TIMEOUT_S = 15
COOKIE_KEY_SIZE = 32


class CookieJar:
    """Makes and opens our cookies with a random symmetric key (one per instance)."""

    __slots__ = ("_key", "_rng")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._key = rng(COOKIE_KEY_SIZE)

    def make(self, real_pk: bytes, dht_pk: bytes, now: float) -> bytes:
        """A 112-byte cookie for (``real_pk``, ``dht_pk``) stamped with ``now`` (seconds)."""
        nonce = random_nonce(self._rng)
        plain = CookiePlain(max(0, int(now)), real_pk, dht_pk).encode()
        return Cookie(nonce, encrypt(self._key, nonce, plain)).encode()

    def open_untrusted(self, cookie: bytes, now: float) -> CookiePlain:
        """Open one of our cookies and check it is at most 15 s old.

        Raises:
            DecryptError: not one of ours (or tampered with).
            BadPacket: wrong size, stale or from the future.
        """
        parsed = Cookie.decode(cookie)
        plain = CookiePlain.decode(decrypt_untrusted(self._key, parsed.nonce, parsed.box))
        now_s = max(0, int(now))
        if not plain.time_s <= now_s <= plain.time_s + COOKIE_TIMEOUT_S:
            raise BadPacket("stale cookie")
        return plain


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything a session needs from its owner: our keys, key caches, cookies, randomness."""

    real: KeyPair
    dht: KeyPair
    real_keys: SharedKeyCache
    dht_keys: SharedKeyCache
    cookies: CookieJar
    rng: Rng

    @classmethod
    def create(cls, real: KeyPair, dht: KeyPair, rng: Rng) -> Identity:
        """An identity with fresh caches and a fresh cookie key."""
        return cls(
            real,
            dht,
            SharedKeyCache(real.secret_key),
            SharedKeyCache(dht.secret_key),
            CookieJar(rng),
            rng,
        )
