"""Friends' announced onion relays survive a restart (``<profile>.onions.json``, issue 10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunnel.io.tor_node import TorNode
from tunnel.node_types import NodeOptions
from tunnel.testing.tor_node_harness import toxcore_profile
from tunnel.tor.config import TorConfig, TorFriend
from tunnel.tor.friend_onions import (
    friend_onions_path,
    load_friend_onions,
    save_friend_onions,
)
from tunnel.tor.onion_key import OnionKey

CONFIG = TorConfig(socks="127.0.0.1:1")  # never contacted here


def _onion() -> str:
    return OnionKey.generate(os.urandom).address


def test_store_round_trip_and_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "p.tox.onions.json"
    onions = {bytes([1]) * 32: (_onion(), 443), bytes([2]) * 32: (_onion(), 33445)}
    save_friend_onions(path, onions)
    assert load_friend_onions(path) == (onions, None)
    assert path.stat().st_mode & 0o777 == 0o600
    assert friend_onions_path(tmp_path / "p.tox") == path
    assert friend_onions_path(None) is None
    assert load_friend_onions(tmp_path / "missing.json") == ({}, None)


def test_damaged_file_and_entries_are_ignored_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    onions, problem = load_friend_onions(path)
    assert onions == {}
    assert problem is not None
    assert "unreadable" in problem
    good = _onion()
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "friends": {
                    "11" * 32: {"onion": good, "port": 443},
                    "22" * 32: {"onion": "nope.onion", "port": 443},
                    "33" * 32: {"onion": good, "port": 0},
                    "zz": {"onion": good, "port": 443},
                },
            }
        )
    )
    onions, problem = load_friend_onions(path)
    assert onions == {bytes.fromhex("11" * 32): (good, 443)}
    assert problem is not None
    assert "3 damaged entries" in problem
    path.write_text(json.dumps({"version": 2, "friends": {}}))
    assert load_friend_onions(path)[0] == {}


def test_announced_onion_is_known_after_a_restart(tmp_path: Path) -> None:
    profile = toxcore_profile(tmp_path / "a.tox")
    friend = bytes([7]) * 32
    address = _onion()
    first = TorNode(profile, NodeOptions(), CONFIG)
    assert friend not in first.friend_onions
    first._friend_onion_announced(friend, address, 443)
    assert (tmp_path / "a.tox.onions.json").exists()
    again = TorNode(profile, NodeOptions(), CONFIG)
    assert again.friend_onions[friend] == (address, 443)
    # The config names a friend's onion explicitly: it wins over the remembered one.
    configured = _onion()
    config = TorConfig(socks="127.0.0.1:1", friends=(TorFriend(friend, configured, 9999),))
    assert TorNode(profile, NodeOptions(), config).friend_onions[friend] == (configured, 9999)
