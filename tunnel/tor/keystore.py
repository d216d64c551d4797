"""Persistent onion service key: one ``ED25519-V3:<base64>`` line in a 0600 file.

The key file is created once (atomically, mode 0600, never replaced) and reused on every start,
so the node's .onion address stays the same across restarts and Tor instances.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tunnel.crypto import Rng
from tunnel.errors import BadPacket, ConfigError
from tunnel.profile import write_file_atomic
from tunnel.tor.onion_key import OnionKey

ONION_KEY_FILE_MODE = 0o600
MAX_ONION_KEY_FILE_SIZE_BYTES = 4096


def save_onion_key(path: str | os.PathLike[str], key: OnionKey, *, overwrite: bool = False) -> None:
    """Write ``key`` to ``path`` (0600, atomic; refuses to replace an existing file by default).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        OSError: the file cannot be written.
    """
    write_file_atomic(
        Path(path), (key.blob + "\n").encode("ascii"), ONION_KEY_FILE_MODE, overwrite=overwrite
    )


def load_onion_key(path: str | os.PathLike[str]) -> OnionKey:
    """Read a key written by :func:`save_onion_key`.

    Raises:
        ConfigError: missing, unreadable, readable by group/others, too large or malformed.
    """
    p = Path(path)
    try:
        st = p.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"onion key {p}: mode {stat.S_IMODE(st.st_mode):04o} lets others read it; "
                f"chmod 600 {p}"
            )
        if st.st_size > MAX_ONION_KEY_FILE_SIZE_BYTES:
            raise ConfigError(f"onion key {p}: file too large")
        text = p.read_text("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"onion key {p}: cannot read ({exc})") from exc
    try:
        return OnionKey.from_blob(text)
    except BadPacket as exc:
        raise ConfigError(f"onion key {p}: {exc}") from exc


def load_or_create_onion_key(path: str | os.PathLike[str], rng: Rng = os.urandom) -> OnionKey:
    """The key in ``path``, creating it (0600) on first use.

    Raises:
        ConfigError: the existing file is unusable (see :func:`load_onion_key`) or cannot be
            created.
    """
    p = Path(path)
    if not p.exists():
        key = OnionKey.generate(rng)
        try:
            save_onion_key(p, key)
        except FileExistsError:
            pass  # created concurrently: use that one
        except OSError as exc:
            raise ConfigError(f"onion key {p}: cannot create ({exc})") from exc
        else:
            return key
    return load_onion_key(p)
