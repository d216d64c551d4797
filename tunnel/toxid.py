"""The Tox ID (address): ``[public key 32][nospam 4][checksum 2]``, shown as 76 hex characters.

tox-protocol.md 2.1. The checksum is the XOR of the eighteen 2-byte words of the first 36
bytes. nospam is four opaque bytes: compare bytes, never convert.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

from tunnel.crypto.keys import PUBLIC_KEY_SIZE, public_key_valid
from tunnel.errors import ConfigError

TOX_ID_SIZE = 38
TOX_ID_HEX_LENGTH = 2 * TOX_ID_SIZE
NOSPAM_SIZE = 4


class ToxIdError(ConfigError):
    """A Tox ID that does not parse; the message says why."""


def tox_id_checksum(data36: bytes) -> bytes:
    """The 2-byte checksum of ``public_key || nospam``."""
    even = 0
    odd = 0
    for i in range(0, 36, 2):
        even ^= data36[i]
        odd ^= data36[i + 1]
    return bytes((even, odd))


@dataclass(frozen=True, slots=True)
class ToxId:
    """A friend's address: long-term public key plus the nospam that gets requests through."""

    public_key: bytes
    nospam: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("public key must be 32 bytes")
        if len(self.nospam) != NOSPAM_SIZE:
            raise ValueError("nospam must be 4 bytes")

    @property
    def checksum(self) -> bytes:
        """The two checksum bytes."""
        return tox_id_checksum(self.public_key + self.nospam)

    def to_bytes(self) -> bytes:
        """The 38 raw bytes."""
        return self.public_key + self.nospam + self.checksum

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()

    @classmethod
    def from_bytes(cls, data: bytes) -> ToxId:
        """From 38 raw bytes.

        Raises:
            ToxIdError: wrong length, bad checksum or an invalid public key.
        """
        if len(data) != TOX_ID_SIZE:
            raise ToxIdError(f"Tox ID must be {TOX_ID_SIZE} bytes, got {len(data)}")
        if tox_id_checksum(data[:36]) != data[36:38]:
            raise ToxIdError("Tox ID checksum does not match (mistyped ID?)")
        if not public_key_valid(data[:32]):
            raise ToxIdError("Tox ID carries an invalid public key (last byte >= 0x80)")
        return cls(data[:32], data[32:36])

    @classmethod
    def parse(cls, text: str) -> ToxId:
        """From 76 hex characters (surrounding whitespace ignored, either case).

        Raises:
            ToxIdError: wrong length, not hex, bad checksum or an invalid public key.
        """
        text = text.strip()
        if len(text) != TOX_ID_HEX_LENGTH:
            raise ToxIdError(f"Tox ID must be {TOX_ID_HEX_LENGTH} hex characters, got {len(text)}")
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError) as exc:
            raise ToxIdError("Tox ID is not hexadecimal") from exc
        return cls.from_bytes(raw)
