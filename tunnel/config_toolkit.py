"""A small toolkit for validating parsed YAML with errors that name the key path.

Used by :mod:`tunnel.config` for every role. Wrap a mapping in a :class:`Section`, read each key
with a typed getter (a missing key or a ``null`` value gives the default; with no default the key
is required), then call :meth:`Section.finish` to reject unknown keys. Each problem is a
:class:`~tunnel.errors.ConfigError` such as ``friends[2].public_key: expected 64 hex characters``.
The ``check_*`` functions validate single values (list items, for instance) at a given path.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from tunnel.crypto.keys import PUBLIC_KEY_SIZE, public_key_valid
from tunnel.errors import ConfigError
from tunnel.toxid import TOX_ID_HEX_LENGTH, ToxId, ToxIdError

PUBLIC_KEY_HEX_LENGTH = 2 * PUBLIC_KEY_SIZE

_HOSTNAME_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}\.?$){_HOSTNAME_LABEL}(?:\.{_HOSTNAME_LABEL})*\.?$")

T = TypeVar("T")


class Missing:
    """The type of :data:`MISSING`, the marker for an absent (or null) key."""


MISSING = Missing()


def join_path(parent: str, key: str | int) -> str:
    """The key path of ``key`` inside ``parent``: ``a.b``, ``a[3]`` (``key`` alone at the top)."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def describe(value: object) -> str:
    """A short ``repr`` of a user's value for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_int(value: object, path: str, min_value: int, max_value: int) -> int:
    """An integer in ``[min_value, max_value]`` (booleans are not integers here)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (min_value <= value <= max_value)
    ):
        raise ConfigError(
            f"{path}: expected an integer {min_value}-{max_value}, got {describe(value)}"
        )
    return value


def check_port(value: object, path: str) -> int:
    """A TCP/UDP port 1-65535."""
    return check_int(value, path, 1, 65535)


