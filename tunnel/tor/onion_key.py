"""v3 onion service keys in Tor's ``ED25519-V3`` format (rend-spec-v3 section 6, control-spec
ADD_ONION), pure.

Tor's key blob is the 64-byte *expanded* ed25519 secret key: the clamped scalar ``a`` (32 bytes,
little-endian) followed by the 32-byte nonce prefix, i.e. ``SHA-512(seed)`` with ``a`` clamped
(ref10 ``ed25519_extsk``). The public key is ``a·B``, and the .onion address follows from it, so a
node knows its onion address from the stored key alone, before Tor is even running. We generate
the key ourselves from an injected :data:`~tunnel.crypto.Rng` and hand it to ADD_ONION, so the
address is stable across restarts and Tor instances.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from nacl.bindings import crypto_scalarmult_ed25519_base_noclamp

from tunnel.crypto import Rng, sha512
from tunnel.errors import BadPacket
from tunnel.tor.protocol import (
    ED25519_EXPANDED_SECRET_KEY_SIZE,
    ED25519_V3_KEY_TYPE,
    onion_service_id,
)

ED25519_SEED_SIZE = 32


def _clamp(scalar: bytes) -> bytes:
    a = bytearray(scalar)
    a[0] &= 248
    a[31] &= 63
    a[31] |= 64
    return bytes(a)


@dataclass(frozen=True, slots=True)
class OnionKey:
    """An expanded ed25519 secret key for one v3 onion service."""

    expanded: bytes

    def __post_init__(self) -> None:
        if len(self.expanded) != ED25519_EXPANDED_SECRET_KEY_SIZE:
            raise ValueError("an expanded ed25519 secret key is 64 bytes")

    @classmethod
    def generate(cls, rng: Rng) -> OnionKey:
        """A new key from a 32-byte seed drawn from ``rng``."""
        digest = sha512(rng(ED25519_SEED_SIZE))
        return cls(_clamp(digest[:32]) + digest[32:])

    @classmethod
    def from_blob(cls, blob: str) -> OnionKey:
        """From ``"ED25519-V3:<base64>"`` (what ADD_ONION returns and accepts).

        Raises:
            BadPacket: wrong key type, bad base64, wrong length or an unclamped scalar.
        """
        kind, sep, b64 = blob.strip().partition(":")
        if not sep or kind != ED25519_V3_KEY_TYPE:
            raise BadPacket(f"not an {ED25519_V3_KEY_TYPE} key blob")
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadPacket("onion key blob is not valid base64") from exc
        if len(raw) != ED25519_EXPANDED_SECRET_KEY_SIZE:
            raise BadPacket(f"onion key is {len(raw)} bytes, expected 64")
        if _clamp(raw[:32]) != raw[:32]:
            raise BadPacket("onion key scalar is not clamped")
        return cls(raw)

    @property
    def blob(self) -> str:
        """``"ED25519-V3:<base64>"`` for ADD_ONION (secret: never log it)."""
        return f"{ED25519_V3_KEY_TYPE}:{base64.b64encode(self.expanded).decode('ascii')}"

    @property
    def public_key(self) -> bytes:
        """The 32-byte ed25519 public key ``a·B``."""
        return crypto_scalarmult_ed25519_base_noclamp(self.expanded[:32])

    @property
    def service_id(self) -> str:
        """The 56-character service id (address without ``.onion``)."""
        return onion_service_id(self.public_key)

    @property
    def address(self) -> str:
        """``<service_id>.onion``."""
        return f"{self.service_id}.onion"

    def __repr__(self) -> str:
        return f"OnionKey({self.address})"
