"""A private Tor network on 127.0.0.1 for tests (issue 10 part 3; tor-offline.md section 1b).

:class:`TorLab` writes keys and torrc files for a minimal network (one directory authority,
three exit relays, two clients by default: 4 relays is the minimum that reaches 100 %, gotcha
G6), starts every ``tor`` in the foreground in its own process group, and waits until each client
has bootstrapped *and* has carried bytes through an exit to a local echo server. That takes
about 15-35 s, so tests share one lab per session (``tests/tor/conftest.py``).

Port layout from ``port_base`` (all on 127.0.0.1): node ``n`` gets ORPort ``base+n``, DirPort
``base+20+n``, ControlPort ``base+40+n``, SocksPort ``base+60+n``; the readiness echo server
listens on ``base+80``. The lab owns ``base .. base+99``.

Processes die with the test runner: they are started by
:func:`tunnel.testing.bootstrapd.popen_dies_with_parent` (``PR_SET_PDEATHSIG`` SIGKILL, forked
from one long-lived thread), and every torrc has ``__OwningControllerProcess`` as a second
line of defence (Tor polls it every 15 s). :meth:`TorLab.stop` kills the process groups (TERM,
then KILL) and keeps the work directory, whose ``<node>/notice.log`` files explain failures.

Notes from tor-offline.md that shaped the torrc files: exits need ``ExitPolicy accept *:*``
(G1) and ``ExitPolicyRejectPrivate 0`` (G2); no DNS offline (G3), so use IP literals; SOCKS
requests never fail fast (G4), so every probe has its own timeout; fast voting timings (G5);
``Sandbox 0`` so SIGTERM works (G9).

Blocking probes (control queries, echo server, SOCKS echo, the raw SOCKS benchmark) live in
:mod:`tunnel.testing.torlab_tools`. ``python -m tunnel.testing.torlab DIR`` runs a lab by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from python_socks import ProxyError, ProxyTimeoutError

from tunnel.errors import BadPacket
from tunnel.testing.bootstrapd import popen_dies_with_parent
from tunnel.testing.torlab_tools import (
    PROBE_TIMEOUT_S,
    EchoServer,
    bootstrap_status,
    socks_echo,
)

TOR_EXECUTABLE = "tor"
TOR_GENCERT_EXECUTABLE = "tor-gencert"
READY_TIMEOUT_S = 150.0
"""Bound on "every node at 100 % and every client echoes through an exit" (typically 15-35 s)."""
STOP_GRACE_S = 5.0
"""SIGTERM grace before SIGKILL (``ShutdownWaitLength 0`` and ``Sandbox 0``: ~1.5 s)."""
KEYGEN_TIMEOUT_S = 60.0
LAB_PORT_SPAN = 100
MAX_NODES = 20

Role = Literal["authority", "relay", "client"]


class TorLabError(RuntimeError):
    """The lab could not be set up or did not become ready; the message has log tails."""


def tor_available() -> bool:
    """True when ``tor`` and ``tor-gencert`` are installed (Debian package ``tor``)."""
    return bool(shutil.which(TOR_EXECUTABLE) and shutil.which(TOR_GENCERT_EXECUTABLE))


def _port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (TIME_WAIT leftovers do not count: tor
    binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ------------------------------------------------------------------------------ processes


class TorProcess:
    """One ``tor -f torrc`` in the foreground, in its own process group, dying with us."""

    def __init__(self, name: str, datadir: Path, torrc: str, *, executable: str = TOR_EXECUTABLE):
        self.name = name
        self.datadir = datadir
        self.torrc_path = datadir / "torrc"
        self.notice_log = datadir / "notice.log"
        self.stdout_log = datadir / "stdout.log"
        self.executable = executable
        datadir.mkdir(parents=True, exist_ok=True)
        datadir.chmod(0o700)
        self.torrc_path.write_text(torrc)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc else None

    @property
    def cookie_path(self) -> Path:
        """The control-port authentication cookie (``CookieAuthentication 1``)."""
        return self.datadir / "control_auth_cookie"

    def start(self) -> None:
        """Start tor (returns at once; readiness is the caller's business)."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        argv = [self.executable, "-f", str(self.torrc_path)]

        with self.stdout_log.open("ab") as out:
            self._proc = popen_dies_with_parent(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.datadir, process_group=0
            )

    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process group, SIGKILL after ``grace_s``; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        return proc.poll()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of notice.log (or stdout.log when tor died before logging)."""
        out: list[str] = []
        for path in (self.stdout_log, self.notice_log):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    out.append(f"--- {self.name} {path.name}:")
                    out.extend(text)
        return "\n".join(out)


# ------------------------------------------------------------------------------ the lab


@dataclass(slots=True)
class LabNode:
    """One lab node: its role, ports and (for relays) identity."""

    index: int
    role: Role
    nick: str
    datadir: Path
    or_port: int | None
    dir_port: int | None
    control_port: int
    socks_port: int | None
    fingerprint: str = ""
    v3ident: str = ""
    process: TorProcess | None = field(default=None, repr=False)


_COMMON = """\
TestingTorNetwork 1
DataDirectory {datadir}
RunAsDaemon 0
Nickname {nick}
ControlPort 127.0.0.1:{control}
CookieAuthentication 1
Log notice file {datadir}/notice.log
SafeLogging 0
ShutdownWaitLength 0
Sandbox 0
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteGuard *
TestingDirAuthVoteHSDir *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
__OwningControllerProcess {owner}
"""

_AUTHORITY = """\
SocksPort 0
ORPort 127.0.0.1:{or_port}
DirPort 127.0.0.1:{dir_port}
Address 127.0.0.1
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
ContactInfo {nick}@test.invalid
AssumeReachable 1
TestingV3AuthInitialVotingInterval 5
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
ExitRelay 0
ExitPolicy reject *:*
"""

_RELAY = """\
SocksPort 0
ORPort 127.0.0.1:{or_port}
Address 127.0.0.1
AssumeReachable 1
ExitRelay 1
ExitPolicyRejectPrivate 0
ExitPolicy accept 127.0.0.0/8:*
ExitPolicy accept private:*
ExitPolicy accept *:*
ServerDNSResolvConfFile /dev/null
ServerDNSDetectHijacking 0
ServerDNSTestAddresses
ServerDNSAllowBrokenConfig 1
"""

_CLIENT = """\
SocksPort 127.0.0.1:{socks} ExtendedErrors
SocksTimeout 30
"""


class TorLab:
    """A private Tor network on 127.0.0.1: ``with TorLab(dir, 48000) as lab: lab.socks_port(0)``.

    ``__enter__`` = :meth:`setup` + :meth:`start` + :meth:`wait_ready` (stopping everything if
    that fails); ``__exit__`` = :meth:`stop`. Client ``i`` (0-based) is the ``i``-th client.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        port_base: int,
        *,
        authorities: int = 1,
        relays: int = 3,
        clients: int = 2,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        if authorities < 1 or clients < 1 or authorities + relays < 4:
            raise ValueError("need >= 1 authority, >= 1 client and >= 4 relays incl. authorities")
        if authorities + relays + clients > MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes")
        if not 1024 <= port_base <= 65535 - LAB_PORT_SPAN:
            raise ValueError("bad port base")
        self.workdir = Path(workdir).absolute()
        self.port_base = port_base
        self.ready_timeout_s = ready_timeout_s
        self.echo_port = port_base + 80
        self.nodes: list[LabNode] = []
        authority: Role = "authority"
        relay: Role = "relay"
        client: Role = "client"
        roles = [authority] * authorities + [relay] * relays + [client] * clients
        for n, role in enumerate(roles):
            nick = {"authority": "auth", "relay": "exit", "client": "client"}[role] + f"{n:02d}"
            relay_like = role != "client"
            self.nodes.append(
                LabNode(
                    index=n,
                    role=role,
                    nick=nick,
                    datadir=self.workdir / nick,
                    or_port=port_base + n if relay_like else None,
                    dir_port=port_base + 20 + n if role == "authority" else None,
                    control_port=port_base + 40 + n,
                    socks_port=port_base + 60 + n if role == "client" else None,
                )
            )
        self.ready_s: float | None = None
        """Seconds from :meth:`start` until the network was ready."""
        self.setup_s: float | None = None
        self._started_at: float | None = None
        self._extra: list[TorProcess] = []
        self._echo: EchoServer | None = None

    # ----------------------------------------------------------------- accessors

    @property
    def clients(self) -> list[LabNode]:
        """The client nodes, in order."""
        return [n for n in self.nodes if n.role == "client"]

    def socks_port(self, i: int) -> int:
        """SOCKS port of client ``i``."""
        port = self.clients[i].socks_port
        assert port is not None
        return port

    def control_port(self, i: int) -> int:
        """Control port of client ``i``."""
        return self.clients[i].control_port

    def cookie_path(self, i: int) -> Path:
        """Control cookie of client ``i``."""
        return self.clients[i].datadir / "control_auth_cookie"

    def dir_authority_lines(self) -> list[str]:
        """``DirAuthority ...`` lines naming the lab's authorities (after :meth:`setup`)."""
        return [
            f"DirAuthority {n.nick} orport={n.or_port} no-v2 v3ident={n.v3ident} "
            f"127.0.0.1:{n.dir_port} {n.fingerprint}"
            for n in self.nodes
            if n.role == "authority"
        ]

    def client_torrc_lines(self) -> list[str]:
        """What an extra (app-owned) tor needs to join the lab (tor-offline.md G15)."""
        return [
            "TestingTorNetwork 1",
            "PathsNeededToBuildCircuits 0.67",
            *self.dir_authority_lines(),
        ]

    # -------------------------------------------------------------- life cycle

    def setup(self) -> None:
        """Check the ports, generate authority keys and relay identities, write every torrc.

        Raises:
            TorLabError: tor missing, a port in use, or key generation failed.
        """
        t0 = time.monotonic()
        if not tor_available():
            raise TorLabError("tor and tor-gencert are not installed (apt-get install tor)")
        busy = [
            p
            for n in self.nodes
            for p in (n.or_port, n.dir_port, n.control_port, n.socks_port)
            if p is not None and not _port_free(p)
        ]
        if busy or not _port_free(self.echo_port):
            raise TorLabError(f"ports in use: {busy or [self.echo_port]}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            (node.datadir / "keys").mkdir(parents=True, exist_ok=True)
            node.datadir.chmod(0o700)
        gencerts = [
            (
                n,
                subprocess.Popen(
                    [
                        TOR_GENCERT_EXECUTABLE,
                        "--create-identity-key",
                        "--passphrase-fd",
                        "0",
                        "-m",
                        "12",
                        "-a",
                        f"127.0.0.1:{n.dir_port}",
                        "-i",
                        str(n.datadir / "keys" / "authority_identity_key"),
                        "-s",
                        str(n.datadir / "keys" / "authority_signing_key"),
                        "-c",
                        str(n.datadir / "keys" / "authority_certificate"),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for n in self.nodes
            if n.role == "authority"
        ]
        fingerprints = [
            (
                n,
                subprocess.Popen(
                    [
                        TOR_EXECUTABLE,
                        "--ignore-missing-torrc",
                        "-f",
                        "/dev/null",
                        "--DataDirectory",
                        str(n.datadir),
                        "--ORPort",
                        "1",
                        "--list-fingerprint",
                        "--quiet",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                ),
            )
            for n in self.nodes
            if n.role != "client"
        ]
        for node, proc in gencerts:
            out, _ = proc.communicate(b"\n", timeout=KEYGEN_TIMEOUT_S)
            if proc.returncode != 0:
                raise TorLabError(f"tor-gencert for {node.nick} failed: {out.decode()[-500:]}")
            cert = (node.datadir / "keys" / "authority_certificate").read_text()
            for line in cert.splitlines():
                if line.startswith("fingerprint "):
                    node.v3ident = line.split()[1]
            if not node.v3ident:
                raise TorLabError(f"no fingerprint in {node.nick}'s authority certificate")
        for node, proc in fingerprints:
            out, _ = proc.communicate(timeout=KEYGEN_TIMEOUT_S)
            words = out.decode(errors="replace").strip().splitlines()[-1:]
            fp = "".join(words[0].split()[1:]) if words else ""
            if proc.returncode != 0 or len(fp) != 40:
                raise TorLabError(f"tor --list-fingerprint for {node.nick} failed: {out!r}")
            node.fingerprint = fp
        authorities = "\n".join(self.dir_authority_lines()) + "\n"
        for node in self.nodes:
            fmt = {
                "datadir": node.datadir,
                "nick": node.nick,
                "control": node.control_port,
                "owner": os.getpid(),
                "or_port": node.or_port,
                "dir_port": node.dir_port,
                "socks": node.socks_port,
            }
            role_part = {"authority": _AUTHORITY, "relay": _RELAY, "client": _CLIENT}[node.role]
            torrc = _COMMON.format(**fmt) + role_part.format(**fmt) + authorities
            node.process = TorProcess(node.nick, node.datadir, torrc)
        self.setup_s = time.monotonic() - t0

    def start(self) -> None:
        """Start every tor process (authorities first) and the readiness echo server."""
        if not self.nodes or self.nodes[0].process is None:
            raise RuntimeError("call setup() first")
        self._started_at = time.monotonic()
        self._echo = EchoServer(self.echo_port)
        for node in self.nodes:
            assert node.process is not None
            node.process.start()

    def wait_ready(self, timeout_s: float | None = None) -> float:
        """Block until every node is at 100 % and every client echoes through an exit.

        Returns the seconds since :meth:`start`.

        Raises:
            TorLabError: a tor died, or not ready within ``timeout_s`` (message has log tails).
        """
        if self._started_at is None:
            raise RuntimeError("call start() first")
        deadline = time.monotonic() + (self.ready_timeout_s if timeout_s is None else timeout_s)
        pending = list(self.nodes)
        last: dict[str, str] = {}
        while pending:
            self.check_alive()
            for node in list(pending):
                try:
                    status = bootstrap_status(
                        node.control_port, node.datadir / "control_auth_cookie"
                    )
                except (OSError, BadPacket, KeyError) as exc:
                    last[node.nick] = f"control: {exc}"
                    continue
                last[node.nick] = status.describe()
                if status.done:
                    pending.remove(node)
            if pending:
                if time.monotonic() > deadline:
                    raise TorLabError(self._not_ready("bootstrap", last))
                time.sleep(0.5)
        for i, client in enumerate(self.clients):
            payload = f"torlab ready probe {client.nick}".encode()
            while True:
                self.check_alive()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TorLabError(self._not_ready(f"exit probe from {client.nick}", last))
                try:
                    got = socks_echo(
                        self.socks_port(i),
                        "127.0.0.1",
                        self.echo_port,
                        payload,
                        timeout_s=min(PROBE_TIMEOUT_S, remaining),
                    )
                except (OSError, ProxyError, ProxyTimeoutError) as exc:
                    last[client.nick] = f"probe: {exc}"
                    time.sleep(0.5)
                    continue
                if got == payload:
                    break
                last[client.nick] = f"probe echoed {got!r}"
        self.ready_s = time.monotonic() - self._started_at
        return self.ready_s

    def check_alive(self) -> None:
        """Raise :class:`TorLabError` (with log tails) if a lab node's tor has exited.

        Extra tors (:meth:`start_extra_tor`) are the caller's business and not checked.
        """
        dead = [n for n in self.nodes if n.process is not None and not n.process.running()]
        if dead:
            tails = "\n".join(n.process.log_tail() for n in dead if n.process)
            raise TorLabError(f"tor exited: {[n.nick for n in dead]}\n{tails}")

    def _not_ready(self, phase: str, last: dict[str, str]) -> str:
        state = "; ".join(f"{k}: {v}" for k, v in last.items())
        return (
            f"Tor lab not ready ({phase}) after {time.monotonic() - (self._started_at or 0):.1f} s"
            f" [{state}]\n{self.log_tails()}\nlogs in {self.workdir}"
        )

    def log_tails(self, lines: int = 10) -> str:
        """The last log lines of every node (for failure messages)."""
        procs = [n.process for n in self.nodes if n.process] + self._extra
        return "\n".join(p.log_tail(lines) for p in procs)

    def start_extra_tor(
        self, name: str, lines: Sequence[str], *, join_lab: bool = True
    ) -> TorProcess:
        """Start another tor with ``lines`` (add SocksPort/ControlPort yourself) under the lab's
        work dir; with ``join_lab`` it also gets :meth:`client_torrc_lines`. Stopped by
        :meth:`stop` (or call its ``stop()`` earlier)."""
        datadir = self.workdir / name
        base = [
            f"DataDirectory {datadir}",
            "RunAsDaemon 0",
            "CookieAuthentication 1",
            f"Log notice file {datadir}/notice.log",
            "SafeLogging 0",
            "ShutdownWaitLength 0",
            "Sandbox 0",
            f"__OwningControllerProcess {os.getpid()}",
        ]
        extra = self.client_torrc_lines() if join_lab else []
        proc = TorProcess(name, datadir, "\n".join([*base, *extra, *lines]) + "\n")
        self._extra.append(proc)
        proc.start()
        return proc

    def stop(self) -> None:
        """Stop every tor (process groups: TERM, then KILL) and the echo server. Idempotent.

        The work directory stays (logs); delete it yourself when the run passed.
        """
        procs = [p for p in self._extra] + [n.process for n in reversed(self.nodes) if n.process]
        for proc in procs:  # signal all first so they shut down in parallel
            if proc.running() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.stop()
        if self._echo is not None:
            self._echo.close()
            self._echo = None

    def __enter__(self) -> Self:
        try:
            self.setup()
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tunnel.testing.torlab WORKDIR [--base 48000]``: run a lab until Ctrl-C.

    For manual experiments and benchmarks: prints each client's SOCKS/control port and the
    torrc lines an app-owned tor needs to join.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tunnel.testing.torlab")
    parser.add_argument("workdir")
    parser.add_argument("--base", type=int, default=48000)
    parser.add_argument("--relays", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args(argv)
    lab = TorLab(args.workdir, args.base, relays=args.relays, clients=args.clients)
    with lab:
        print(f"ready after {lab.ready_s:.1f} s (keys {lab.setup_s:.1f} s)")
        for i in range(len(lab.clients)):
            print(
                f"client {i}: socks 127.0.0.1:{lab.socks_port(i)} "
                f"control 127.0.0.1:{lab.control_port(i)} cookie {lab.cookie_path(i)}"
            )
        print("torrc lines to join:\n" + "\n".join(lab.client_torrc_lines()), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                lab.check_alive()
                time.sleep(1.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
