"""``tunnel id`` against real libtoxcore 0.2.18: the printed Tox ID is one toxcore accepts, and
the profile it writes is one toxcore loads (and reports the same address for).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.cli import main
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_factory import ToxPeerFactory

pytestmark = pytest.mark.toxcore


def _tunnel_id(capsys: pytest.CaptureFixture[str], *args: str) -> bytes:
    capsys.readouterr()
    assert main(["id", *args]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    assert len(first_line) == 76
    return bytes.fromhex(first_line)


def test_tunnel_id_prints_an_address_toxcore_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tox_peer_factory: ToxPeerFactory
) -> None:
    path = tmp_path / "node.tox"
    address = _tunnel_id(capsys, "--profile", str(path))
    peer = tox_peer_factory("befriender", udp=False)
    friend = peer.friend_add(address, "hello tunnel")
    assert peer.friend_public_key(friend) == address[:32]
    # The profile tunnel wrote loads into toxcore, which reports the same address.
    with ToxPeer("loads-tunnel-profile", udp=False, savedata=path.read_bytes(), start=False) as t:
        assert t.address == address
    # Asking again prints the same ID.
    assert _tunnel_id(capsys, "--profile", str(path)) == address


def test_tunnel_id_reads_a_toxcore_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tox_peer_factory: ToxPeerFactory
) -> None:
    peer = tox_peer_factory("toxcore-profile", udp=False)
    peer.set_name("made by toxcore")
    path = tmp_path / "toxcore.tox"
    path.write_bytes(peer.get_savedata())
    assert _tunnel_id(capsys, "--profile", str(path)) == peer.address


def test_tunnel_id_new_nospam_is_what_toxcore_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.tox"
    before = _tunnel_id(capsys, "--profile", str(path))
    after = _tunnel_id(capsys, "--profile", str(path), "--new-nospam")
    assert after[:32] == before[:32]
    assert after[32:36] != before[32:36]
    with ToxPeer("nospam", udp=False, savedata=path.read_bytes(), start=False) as t:
        assert t.address == after
