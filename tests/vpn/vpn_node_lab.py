"""Harness for the ``tunnel vpn`` end-to-end tests: real ``tunnel vpn`` processes in NetLab
hosts, a real tox-bootstrapd on the lab's internet, status read through the Unix sockets.

Ports: 52000-52999 (this test area's range); :func:`vpn_lab` takes another base port for
tests that have their own range (bootstrapd UDP/TCP on it and the next, members from +10).
VPN pools: 10.123.0.0/24 and fd7e:57::/64.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trio
import yaml

from tunnel.errors import ConfigError
from tunnel.io.node_runner import load_or_create_profile, read_status
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.netlab import Host, NetLab

BOOTSTRAPD_UDP_PORT = 52000
BOOTSTRAPD_TCP_PORT = 52001
FIRST_MEMBER_PORT = 52010
IPV4_POOL = "10.123.0.0/24"
IPV6_PREFIX = "fd7e:57::/64"
INTERFACE = "tnlvpn0"


@dataclass
class Member:
    """One ``tunnel vpn`` process in a lab host."""

    name: str
    host: Host
    workdir: Path
    profile: Path
    config: Path
    status: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    tox_id: str = ""
    expect_running: bool = False
    extra_args: list[str] = field(default_factory=list)

    @property
    def control(self) -> Path:
        return self.status.with_suffix(".ctl")

    def read_status(self) -> dict[str, object] | None:
        """The running process's status, or None if it does not answer (yet)."""
        try:
            return trio.run(read_status, self.status)
        except ConfigError:
            return None

    def vpn(self) -> dict[str, object]:
        status = self.read_status()
        if status is None:
            return {}
        vpn = status.get("vpn")
        assert isinstance(vpn, dict)
        return vpn

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class VpnLab:
    """A NetLab with a bootstrap host and ``tunnel vpn`` members behind NATs."""

    def __init__(
        self,
        lab: NetLab,
        workdir: Path,
        bootstrapd: Bootstrapd,
        first_member_port: int = FIRST_MEMBER_PORT,
    ) -> None:
        self.lab = lab
        self.workdir = workdir
        self.bootstrapd = bootstrapd
        self.secret = secrets.token_hex(32)
        self.members: dict[str, Member] = {}
        self._next_port = first_member_port

    @staticmethod
    def lab_python() -> str:
        return sys.executable

    def bootstrap_arg(self) -> str:
        bsd = self.bootstrapd
        return f"{bsd.host}:{bsd.udp_port}:{bsd.public_key.hex()}:{bsd.tcp_ports[0]}"

    def add_member(
        self, name: str, host: Host, network: dict[str, object], workdir: Path | None = None
    ) -> Member:
        """Write the member's files and create its identity (not started yet)."""
        workdir = workdir or self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        profile = workdir / "profile.tox"
        tox_id = str(load_or_create_profile(profile).tox_id)
        config = workdir / "network.yaml"
        config.write_text(yaml.safe_dump({"interface": INTERFACE, **network}))
        member = Member(
            name,
            host,
            workdir,
            profile,
            config,
            workdir / "vpn.sock",
            self._next_port,
            workdir / "vpn.log",
            tox_id=tox_id,
        )
        self._next_port += 1
        self.members[name] = member
        return member

    def founder_network(self) -> dict[str, object]:
        return {
            "name": "lab",
            "secret": self.secret,
            "ipv4_pool": IPV4_POOL,
            "ipv6_prefix": IPV6_PREFIX,
        }

    def invite(self, member: Member) -> str:
        return f"tunnel-vpn:{member.tox_id}:{self.secret}"

    def start(self, member: Member, *extra: str) -> None:
        """Start (or restart) ``tunnel vpn`` for ``member``."""
        if member.log_file is None:
            member.log_file = member.log_path.open("ab")
        argv = [
            sys.executable,
            "-m",
            "tunnel",
            "vpn",
            "-c",
            str(member.config),
            "--profile",
            str(member.profile),
            "--bootstrap",
            self.bootstrap_arg(),
            "--udp-port",
            str(member.port),
            "--status-socket",
            str(member.status),
            "-v",
            *member.extra_args,
            *extra,
        ]
        member.expect_running = True
        member.proc = self.lab.popen(
            member.host, argv, stdout=subprocess.DEVNULL, stderr=member.log_file
        )

    def stop(self, member: Member, timeout: float = 10.0) -> int | None:
        proc = member.proc
        member.expect_running = False
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout)

    def close(self) -> None:
        for member in self.members.values():
            with contextlib.suppress(Exception):
                self.stop(member, 5.0)
            if member.log_file is not None:
                member.log_file.close()

    # -- waiting -----------------------------------------------------------------------------

    def wait_until(
        self, what: str, predicate: Callable[[], bool], timeout: float, poll_s: float = 0.25
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            for member in self.members.values():
                if member.expect_running and member.proc is not None and member.proc.poll():
                    raise AssertionError(
                        f"{member.name} exited {member.proc.returncode}\n{member.log()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.describe()}")
            time.sleep(poll_s)

    def connected(self, member: Member) -> set[str]:
        """Public keys (hex upper) of the members ``member`` is connected to."""
        vpn = member.vpn()
        members = vpn.get("members")
        if not isinstance(members, list):
            return set()
        return {str(m["public_key"]) for m in members if isinstance(m, dict) and m.get("connected")}

    def key(self, member: Member) -> str:
        return member.tox_id[:64].upper()

    def address(self, member: Member, version: int) -> str:
        """``member``'s own VPN address (without prefix length)."""
        addresses = member.vpn().get("addresses")
        assert isinstance(addresses, list), member.vpn()
        for text in addresses:
            if (":" in str(text)) == (version == 6):
                return str(text).split("/")[0]
        raise AssertionError(f"{member.name} has no IPv{version} address: {addresses}")

    def ping(self, source: Member, target: str, count: int = 1, timeout_s: float = 2.0) -> bool:
        result = self.lab.run(
            source.host,
            ["ping", "-n", "-c", str(count), "-W", str(timeout_s), target],
            check=False,
            timeout=count * timeout_s + 10,
        )
        return result.returncode == 0

    def wait_ping(self, source: Member, target: str, timeout: float = 20.0) -> None:
        self.wait_until(
            f"{source.name} -> {target} ping", lambda: self.ping(source, target), timeout, 0.1
        )

    def describe(self) -> str:
        lines = []
        for member in self.members.values():
            lines.append(f"--- {member.name} ({member.host.name}) status: {member.vpn()}")
            lines.append(member.log()[-3000:])
        return "\n".join(lines)


@contextlib.contextmanager
def vpn_lab(workdir: Path, base_port: int = BOOTSTRAPD_UDP_PORT) -> Iterator[VpnLab]:
    """A lab with tox-bootstrapd (DHT + TCP relay) on a public host ``srv``."""
    with NetLab() as lab:
        srv = lab.add_public_host("srv")
        with Bootstrapd(
            workdir / "bootstrapd",
            base_port,
            (base_port + BOOTSTRAPD_TCP_PORT - BOOTSTRAPD_UDP_PORT,),
            netns=srv.netns,
            host=srv.address,
        ) as bsd:
            vlab = VpnLab(lab, workdir, bsd, base_port + FIRST_MEMBER_PORT - BOOTSTRAPD_UDP_PORT)
            try:
                yield vlab
            finally:
                vlab.close()
