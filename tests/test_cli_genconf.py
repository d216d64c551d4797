"""``tunnel genconf``: complete, commented configs that pass check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.cli import main
from tunnel.commands.genconf import TEMPLATES
from tunnel.config import BootstrapdConfig, NodeConfig, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_templates_are_the_example_files() -> None:
    for role, text in TEMPLATES.items():
        assert (CONFIGS / f"{role}.yaml").read_text() == text, f"configs/{role}.yaml out of sync"


@pytest.mark.parametrize(("role", "kind"), [("node", NodeConfig), ("bootstrapd", BootstrapdConfig)])
def test_genconf_output_passes_check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, role: str, kind: type
) -> None:
    assert main(["genconf", "--role", role]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#")
    assert text.count("\n#") > 10
    path = tmp_path / f"{role}.yaml"
    path.write_text(text)
    assert isinstance(load_config(path), kind)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"role: {role}\n")
    assert err == ""


def test_default_role_is_node(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["genconf"]) == 0
    assert "role: node\n" in capsys.readouterr().out


def test_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "out.yaml"
    assert main(["genconf", "-o", str(path)]) == 0
    assert path.read_text() == TEMPLATES["node"]
    capsys.readouterr()
    assert main(["genconf", "--role", "bootstrapd", "-o", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == f"tunnel genconf: error: {path}: already exists (use --force to overwrite)\n"
    assert path.read_text() == TEMPLATES["node"]
    assert main(["genconf", "--role", "bootstrapd", "-o", str(path), "--force"]) == 0
    assert path.read_text() == TEMPLATES["bootstrapd"]


def test_bad_role_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["genconf", "--role", "vpn"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["genconf", "--help"])
    assert info.value.code == 0
    assert "--role" in capsys.readouterr().out
