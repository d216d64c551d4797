"""Run a real ``tox-bootstrapd`` (c-toxcore 0.2.18, Debian ``toxcore-utils``) for interop tests.

toxcore-test-peers.md section 2. The daemon is a DHT node, onion relay and announce store, and
(with ``tcp_ports``) a TCP relay using the same key pair. :class:`Bootstrapd` writes its
libconfig file with explicit ports and LAN discovery off, pre-generates the 64-byte keys file
(``public_key || secret_key``) so the key is known before the daemon starts, runs it in the
foreground, checks the ``Public Key:`` line it logs, and keeps the whole log in a file.

Child processes started here die with the test runner: they are launched through
``setpriv --pdeathsig KILL`` from one long-lived spawner thread (``PR_SET_PDEATHSIG`` fires when
the *thread* that forked exits, so forking from a short-lived worker thread would kill them early).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from nacl.public import PrivateKey

BOOTSTRAPD_EXECUTABLE = "tox-bootstrapd"
BOOTSTRAPD_START_TIMEOUT_S = 15.0
BOOTSTRAPD_STOP_TIMEOUT_S = 5.0
PUBLIC_KEY_LINE_PREFIX = "Public Key: "
KEYS_FILE_SIZE_BYTES = 64
_PR_SET_PDEATHSIG = 1

_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunnel-child-spawner")
"""The one thread every test child process is forked from: it lives as long as the runner."""


class BootstrapdError(RuntimeError):
    """tox-bootstrapd did not start, or did not behave; the message carries its log."""


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen_dies_with_parent(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    process_group: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` so that it gets SIGKILL if this (test runner) process dies.

    Uses ``setpriv --pdeathsig KILL`` when available (no ``preexec_fn``, which is unsafe in a
    process with threads); otherwise a ctypes ``prctl`` in ``preexec_fn``. The fork happens on
    a dedicated thread that lives as long as the process.
    """
    setpriv = shutil.which("setpriv")
    full = [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)
    preexec: Callable[[], None] | None = None if setpriv else _set_pdeathsig

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            full,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            process_group=process_group,
            preexec_fn=preexec,  # fallback only, see docstring
        )

    return _spawner.submit(spawn).result()


def _libconfig_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _udp_port_bound(port: int, ipv6: bool) -> bool:
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(("::" if ipv6 else "0.0.0.0", port))
        except OSError:
            return True
    return False


