"""Crypto wrappers: libsodium behaviour as toxcore relies on it."""

from __future__ import annotations

import hashlib

import nacl.bindings as nb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import (
    KeyPair,
    SharedKeyCache,
    decrypt_untrusted,
    encrypt,
    increment_nonce,
    increment_nonce_number,
    public_key_valid,
    random_nonce,
    sha256,
    sha512,
    shared_key,
)
from tunnel.errors import DecryptError


def counter_rng(seed: int = 0):  # type: ignore[no-untyped-def]
    state = [seed]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            state[0] += 1
            out += hashlib.sha256(state[0].to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def test_keypair_from_secret_matches_libsodium() -> None:
    kp = KeyPair.generate(counter_rng(1))
    assert kp.public_key == nb.crypto_scalarmult_base(kp.secret_key)
    assert KeyPair.from_secret_key(kp.secret_key) == kp
    assert "secret_key" not in repr(kp)


def test_keypair_rejects_short_secret() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyPair.from_secret_key(b"x" * 31)


def test_shared_key_symmetric_and_box_interoperates_with_nacl_box() -> None:
    a = KeyPair.generate(counter_rng(2))
    b = KeyPair.generate(counter_rng(3))
    k_ab = shared_key(b.public_key, a.secret_key)
    assert k_ab == shared_key(a.public_key, b.secret_key)
    nonce = bytes(range(24))
    c = encrypt(k_ab, nonce, b"hello")
    # toxcore's layout: MAC(16) || ciphertext, same as libsodium crypto_box (no nonce prefix)
    assert c == nb.crypto_box(b"hello", nonce, b.public_key, a.secret_key)
    assert len(c) == 5 + 16
    assert decrypt_untrusted(k_ab, nonce, c) == b"hello"


def test_box_equals_secretbox_with_shared_key() -> None:
    key = bytes(range(32))
    nonce = bytes(24)
    assert encrypt(key, nonce, b"abc") == nb.crypto_secretbox(b"abc", nonce, key)


def test_empty_plaintext_refused_and_short_cipher_rejected() -> None:
    key = bytes(32)
    with pytest.raises(ValueError, match="empty"):
        encrypt(key, bytes(24), b"")
    with pytest.raises(DecryptError):
        decrypt_untrusted(key, bytes(24), nb.crypto_secretbox(b"", bytes(24), key))


def test_forged_box_raises_decrypt_error() -> None:
    key = bytes(32)
    c = bytearray(encrypt(key, bytes(24), b"payload"))
    c[-1] ^= 1
    with pytest.raises(DecryptError):
        decrypt_untrusted(key, bytes(24), bytes(c))
    with pytest.raises(DecryptError):
        decrypt_untrusted(bytes([1]) * 32, bytes(24), encrypt(key, bytes(24), b"payload"))


@given(st.binary(max_size=64))
def test_decrypt_untrusted_raises_only_decrypt_error(data: bytes) -> None:
    try:
        decrypt_untrusted(bytes(32), bytes(24), data)
    except DecryptError:
        pass


def test_increment_nonce_big_endian_golden() -> None:
    assert increment_nonce(bytes(24)) == bytes(23) + b"\x01"
    assert increment_nonce(bytes(22) + b"\x00\xff") == bytes(22) + b"\x01\x00"
    assert increment_nonce(b"\xff" * 24) == bytes(24)
    assert increment_nonce_number(bytes(20) + b"\x00\x00\xff\xff", 1) == bytes(21) + b"\x01\x00\x00"
    assert increment_nonce_number(b"\xff" * 24, 2) == bytes(23) + b"\x01"
    with pytest.raises(ValueError, match="32 bits"):
        increment_nonce_number(bytes(24), 1 << 32)


def test_random_nonce_uses_injected_rng() -> None:
    assert random_nonce(lambda n: b"\x07" * n) == b"\x07" * 24


def test_public_key_valid_like_toxcore() -> None:
    assert public_key_valid(bytes(31) + b"\x7f")
    assert not public_key_valid(bytes(31) + b"\x80")
    assert not public_key_valid(bytes(31))


def test_hashes() -> None:
    assert sha256(b"abc") == hashlib.sha256(b"abc").digest()
    assert sha512(b"abc") == hashlib.sha512(b"abc").digest()


def test_shared_key_cache_is_bounded_lru() -> None:
    me = KeyPair.generate(counter_rng(4))
    peers = [KeyPair.generate(counter_rng(10 + i)).public_key for i in range(5)]
    cache = SharedKeyCache(me.secret_key, max_entries=3)
    for pk in peers:
        assert cache.get(pk) == shared_key(pk, me.secret_key)
    assert len(cache) == 3
    assert cache.misses == 5
    cache.get(peers[-1])
    assert cache.hits == 1
    cache.get(peers[0])  # evicted earlier: recomputed
    assert cache.misses == 6


@pytest.mark.parametrize("low_order", [bytes(32), bytes([1]) + bytes(31)])
def test_low_order_public_key_is_a_drop_not_a_crash(low_order: bytes) -> None:
    me = KeyPair.generate(counter_rng(5))
    with pytest.raises(DecryptError, match="low-order"):
        shared_key(low_order, me.secret_key)
    cache = SharedKeyCache(me.secret_key)
    with pytest.raises(DecryptError):
        cache.get(low_order)
    assert len(cache) == 0
