"""The dependency rule (style guide section 1), checked on the source.

Sans-IO cores and codecs never import trio, socket, time, random, os, subprocess or threading:
that is what lets one process simulate hundreds of nodes deterministically. Only
``tunnel/io/``, ``tunnel/testing/``, ``tunnel/commands/``, ``tunnel/node.py`` and
``tunnel/cli.py`` (plus the few modules listed in ``IO_MODULES``) may.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tunnel"
FORBIDDEN = {"trio", "socket", "time", "random", "os", "subprocess", "threading", "asyncio"}
IO_DIRS = {"io", "testing", "commands"}
IO_MODULES = {
    "node.py",
    "cli.py",
    "__main__.py",
    # identity storage and config files: they read and write the file system
    "profile.py",
    "config.py",
}
IO_FILES = {
    # Tor transport: the Trio control/SOCKS clients and the key file; the control-protocol
    # parsing they use (tor/protocol.py) and the onion keys (tor/onion_key.py) stay sans-IO
    "tor/control.py",
    "tor/check.py",
    "tor/keystore.py",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_cores_and_codecs_do_no_io() -> None:
    offenders: list[str] = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if (
            rel.parts[0] in IO_DIRS
            or (len(rel.parts) == 1 and rel.name in IO_MODULES)
            or rel.as_posix() in IO_FILES
        ):
            continue
        checked += 1
        bad = _imports(path) & FORBIDDEN
        if bad:
            offenders.append(f"{rel}: {', '.join(sorted(bad))}")
    assert checked >= 5
    assert offenders == []


def test_wire_imports_only_crypto_and_errors() -> None:
    for path in sorted((PACKAGE / "wire").rglob("*.py")):
        for name in _imports(path):
            if name == "tunnel":
                tree = ast.parse(path.read_text())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.module:
                        mod = node.module
                        assert not mod.startswith("tunnel.") or mod.split(".")[1] in {
                            "wire",
                            "crypto",
                            "errors",
                            "toxid",
                        }, f"{path.name} imports {mod}"