class Bootstrapd:
    """One ``tox-bootstrapd`` process, configured for an offline test network.

    Use as a context manager (starts on enter, stops on exit) or call :meth:`start` /
    :meth:`stop`. ``bootstrap_nodes`` are ``(host, udp_port, public_key)`` triples.
    ``netns`` runs the daemon under ``ip netns exec NAME``; then pass ``host``, the address
    clients reach it at (otherwise :attr:`host` is loopback).
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        udp_port: int,
        tcp_ports: Sequence[int] = (),
        *,
        motd: str = "tunnel-test-bootstrapd",
        bootstrap_nodes: Sequence[tuple[str, int, bytes]] = (),
        ipv6: bool = False,
        netns: str | None = None,
        host: str | None = None,
        secret_key: bytes | None = None,
        name: str = "bootstrapd",
        executable: str = BOOTSTRAPD_EXECUTABLE,
    ) -> None:
        if not 1 <= udp_port <= 65535 or any(not 1 <= p <= 65535 for p in tcp_ports):
            raise ValueError("ports must be explicit and in 1-65535")
        self.workdir = Path(workdir).absolute()
        self.udp_port = udp_port
        self.tcp_ports: tuple[int, ...] = tuple(tcp_ports)
        self.motd = motd
        self.bootstrap_nodes = list(bootstrap_nodes)
        self.ipv6 = ipv6
        self.netns = netns
        self._host = host
        self.name = name
        self.executable = executable
        key = PrivateKey(secret_key) if secret_key is not None else PrivateKey.generate()
        self.secret_key = bytes(key)
        self.public_key = bytes(key.public_key)
        self.config_path = self.workdir / f"{name}.conf"
        self.keys_path = self.workdir / f"{name}.keys"
        self.pid_path = self.workdir / f"{name}.pid"
        self.log_path = self.workdir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()

    # ------------------------------------------------------------------ configuration

    @property
    def host(self) -> str:
        """The address clients should use: ``host`` if given, else loopback (``::1`` with IPv6)."""
        if self._host is not None:
            return self._host
        return "::1" if self.ipv6 else "127.0.0.1"

    @property
    def node(self) -> tuple[str, int, bytes]:
        """``(host, udp_port, public_key)``, as other daemons' ``bootstrap_nodes`` want it."""
        return (self.host, self.udp_port, self.public_key)

    def config_text(self) -> str:
        """The libconfig file this daemon runs with."""
        nodes = ",\n".join(
            f"  {{ address = {_libconfig_string(host)}; port = {port}; "
            f"public_key = {_libconfig_string(pk.hex().upper())}; }}"
            for host, port, pk in self.bootstrap_nodes
        )
        lines = [
            "// tox-bootstrapd config written by tunnel.testing.bootstrapd",
            f"port = {self.udp_port};",
            f"keys_file_path = {_libconfig_string(str(self.keys_path))};",
            f"pid_file_path = {_libconfig_string(str(self.pid_path))};",
            f"enable_ipv6 = {'true' if self.ipv6 else 'false'};",
            "enable_ipv4_fallback = true;",
            "enable_lan_discovery = false;",
            f"enable_tcp_relay = {'true' if self.tcp_ports else 'false'};",
            f"tcp_relay_ports = [{', '.join(str(p) for p in self.tcp_ports)}];",
            "enable_motd = true;",
            f"motd = {_libconfig_string(self.motd)};",
            f"bootstrap_nodes = (\n{nodes}\n);" if nodes else "bootstrap_nodes = ();",
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int | None:
        """The process id while started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process has been started and not exited."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = BOOTSTRAPD_START_TIMEOUT_S) -> Self:
        """Write config and keys, start the daemon and wait for its ``Public Key:`` line.

        Raises:
            BootstrapdError: the daemon exited, timed out, or reported another key.
        """
        if self._proc is not None:
            raise RuntimeError("already started")
        exe = shutil.which(self.executable)
        if exe is None:
            raise BootstrapdError(
                f"{self.executable} not found: apt-get install toxcore-utils "
                "(scripts/install.sh --dev)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keys_path.write_bytes(self.public_key + self.secret_key)
        self.keys_path.chmod(0o600)
        self.config_path.write_text(self.config_text())
        argv = [exe, f"--config={self.config_path}", "--foreground", "--log-backend=stdout"]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self._proc = popen_dies_with_parent(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        self._reader = threading.Thread(target=self._read_log, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        try:
            line = self.wait_for_log(PUBLIC_KEY_LINE_PREFIX, timeout)
            reported = line.split(PUBLIC_KEY_LINE_PREFIX, 1)[1].strip().lower()
            if reported != self.public_key.hex():
                raise BootstrapdError(
                    f"{self.name} reports public key {reported}, "
                    f"expected {self.public_key.hex()}\n{self.log_text()}"
                )
            if self.netns is None and not _udp_port_bound(self.udp_port, self.ipv6):
                raise BootstrapdError(
                    f"{self.name} did not bind UDP port {self.udp_port}\n{self.log_text()}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _read_log(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        with self.log_path.open("a", encoding="utf-8") as log:
            for raw in proc.stdout:
                text = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(text + "\n")
                log.flush()
                with self._cond:
                    self._lines.append(text)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for_log(self, substring: str, timeout: float) -> str:
        """Wait until a log line containing ``substring`` appears; return that line.

        Lines logged before the call count. Raises :class:`BootstrapdError` if the daemon
        exits first or ``timeout`` seconds pass.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for text in self._lines:
                    if substring in text:
                        return text
                if self._eof:
                    why = "exited"
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    why = f"did not log {substring!r} within {timeout} s"
                    break
                self._cond.wait(remaining)
        raise BootstrapdError(f"{self.name} {why}:\n{self.log_text()}")

    def log_text(self) -> str:
        """Everything the daemon has logged so far."""
        with self._cond:
            return "\n".join(self._lines)

    def stop(self, timeout: float = BOOTSTRAPD_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status.

        Idempotent; returns None if never started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __enter__(self) -> Self:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"Bootstrapd(name={self.name!r}, udp_port={self.udp_port}, "
            f"tcp_ports={self.tcp_ports}, public_key={self.public_key.hex()[:16]}..., "
            f"pid={self.pid})"
        )
