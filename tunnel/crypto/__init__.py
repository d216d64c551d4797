"""Crypto primitives as c-toxcore 0.2.18 uses them (tox-protocol.md section 1), on PyNaCl.

Nothing here is hand-written crypto: every primitive is a libsodium call through
``nacl.bindings``. Randomness is injected as an :data:`Rng` (``os.urandom`` in production,
a seeded generator in simulations).
"""

from tunnel.crypto.box import (
    MAC_SIZE,
    decrypt_untrusted,
    encrypt,
    sha256,
    sha512,
    shared_key,
)
from tunnel.crypto.keys import (
    PUBLIC_KEY_SIZE,
    SECRET_KEY_SIZE,
    SHARED_KEY_SIZE,
    KeyPair,
    Rng,
    SharedKeyCache,
    public_key_valid,
)
from tunnel.crypto.nonce import (
    NONCE_SIZE,
    increment_nonce,
    increment_nonce_number,
    random_nonce,
)

__all__ = [
    "MAC_SIZE",
    "NONCE_SIZE",
    "PUBLIC_KEY_SIZE",
    "SECRET_KEY_SIZE",
    "SHARED_KEY_SIZE",
    "KeyPair",
    "Rng",
    "SharedKeyCache",
    "decrypt_untrusted",
    "encrypt",
    "increment_nonce",
    "increment_nonce_number",
    "public_key_valid",
    "random_nonce",
    "sha256",
    "sha512",
    "shared_key",
]
