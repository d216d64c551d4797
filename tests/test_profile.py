"""The identity file: create, load, atomic 0600 save, clear one-line errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tunnel.crypto.keys import KeyPair
from tunnel.errors import ConfigError
from tunnel.profile import Profile, write_file_atomic
from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId
from tunnel.wire.savedata import SavedFriend, decode_savedata_untrusted

VECTORS = Path(__file__).resolve().parent / "vectors"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        Profile.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_create_then_load(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "profile.tox"
    created = Profile.create(path, SeededRng(7))
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    expected = KeyPair.generate(SeededRng(7))
    assert created.key_pair == expected
    loaded = Profile.load(path)
    assert loaded.tox_id == created.tox_id
    assert loaded.key_pair == expected
    assert loaded.path == path
    assert isinstance(loaded.tox_id, ToxId)
    assert ToxId.parse(str(loaded.tox_id)) == loaded.tox_id
    assert decode_savedata_untrusted(path.read_bytes()) == created.savedata
    assert list(tmp_path.glob("deep/dir/.*")) == []  # no temp files left behind


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    Profile.create(path, SeededRng(1))
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        Profile.create(path, SeededRng(2))
    assert path.read_bytes() == before


def test_create_does_not_replace_a_file_that_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.tox"
    real_fchmod = os.fchmod

    def racing_fchmod(fd: int, mode: int) -> None:
        path.write_bytes(b"someone else's")  # appears between the check and the rename
        real_fchmod(fd, mode)

    monkeypatch.setattr(os, "fchmod", racing_fchmod)
    with pytest.raises(ConfigError, match="already exists"):
        Profile.create(path, SeededRng(2))
    assert path.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tox"]


def test_create_in_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot write profile"):
        Profile.create(blocker / "p.tox", SeededRng(2))


def test_set_nospam_and_save_keeps_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    profile = Profile.create(path, SeededRng(3))
    old_id = profile.tox_id
    profile.set_nospam(b"\x01\x02\x03\x04")
    profile.save()
    loaded = Profile.load(path)
    assert loaded.nospam == b"\x01\x02\x03\x04"
    assert loaded.public_key == old_id.public_key
    assert loaded.tox_id != old_id
    with pytest.raises(ValueError, match="4 bytes"):
        profile.set_nospam(b"\x01")


def test_save_always_writes_0600(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    old_umask = os.umask(0)
    try:
        profile = Profile.generate(SeededRng(4))
        profile.update(name=b"alice", friends=(SavedFriend(3, bytes(32), name=b"bob"),))
        profile.save(path)
    finally:
        os.umask(old_umask)
    assert mode_of(path) == 0o600
    loaded = Profile.load(path)
    assert loaded.savedata.name == b"alice"
    assert loaded.friends[0].name == b"bob"


def test_load_group_readable_profile_without_complaint(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    Profile.create(path, SeededRng(5))
    os.chmod(path, 0o644)
    Profile.load(path).save()
    assert mode_of(path) == 0o600


def test_load_real_toxcore_profile(tmp_path: Path) -> None:
    profile = Profile.load(VECTORS / "savedata_toxcore_0_2_18.bin")
    assert str(profile.tox_id).endswith("04030201B02D")
    copy = tmp_path / "copy.tox"
    profile.save(copy)
    assert Profile.load(copy).savedata == profile.savedata


def test_failed_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.tox"
    profile = Profile.create(path, SeededRng(6))
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    profile.set_nospam(b"\xff\xff\xff\xff")
    with pytest.raises(ConfigError, match=r"cannot write profile: No space left on device"):
        profile.save()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tox"]


def test_write_file_atomic_mode(tmp_path: Path) -> None:
    write_file_atomic(tmp_path / "f", b"data", mode=0o640)
    assert mode_of(tmp_path / "f") == 0o640


def test_load_missing(tmp_path: Path) -> None:
    assert "profile not found" in load_error(tmp_path / "none.tox")


def test_load_directory(tmp_path: Path) -> None:
    assert "cannot read profile" in load_error(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_load_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    Profile.create(path, SeededRng(8))
    os.chmod(path, 0)
    assert "cannot read profile: Permission denied" in load_error(path)


def test_load_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    path.write_bytes(b"this is not a profile")
    assert "not a valid Tox profile" in load_error(path)
    good = Profile.generate(SeededRng(9)).savedata.encode()
    path.write_bytes(good[:50])
    assert "not a valid Tox profile: " in load_error(path)
    path.write_bytes(b"")
    assert "not a valid Tox profile" in load_error(path)


def test_load_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "p.tox"
    path.write_bytes(b"toxEsave" + bytes(200))
    assert "encrypted" in load_error(path)


def test_save_without_path() -> None:
    with pytest.raises(ConfigError, match="no file"):
        Profile.generate(SeededRng(10)).save()
