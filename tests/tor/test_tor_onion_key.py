"""v3 onion keys (ED25519-V3 blobs) and the persistent 0600 key file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_seed_keypair

from tunnel.crypto import sha512
from tunnel.errors import BadPacket, ConfigError
from tunnel.testing.rng import SeededRng
from tunnel.tor.keystore import load_onion_key, load_or_create_onion_key, save_onion_key
from tunnel.tor.onion_key import OnionKey
from tunnel.tor.protocol import onion_service_id, onion_service_id_valid


def test_public_key_matches_libsodium_for_the_same_seed() -> None:
    seed = SeededRng("onion")(32)
    digest = sha512(seed)
    scalar = bytearray(digest[:32])
    scalar[0] &= 248
    scalar[31] = (scalar[31] & 63) | 64
    key = OnionKey(bytes(scalar) + digest[32:])
    public, _ = crypto_sign_seed_keypair(seed)
    assert key.public_key == public
    assert key.service_id == onion_service_id(public)
    assert onion_service_id_valid(key.service_id)
    assert key.address == key.service_id + ".onion"


def test_generate_is_deterministic_with_a_seeded_rng() -> None:
    a = OnionKey.generate(SeededRng(7))
    b = OnionKey.generate(SeededRng(7))
    c = OnionKey.generate(SeededRng(8))
    assert a == b
    assert a.service_id != c.service_id
    public, _ = crypto_sign_seed_keypair(SeededRng(7)(32))
    assert a.public_key == public


@given(st.binary(min_size=32, max_size=32))
def test_blob_round_trip(seed: bytes) -> None:
    key = OnionKey.generate(lambda n: seed[:n])
    assert key.blob.startswith("ED25519-V3:")
    assert OnionKey.from_blob(key.blob) == key
    assert OnionKey.from_blob(key.blob + "\n") == key


@given(st.text(max_size=120))
def test_from_blob_raises_only_badpacket(text: str) -> None:
    try:
        OnionKey.from_blob(text)
    except BadPacket:
        pass


@pytest.mark.parametrize(
    "blob",
    [
        "RSA1024:" + base64.b64encode(bytes(64)).decode(),  # wrong type
        "ED25519-V3:not base64!",
        "ED25519-V3:" + base64.b64encode(bytes(63)).decode(),  # short
        "ED25519-V3:" + base64.b64encode(b"\xff" * 64).decode(),  # unclamped scalar
        "ED25519-V3",
    ],
)
def test_from_blob_rejects(blob: str) -> None:
    with pytest.raises(BadPacket):
        OnionKey.from_blob(blob)


def test_repr_hides_the_secret() -> None:
    key = OnionKey.generate(SeededRng(1))
    assert base64.b64encode(key.expanded).decode() not in repr(key)
    assert key.service_id in repr(key)


def test_key_file_is_0600_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "tor" / "onion.key"
    first = load_or_create_onion_key(path, SeededRng(3))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_onion_key(path, SeededRng(99))  # the file wins over the rng
    assert again == first
    assert load_onion_key(path).address == first.address
    with pytest.raises(FileExistsError):
        save_onion_key(path, OnionKey.generate(SeededRng(4)))


def test_key_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "onion.key"
    with pytest.raises(ConfigError, match="cannot read"):
        load_onion_key(path)
    save_onion_key(path, OnionKey.generate(SeededRng(5)))
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_onion_key(path)
    os.chmod(path, 0o600)
    path.write_text("ED25519-V3:garbage\n")
    with pytest.raises(ConfigError, match="onion key"):
        load_onion_key(path)
