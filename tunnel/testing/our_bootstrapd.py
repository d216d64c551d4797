"""Run our own ``tunnel bootstrapd`` (DHT node, onion relay, TCP relay) as a child process.

The counterpart of :class:`tunnel.testing.bootstrapd.Bootstrapd` (real tox-bootstrapd) with
the same attributes (``host``, ``udp_port``, ``tcp_ports``, ``public_key``), so tests and
benchmarks can run the same scenario through either. Ours serves its TCP relay from an event
loop; tox-bootstrapd polls its sockets every 30 ms (``sleep_milliseconds(30)`` in its main
loop), which bounds every round trip through its relay from below.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tunnel.commands.bootstrapd import load_or_create_keys
from tunnel.testing.bootstrapd import popen_dies_with_parent

READY_LINE = "TCP relay listening"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class OurBootstrapd:
    """``python -m tunnel bootstrapd -c FILE`` with onion and TCP relay, on ``host``."""

    def __init__(
        self,
        workdir: Path,
        udp_port: int,
        tcp_ports: Sequence[int],
        *,
        host: str = "127.0.0.1",
        motd: str = "tunnel-test",
    ) -> None:
        if not tcp_ports:
            raise ValueError("our bootstrapd is started with at least one TCP relay port")
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.udp_port = udp_port
        self.tcp_ports = tuple(tcp_ports)
        keys_file = workdir / "bsd.keys"
        self.public_key = load_or_create_keys(keys_file).public_key
        self.config_path = workdir / "bootstrapd.yaml"
        self.config_path.write_text(
            "role: bootstrapd\n"
            f"keys_file: {keys_file}\n"
            f"port: {udp_port}\n"
            "ipv6: false\n"
            f"motd: {motd}\n"
            f"tcp_relay_ports: [{', '.join(str(p) for p in self.tcp_ports)}]\n"
            "lan_discovery: false\n"
            "onion: true\n"
        )
        self.log = workdir / "bootstrapd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcp_port(self) -> int:
        """The first TCP relay port."""
        return self.tcp_ports[0]

    def start(self) -> Self:
        """Start the process and wait (bounded) until its TCP relay listens."""
        with self.log.open("wb") as out:
            self.proc = popen_dies_with_parent(
                [sys.executable, "-m", "tunnel", "bootstrapd", "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        steps = int(START_TIMEOUT_S / 0.05)
        for _ in range(steps):
            if READY_LINE in self.log.read_text():
                return self
            if self.proc.poll() is not None:
                break
            try:
                self.proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        self.stop()
        raise RuntimeError(
            f"tunnel bootstrapd never printed {READY_LINE!r}:\n{self.log.read_text()}"
        )

    def stop(self) -> int:
        """Stop the process (SIGTERM, then SIGKILL); returns its exit status."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.terminate()
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return -9

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
