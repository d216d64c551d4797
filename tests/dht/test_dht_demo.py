"""``tunnel demo`` stage 1: identity, local bootstrap node, a second node joins via the DHT."""

from __future__ import annotations

import re
import subprocess
import sys

from tunnel.testing.ports import PortPool
from tunnel.toxid import ToxId

PORTS = PortPool(42800, 42899)


def test_demo_runs_and_reports_each_step() -> None:
    port = PORTS.allocate(2)[0]
    proc = subprocess.run(
        [sys.executable, "-m", "tunnel", "demo", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=40,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    match = re.fullmatch(r"identity created: ([0-9A-F]{76})", lines[0])
    assert match is not None, lines
    ToxId.parse(match.group(1))  # checksum verifies
    assert lines[1] == f"local bootstrap node up on 127.0.0.1:{port}"
    assert re.fullmatch(r"second node joined: it knows [1-9][0-9]* nodes?", lines[2]), lines
