"""Save data interop with real libtoxcore 0.2.18 (tox-protocol.md section 10).

Both directions: what ``tox_get_savedata`` writes decodes to the identity toxcore reports, and
re-encodes byte for byte; what we encode loads into toxcore (``TOX_SAVEDATA_TYPE_TOX_SAVE``)
and toxcore then reports the same address, name and friends. No network needed: fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.crypto import KeyPair
from tunnel.profile import Profile
from tunnel.testing.rng import SeededRng
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_factory import ToxPeerFactory
from tunnel.toxid import ToxId
from tunnel.wire.savedata import (
    FRIEND_STATUS_CONFIRMED,
    SaveData,
    SavedFriend,
    decode_savedata_untrusted,
)

pytestmark = pytest.mark.toxcore

FRIEND_KEYS = [KeyPair.from_secret_key(bytes([i]) * 32) for i in (7, 8)]


def _assert_encodes_back(raw: bytes, decoded: SaveData) -> None:
    """Our encoding equals toxcore's save data up to toxcore's trailing zero padding."""
    ours = decoded.encode()
    assert raw[: len(ours)] == ours
    assert raw[len(ours) :] == bytes(len(raw) - len(ours))


def _toxcore_profile(tox_peer_factory: ToxPeerFactory) -> tuple[ToxPeer, bytes]:
    """A real toxcore instance with a name, status message, nospam and two friends."""
    peer = tox_peer_factory("saver", udp=False)
    peer.set_name("alice ✓")
    peer.set_status_message("testing savedata")
    peer.set_nospam(b"\xde\xad\xbe\xef")
    requested = ToxId(FRIEND_KEYS[0].public_key, b"\x01\x02\x03\x04").to_bytes()
    assert peer.friend_add(requested, "please add me") == 0
    assert peer.friend_add_norequest(FRIEND_KEYS[1].public_key) == 1
    return peer, peer.get_savedata()


def test_toxcore_savedata_decodes_to_the_address_toxcore_reports(
    tox_peer_factory: ToxPeerFactory,
) -> None:
    peer, raw = _toxcore_profile(tox_peer_factory)
    decoded = decode_savedata_untrusted(raw)
    assert ToxId(decoded.public_key, decoded.nospam).to_bytes() == peer.address
    assert decoded.nospam == b"\xde\xad\xbe\xef"
    assert decoded.public_key == peer.public_key
    assert decoded.secret_key == peer.secret_key
    assert decoded.name == "alice ✓".encode()
    assert decoded.status_message == b"testing savedata"
    friends = {f.public_key: f for f in decoded.friends}
    assert set(friends) == {k.public_key for k in FRIEND_KEYS}
    requested = friends[FRIEND_KEYS[0].public_key]
    assert requested.request_message == b"please add me"
    assert requested.nospam == b"\x01\x02\x03\x04"
    assert friends[FRIEND_KEYS[1].public_key].status == FRIEND_STATUS_CONFIRMED
    _assert_encodes_back(raw, decoded)


def test_savedata_we_encode_loads_into_toxcore(tmp_path: Path) -> None:
    keys = KeyPair.from_secret_key(bytes(range(40, 72)))
    friend = SavedFriend(
        status=FRIEND_STATUS_CONFIRMED,
        public_key=FRIEND_KEYS[0].public_key,
        name=b"bob",
        status_message=b"away for lunch",
        last_seen=1_700_000_000,
    )
    ours = SaveData(
        nospam=b"\x0a\x0b\x0c\x0d",
        public_key=keys.public_key,
        secret_key=keys.secret_key,
        friends=(friend,),
        name=b"carol",
        status_message=b"hello",
    )
    with ToxPeer("loader", udp=False, savedata=ours.encode(), start=False) as peer:
        assert peer.address == ToxId(keys.public_key, b"\x0a\x0b\x0c\x0d").to_bytes()
        assert peer.secret_key == keys.secret_key
        assert peer.name_bytes == b"carol"
        assert peer.friend_list() == [0]
        assert peer.friend_public_key(0) == FRIEND_KEYS[0].public_key
        # toxcore writes back what it loaded: decode its save data again.
        again = decode_savedata_untrusted(peer.get_savedata())
    assert (again.public_key, again.secret_key, again.nospam) == (
        keys.public_key,
        keys.secret_key,
        b"\x0a\x0b\x0c\x0d",
    )
    assert (again.name, again.status_message) == (b"carol", b"hello")
    assert [(f.public_key, f.name, f.status_message) for f in again.friends] == [
        (FRIEND_KEYS[0].public_key, b"bob", b"away for lunch")
    ]


def test_toxcore_savedata_round_trips_through_our_codec_into_toxcore(
    tox_peer_factory: ToxPeerFactory,
) -> None:
    peer, raw = _toxcore_profile(tox_peer_factory)
    reencoded = decode_savedata_untrusted(raw).encode()
    with ToxPeer("reloaded", udp=False, savedata=reencoded, start=False) as reloaded:
        assert reloaded.address == peer.address
        assert reloaded.name_bytes == peer.name_bytes
        assert [reloaded.friend_public_key(n) for n in reloaded.friend_list()] == [
            k.public_key for k in FRIEND_KEYS
        ]


def test_profile_reads_a_toxcore_profile(tox_peer_factory: ToxPeerFactory, tmp_path: Path) -> None:
    peer, raw = _toxcore_profile(tox_peer_factory)
    path = tmp_path / "alice.tox"
    path.write_bytes(raw)
    profile = Profile.load(path)
    assert profile.tox_id.to_bytes() == peer.address
    assert {f.public_key for f in profile.friends} == {k.public_key for k in FRIEND_KEYS}
    # Saving it again keeps everything toxcore needs: toxcore loads our rewrite.
    profile.save(tmp_path / "resaved.tox")
    resaved = (tmp_path / "resaved.tox").read_bytes()
    with ToxPeer("resaved", udp=False, savedata=resaved, start=False) as reloaded:
        assert reloaded.address == peer.address
        assert reloaded.name_bytes == peer.name_bytes
        assert len(reloaded.friend_list()) == 2


def test_profile_we_generate_loads_into_toxcore(tmp_path: Path) -> None:
    path = tmp_path / "fresh.tox"
    profile = Profile.create(path, SeededRng(2026))
    with ToxPeer("fresh", udp=False, savedata=path.read_bytes(), start=False) as peer:
        assert peer.address == profile.tox_id.to_bytes()
        assert peer.secret_key == profile.key_pair.secret_key
