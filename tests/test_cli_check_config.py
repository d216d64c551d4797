"""``tunnel check-config FILE``: normalised output or one error line and exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunnel.cli import main
from tunnel.config import load_config, parse_config
from tunnel.toxid import ToxId

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PK = "A4E09292B651C278B9772C569F5FA9BB13D906B46AB68C9DF9DC2B4409F8A209"


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    status = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return status, out, err


def one_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = "tunnel check-config: error: "
    assert lines[0].startswith(prefix)
    return lines[0][len(prefix) :]


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    status, out, err = check(capsys, path)
    assert (status, err) == (0, "")
    role = yaml.safe_load(path.read_text()).get("role", "node")
    if role in ("node", "bootstrapd"):
        assert parse_config(yaml.safe_load(out)) == load_config(path)
    else:
        assert yaml.safe_load(out)["role"] == role


def test_serve_config_error_names_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("role: serve\nnode:\n  udp:\n    port_start: abc\n")
    status, _, err = check(capsys, path)
    assert status == 1
    assert one_error(err).startswith("node.udp.port_start:")


def test_normalised_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    friend = ToxId(bytes.fromhex(PK), b"\x01\x02\x03\x04")
    path.write_text(
        f"udp: {{port_start: 46000, port_end: 46010}}\n"
        f"friends:\n  - public_key: {str(friend).lower()}\n    name: pal\n"
        f"profile: ./me.tox\nlog_level: WARNING\n"
    )
    status, out, err = check(capsys, path)
    assert (status, err) == (0, "")
    data = yaml.safe_load(out)
    assert data["role"] == "node"
    assert data["udp"] == {"enabled": True, "ipv6": True, "port_start": 46000, "port_end": 46010}
    assert data["friends"] == [{"public_key": PK, "name": "pal"}]
    assert data["profile"] == str(tmp_path / "me.tox")
    assert data["log_level"] == "warning"
    assert data["hole_punching"] is True


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("udp:\n  prot: 1\n", "udp.prot: unknown key"),
        ("udp:\n  port_start: abc\n", "udp.port_start: expected an integer 1-65535, got 'abc'"),
        (
            "friends:\n  - public_key: " + PK + "\n  - public_key: " + PK + "\n"
            "  - public_key: " + PK[:-2] + "\n",
            "friends[2].public_key: expected 64 hex characters (public key) or 76 (Tox ID), "
            "got 62 characters",
        ),
        (
            "friends:\n  - public_key: " + PK + "0102030400FF\n",
            "friends[0].public_key: Tox ID checksum does not match (mistyped ID?)",
        ),
        ("role: bootstrapd\nmotd: " + "x" * 300 + "\n", "motd: expected at most 256 bytes"),
    ],
)
def test_bad_config_gives_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    status, out, err = check(capsys, path)
    assert (status, out) == (1, "")
    assert one_error(err).startswith(error)


def test_yaml_syntax_error_names_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("udp: [1, 2\nfoo: bar\n")
    status, out, err = check(capsys, path)
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{path}: YAML syntax error at line ")


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = check(capsys, tmp_path / "nope.yaml")
    assert status == 1
    assert (
        one_error(err)
        == f"{tmp_path / 'nope.yaml'}: cannot read config file: No such file or directory"
    )


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check-config", "--help"])
    assert info.value.code == 0
    assert "FILE" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["check-config"])
    assert info.value.code == 2
