"""Who may become a forwarding server's friend (tuntox ``accept_friend_request``).

tuntox (tuntox-toxvpn.md 1.4 "Authentication and authorisation"):

1. with a shared secret, the friend-request message must end in a NUL and equal the secret up
   to its first NUL (``strncmp``); the tuntox client sends ``secret + b"\\0"``;
2. with an allowlist (``-i``), the requester's public key must be listed;
3. both checks apply when both are configured; with neither, every request is accepted.

We accept exactly what tuntox accepts plus the bare secret without its NUL, compare in
constant time, and re-check the allowlist for packets of existing friends (a key removed from
the allowlist loses access without deleting the friend).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from tunnel.errors import ConfigError

MAX_SECRET_BYTES = 1015
"""``TOX_MAX_FRIEND_REQUEST_LENGTH`` (1016) minus the NUL tuntox appends."""
PUBLIC_KEY_SIZE_BYTES = 32
DEFAULT_REQUEST_MESSAGE = b"Hi, fellow tuntox instance!"


def request_message(secret: bytes | None) -> bytes:
    """The friend-request message our client sends (what tuntox's client sends)."""
    if secret is None:
        return DEFAULT_REQUEST_MESSAGE
    return secret + b"\0"


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """Shared secret, public-key allowlist, both, or neither (accept everyone)."""

    secret: bytes | None = None
    allowlist: frozenset[bytes] | None = None

    def __post_init__(self) -> None:
        if self.secret is not None:
            if not self.secret:
                raise ConfigError("secret: must not be empty")
            if len(self.secret) > MAX_SECRET_BYTES:
                raise ConfigError(f"secret: longer than {MAX_SECRET_BYTES} bytes")
            if b"\0" in self.secret:
                raise ConfigError("secret: must not contain NUL bytes")
        if self.allowlist is not None:
            for key in self.allowlist:
                if len(key) != PUBLIC_KEY_SIZE_BYTES:
                    raise ConfigError("allowlist: every entry must be a 32-byte public key")

    @classmethod
    def build(cls, secret: str | bytes | None, allowed_keys: Iterable[bytes] | None) -> AuthPolicy:
        """Policy from CLI/config values (``allowed_keys`` may hold 38-byte Tox IDs).

        Raises:
            ConfigError: empty/over-long secret, bad key length.
        """
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        keys = None
        if allowed_keys is not None:
            keys = frozenset(bytes(key[:PUBLIC_KEY_SIZE_BYTES]) for key in allowed_keys)
        return cls(raw, keys)

    def friend_allowed(self, public_key: bytes) -> bool:
        """The allowlist check alone (for packets of existing friends)."""
        return self.allowlist is None or bytes(public_key) in self.allowlist

    def accepts_request(self, public_key: bytes, message: bytes) -> bool:
        """Should a friend request from ``public_key`` carrying ``message`` be accepted?"""
        if self.secret is not None:
            # tuntox: NUL-terminated, equal up to the first NUL; we also take the bare secret.
            body = message.split(b"\0", 1)[0] if message.endswith(b"\0") else message
            if not hmac.compare_digest(body, self.secret):
                return False
        return self.friend_allowed(public_key)
