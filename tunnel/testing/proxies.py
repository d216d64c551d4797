"""Real proxy processes for tests: ``microsocks`` (SOCKS5) and ``tinyproxy`` (HTTP CONNECT).

Both are small Debian packages (``scripts/install.sh --dev`` installs them). Each helper
starts the proxy on 127.0.0.1 with an explicit port, waits until it accepts connections, keeps
its log in a file (so a test can check the proxy really carried the traffic) and stops it on
exit, even when the test fails. Children die with the test runner (see
:func:`tunnel.testing.bootstrapd.popen_dies_with_parent`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tunnel.testing.bootstrapd import popen_dies_with_parent

PROXY_START_TIMEOUT_S = 10.0
PROXY_STOP_TIMEOUT_S = 5.0


class ProxyProcessError(RuntimeError):
    """The proxy binary is missing or did not start."""


class _ProxyProcess:
    executable = ""

    def __init__(self, workdir: str | Path, port: int, name: str) -> None:
        self.workdir = Path(workdir).absolute()
        self.port = port
        self.host = "127.0.0.1"
        self.log_path = self.workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        """True if the proxy binary is installed."""
        return shutil.which(cls.executable) is not None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the proxy and wait until its port accepts connections."""
        exe = shutil.which(self.executable)
        if exe is None:
            raise ProxyProcessError(
                f"{self.executable} is not installed (scripts/install.sh --dev)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = popen_dies_with_parent(
            [exe, *self._argv()], stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + PROXY_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()
                raise ProxyProcessError(f"{self.executable} exited:\n{self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ProxyProcessError(f"{self.executable} did not listen on {self.port}")

    def stop(self) -> None:
        """Terminate the proxy (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(PROXY_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        """Everything the proxy logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Microsocks(_ProxyProcess):
    """``microsocks`` SOCKS5 server; logs ``client[N] IP: connected to HOST:PORT`` per tunnel."""

    executable = "microsocks"

    def __init__(
        self,
        workdir: str | Path,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(workdir, port, f"microsocks-{port}")
        self.username = username
        self.password = password

    def _argv(self) -> list[str]:
        argv = ["-i", self.host, "-p", str(self.port)]
        if self.username is not None:
            argv += ["-u", self.username, "-P", self.password or ""]
        return argv

    def url(self) -> str:
        """``socks5://[user:pass@]127.0.0.1:port``."""
        cred = f"{self.username}:{self.password}@" if self.username is not None else ""
        return f"socks5://{cred}{self.host}:{self.port}"

    def tunnels_to(self, port: int) -> int:
        """How many tunnels the proxy opened to ``127.0.0.1:port``."""
        return self.log_text().count(f"connected to 127.0.0.1:{port}")


class Tinyproxy(_ProxyProcess):
    """``tinyproxy`` HTTP proxy that allows CONNECT to ``connect_ports`` only."""

    executable = "tinyproxy"

    def __init__(self, workdir: str | Path, port: int, connect_ports: Sequence[int]) -> None:
        super().__init__(workdir, port, f"tinyproxy-{port}")
        self.connect_ports = list(connect_ports)
        self.config_path = self.workdir / f"tinyproxy-{port}.conf"
        self.access_log_path = self.workdir / f"tinyproxy-{port}.access.log"

    def _argv(self) -> list[str]:
        lines = [
            f"Port {self.port}",
            f"Listen {self.host}",
            "Timeout 60",
            f'LogFile "{self.access_log_path}"',
            "LogLevel Connect",
            "MaxClients 50",
            f"Allow {self.host}",
            "DisableViaHeader Yes",
            *(f"ConnectPort {p}" for p in self.connect_ports),
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return ["-d", "-c", str(self.config_path)]

    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return f"http://{self.host}:{self.port}"

    def log_text(self) -> str:
        """The access log (CONNECT requests) followed by the console output."""
        try:
            access = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            access = ""
        return access + super().log_text()

    def tunnels_to(self, port: int) -> int:
        """How many CONNECT tunnels to ``127.0.0.1:port`` the proxy logged."""
        return self.log_text().count(f"CONNECT 127.0.0.1:{port} ")
