"""The CLI entry point: a command imports only its own modules (start-up time counts toward
the first forwarded byte), the top-level help still lists every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunnel.cli import COMMANDS, main


def test_running_one_command_imports_only_its_modules() -> None:
    code = (
        "import sys; from tunnel.cli import main; status = main(['version']); "
        "print(status, 'tunnel.io.vpn_node' in sys.modules, 'tunnel.commands.serve' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    assert out[-3:] == ["0", "False", "False"]


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in COMMANDS:
        assert name in text


def test_unknown_command_names_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["nosuch"])
    assert "invalid choice: 'nosuch'" in capsys.readouterr().err