def check_bool(value: object, path: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: expected true or false, got {describe(value)}")
    return value


def check_str(
    value: object, path: str, *, max_bytes: int | None = None, allow_empty: bool = True
) -> str:
    """A string, optionally non-empty and at most ``max_bytes`` bytes of UTF-8."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a string, got {describe(value)}")
    if not allow_empty and not value:
        raise ConfigError(f"{path}: expected a non-empty string")
    if max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ConfigError(f"{path}: expected at most {max_bytes} bytes of UTF-8, got longer")
    return value


def check_choice(value: object, path: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (case-insensitive; returned in lower case)."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    wanted = ", ".join(choices)
    raise ConfigError(f"{path}: expected one of {wanted}, got {describe(value)}")


def _describe_key_text(value: object) -> str:
    if not isinstance(value, str):
        return describe(value)
    text = value.strip()
    try:
        binascii.unhexlify(text if len(text) % 2 == 0 else text + "0")
    except (binascii.Error, ValueError):
        return f"{len(text)} characters, not all hex"
    return f"{len(text)} characters"


def check_hex_key(value: object, path: str) -> bytes:
    """A 32-byte key as 64 hex characters."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) == PUBLIC_KEY_HEX_LENGTH:
            try:
                return binascii.unhexlify(text)
            except (binascii.Error, ValueError):
                pass
    raise ConfigError(
        f"{path}: expected {PUBLIC_KEY_HEX_LENGTH} hex characters, got {_describe_key_text(value)}"
    )


def check_friend_key(value: object, path: str) -> bytes:
    """A friend's long-term public key: 64 hex characters, or a 76-character Tox ID."""
    if isinstance(value, str) and len(value.strip()) == TOX_ID_HEX_LENGTH:
        try:
            return ToxId.parse(value).public_key
        except ToxIdError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(value, str) or len(value.strip()) != PUBLIC_KEY_HEX_LENGTH:
        raise ConfigError(
            f"{path}: expected {PUBLIC_KEY_HEX_LENGTH} hex characters (public key) or "
            f"{TOX_ID_HEX_LENGTH} (Tox ID), got {_describe_key_text(value)}"
        )
    key = check_hex_key(value, path)
    if not public_key_valid(key):
        raise ConfigError(f"{path}: not a valid public key (last byte >= 0x80)")
    return key


def check_host(value: object, path: str) -> str:
    """A host name or an IP address (``[v6]`` brackets are stripped)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            if _HOSTNAME_RE.match(text):
                return text
    raise ConfigError(f"{path}: expected a host name or IP address, got {describe(value)}")


def check_path(value: object, path: str, base_dir: Path | None) -> Path:
    """A file system path; ``~`` expanded, relative paths taken from ``base_dir``."""
    text = check_str(value, path, allow_empty=False)
    result = Path(text).expanduser()
    if not result.is_absolute() and base_dir is not None:
        result = base_dir / result
    return result


def check_list(value: object, path: str) -> list[object]:
    """A YAML sequence (``null`` counts as empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list, got {describe(value)}")
    return value


class Section:
    """A mapping under validation, at key path ``path``.

    Getters mark keys as used; :meth:`finish` raises for the first key nobody asked for. A key
    that is absent or ``null`` gives the getter's ``default``; without a default it is required.
    """

    __slots__ = ("_data", "_used", "base_dir", "path")

    def __init__(self, data: object, path: str = "", base_dir: Path | None = None) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            where = path or "top level"
            raise ConfigError(
                f"{where}: expected a mapping of keys to values, got {describe(data)}"
            )
        self._data: dict[str, object] = {str(key): value for key, value in data.items()}
        self._used: set[str] = set()
        self.path = path
        self.base_dir = base_dir

    def key_path(self, key: str | int) -> str:
        """The full key path of ``key`` in this section."""
        return join_path(self.path, key)

    def raw(self, key: str) -> object:
        """The value of ``key`` (:data:`MISSING` when absent or null); marks it used."""
        self._used.add(key)
        value = self._data.get(key)
        return MISSING if value is None else value

    def _get(self, key: str, default: T | Missing, check: Callable[[object, str], T]) -> T:
        value = self.raw(key)
        if isinstance(value, Missing):
            if isinstance(default, Missing):
                raise ConfigError(f"{self.key_path(key)}: required key is missing")
            return default
        return check(value, self.key_path(key))

    def get_int(
        self, key: str, default: int | Missing = MISSING, *, min_value: int, max_value: int
    ) -> int:
        """An integer in range."""
        return self._get(key, default, lambda v, p: check_int(v, p, min_value, max_value))

    def get_port(self, key: str, default: int | Missing = MISSING) -> int:
        """A port 1-65535."""
        return self._get(key, default, check_port)

    def get_bool(self, key: str, default: bool | Missing = MISSING) -> bool:
        """A boolean."""
        return self._get(key, default, check_bool)

    def get_str(
        self,
        key: str,
        default: str | Missing = MISSING,
        *,
        max_bytes: int | None = None,
        allow_empty: bool = True,
    ) -> str:
        """A string."""
        return self._get(
            key, default, lambda v, p: check_str(v, p, max_bytes=max_bytes, allow_empty=allow_empty)
        )

    def get_choice(
        self, key: str, choices: tuple[str, ...], default: str | Missing = MISSING
    ) -> str:
        """One of ``choices``."""
        return self._get(key, default, lambda v, p: check_choice(v, p, choices))

    def get_hex_key(self, key: str, default: bytes | Missing = MISSING) -> bytes:
        """A 32-byte key given as 64 hex characters."""
        return self._get(key, default, check_hex_key)

    def get_host(self, key: str, default: str | Missing = MISSING) -> str:
        """A host name or IP address."""
        return self._get(key, default, check_host)

    def get_path(self, key: str, default: Path | Missing = MISSING) -> Path:
        """A path (relative ones are taken from the config file's directory)."""
        return self._get(key, default, lambda v, p: check_path(v, p, self.base_dir))

    def get_list(self, key: str) -> list[tuple[str, object]]:
        """The items of a list as ``(key path, value)`` pairs (absent or null: empty)."""
        value = self.raw(key)
        items = [] if isinstance(value, Missing) else check_list(value, self.key_path(key))
        return [(join_path(self.key_path(key), i), item) for i, item in enumerate(items)]

    def get_section(self, key: str) -> Section:
        """A nested mapping (absent: an empty one)."""
        value = self.raw(key)
        return Section(
            None if isinstance(value, Missing) else value, self.key_path(key), self.base_dir
        )

    def get_sections(self, key: str) -> list[Section]:
        """A list of mappings."""
        return [Section(item, path, self.base_dir) for path, item in self.get_list(key)]

    def get_port_list(self, key: str, default: tuple[int, ...] = ()) -> tuple[int, ...]:
        """A list of ports (absent: ``default``)."""
        if isinstance(self.raw(key), Missing):
            return default
        return tuple(check_port(item, path) for path, item in self.get_list(key))

    def finish(self) -> None:
        """Raise for the first key that no getter read."""
        for key in self._data:
            if key not in self._used:
                raise ConfigError(f"{self.key_path(key)}: unknown key")
