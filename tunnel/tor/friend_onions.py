"""Friends' onion relays remembered across restarts (issue 10: friends as onion services).

A friend's ``.onion`` comes from ``tor.friends`` in the config or from its 0xB4 announcement
over the friend connection (:mod:`tunnel.tor.announce`). Announced addresses are kept in a
small JSON file next to the profile (``<profile>.onions.json``), so that after a restart a node
can reach a friend through its onion relay before any other path exists. The profile itself
stays toxcore savedata (libtoxcore loads it), which has no place for them.

Format: ``{"version": 1, "friends": {"<64 hex key>": {"onion": "<id>.onion", "port": N}}}``.
A missing file is an empty store; a damaged file or entry is ignored (reported once by the
caller), never fatal: it is a cache of what friends told us, and they tell us again.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunnel.profile import write_file_atomic
from tunnel.tor.protocol import split_onion_address

FRIEND_ONIONS_VERSION = 1
FRIEND_ONIONS_SUFFIX = ".onions.json"
MAX_FRIEND_ONIONS_FILE_BYTES = 4 * 1024 * 1024
FriendOnionMap = dict[bytes, tuple[str, int]]


def friend_onions_path(profile_path: Path | None) -> Path | None:
    """Where a profile's friends' onion addresses are kept (None: profile not on disk)."""
    if profile_path is None:
        return None
    return profile_path.with_name(profile_path.name + FRIEND_ONIONS_SUFFIX)


def load_friend_onions(path: Path) -> tuple[FriendOnionMap, str | None]:
    """The stored addresses and, if something was wrong with the file, why (else None)."""
    try:
        if path.stat().st_size > MAX_FRIEND_ONIONS_FILE_BYTES:
            return {}, f"{path}: larger than {MAX_FRIEND_ONIONS_FILE_BYTES} bytes, ignored"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"{path}: unreadable ({exc}), ignored"
    if not isinstance(data, dict) or data.get("version") != FRIEND_ONIONS_VERSION:
        return {}, f"{path}: not a version {FRIEND_ONIONS_VERSION} friends' onion file, ignored"
    friends = data.get("friends")
    if not isinstance(friends, dict):
        return {}, f"{path}: no friends table, ignored"
    out: FriendOnionMap = {}
    bad = 0
    for key, entry in friends.items():
        parsed = _entry(key, entry)
        if parsed is None:
            bad += 1
            continue
        out[parsed[0]] = parsed[1]
    return out, (f"{path}: {bad} damaged entries ignored" if bad else None)


def _entry(key: object, entry: object) -> tuple[bytes, tuple[str, int]] | None:
    if not isinstance(key, str) or len(key) != 64 or not isinstance(entry, dict):
        return None
    try:
        public_key = bytes.fromhex(key)
    except ValueError:
        return None
    onion, port = entry.get("onion"), entry.get("port")
    if not isinstance(onion, str) or split_onion_address(onion) is None:
        return None
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return None
    return public_key, (onion.lower(), port)


def save_friend_onions(path: Path, onions: FriendOnionMap) -> None:
    """Write the store atomically (mode 0600, like the profile).

    Raises:
        OSError: the file cannot be written.
    """
    table = {
        pk.hex(): {"onion": onion, "port": port} for pk, (onion, port) in sorted(onions.items())
    }
    text = json.dumps({"version": FRIEND_ONIONS_VERSION, "friends": table}, indent=1)
    write_file_atomic(path, (text + "\n").encode())
