"""Authenticated encryption as toxcore does it: ``crypto_box_afternm`` with explicit nonces.

Output layout is ``MAC(16) || ciphertext`` (libsodium's combined mode without the nonce).
toxcore never encrypts an empty plaintext and rejects ciphertexts of 16 bytes or fewer
(tox-protocol.md 1.2); so do we.
"""

from __future__ import annotations

import nacl.bindings as _nb
import nacl.exceptions

from tunnel.crypto.keys import PUBLIC_KEY_SIZE, SECRET_KEY_SIZE, SHARED_KEY_SIZE, beforenm
from tunnel.crypto.nonce import NONCE_SIZE
from tunnel.errors import DecryptError

MAC_SIZE = 16

_box = _nb.crypto_box_afternm
_open = _nb.crypto_box_open_afternm


def shared_key(public_key: bytes, secret_key: bytes) -> bytes:
    """``crypto_box_beforenm(public_key, secret_key)``; symmetric between the two parties.

    Raises:
        ValueError: wrong key sizes (a bug on our side).
        DecryptError: a low-order public key (from the network; drop the packet).
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(secret_key) != SECRET_KEY_SIZE:
        raise ValueError("public and secret keys must be 32 bytes")
    return beforenm(public_key, secret_key)


def encrypt(key: bytes, nonce: bytes, plain: bytes) -> bytes:
    """Box ``plain`` under the 32-byte shared (or symmetric) ``key`` and 24-byte ``nonce``.

    Raises:
        ValueError: empty plaintext or wrong key/nonce size (a bug on our side).
    """
    if not plain:
        raise ValueError("toxcore never encrypts an empty plaintext")
    if len(key) != SHARED_KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("key must be 32 bytes and nonce 24 bytes")
    return _box(plain, nonce, key)


def decrypt_untrusted(key: bytes, nonce: bytes, cipher: bytes) -> bytes:
    """Open a box from the network.

    Raises:
        DecryptError: too short (no plaintext byte) or authentication failed.
    """
    if len(cipher) <= MAC_SIZE:
        raise DecryptError(f"ciphertext of {len(cipher)} bytes carries no plaintext")
    try:
        return _open(cipher, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptError("box failed to open") from exc


def sha256(data: bytes) -> bytes:
    """SHA-256 digest (32 bytes)."""
    return _nb.crypto_hash_sha256(data)


def sha512(data: bytes) -> bytes:
    """SHA-512 digest (64 bytes), as used for the cookie hash in the net_crypto handshake."""
    return _nb.crypto_hash_sha512(data)
