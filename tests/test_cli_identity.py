"""``tunnel id``: creates the identity once, prints the Tox ID alone on the first line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.cli import main
from tunnel.profile import Profile
from tunnel.toxid import ToxId

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def run_id(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["id", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_creates_then_reuses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "me.tox"
    status, out, err = run_id(capsys, "--profile", str(path))
    assert status == 0
    assert err == f"created new identity at {path}\n"
    first = out.splitlines()[0]
    tox_id = ToxId.parse(first)
    assert first == str(tox_id)
    assert len(first) == 76
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Profile.load(path).tox_id == tox_id

    status, out, err = run_id(capsys, "--profile", str(path))
    assert (status, out.splitlines()[0], err) == (0, first, "")


def test_default_profile_location(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = run_id(capsys)
    assert status == 0
    path = tmp_path / "xdg" / "tunnel" / "profile.tox"
    assert err == f"created new identity at {path}\n"
    assert Profile.load(path).tox_id == ToxId.parse(out.splitlines()[0])


def test_profile_from_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "node.yaml"
    conf.write_text("profile: sub/from-config.tox\n")
    status, out, _ = run_id(capsys, "-c", str(conf))
    assert status == 0
    assert Profile.load(tmp_path / "sub" / "from-config.tox").tox_id == ToxId.parse(out.split()[0])


def test_new_nospam(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "me.tox"
    _, out, _ = run_id(capsys, "--profile", str(path))
    old = ToxId.parse(out.splitlines()[0])
    status, out, err = run_id(capsys, "--profile", str(path), "--new-nospam")
    new = ToxId.parse(out.splitlines()[0])
    assert status == 0
    assert "new nospam" in err
    assert new.public_key == old.public_key
    assert new.nospam != old.nospam
    assert Profile.load(path).tox_id == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tunnel id: error: ")
    return lines[0]


def test_corrupt_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "me.tox"
    path.write_bytes(b"\0" * 100)
    status, out, err = run_id(capsys, "--profile", str(path))
    assert status == 1
    assert out == ""
    assert f"{path}: not a valid Tox profile" in one_error_line(err)
    assert path.read_bytes() == b"\0" * 100  # never overwritten


def test_unreadable_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "me.tox"
    path.mkdir()  # a directory cannot be read as a file, even by root
    status, out, err = run_id(capsys, "--profile", str(path))
    assert (status, out) == (1, "")
    assert f"{path}: cannot read profile" in one_error_line(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "me.tox"
    main(["id", "--profile", str(path)])
    capsys.readouterr()
    os.chmod(path, 0)
    status, _, err = run_id(capsys, "--profile", str(path))
    assert status == 1
    assert "Permission denied" in one_error_line(err)


def test_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "node.yaml"
    conf.write_text("udp:\n  prot: 1\n")
    status, out, err = run_id(capsys, "-c", str(conf))
    assert (status, out) == (1, "")
    assert one_error_line(err) == "tunnel id: error: udp.prot: unknown key"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["id", "--help"])
    assert info.value.code == 0
    assert "--new-nospam" in capsys.readouterr().out


def test_python_m_tunnel_id_subprocess(tmp_path: Path) -> None:
    path = tmp_path / "sub.tox"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    result = subprocess.run(
        [sys.executable, "-m", "tunnel", "id", "--profile", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"created new identity at {path}\n"
    assert Profile.load(path).tox_id == ToxId.parse(result.stdout.splitlines()[0])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
