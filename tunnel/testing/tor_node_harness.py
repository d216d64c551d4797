"""Helpers for tests and benchmarks that run :class:`~tunnel.io.tor_node.TorNode` s on the
private Tor lab (:mod:`tunnel.testing.torlab`): a tox-bootstrapd whose TCP relay the lab's exits
reach on 127.0.0.1, Tor-mode nodes bound to one lab client each, and the proof that a node used
nothing but Tor (:func:`assert_only_tor_traffic`).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import yaml

from tunnel.io.tor_node import TorNode
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd, popen_dies_with_parent
from tunnel.testing.node_options import bootstrap_nodes
from tunnel.testing.proc_sockets import ProcSocket, own_sockets
from tunnel.testing.torlab import TorLab
from tunnel.tor.config import TorConfig

LOCALHOST = "127.0.0.1"
NODE_STOP_S = 5.0


def toxcore_profile(path: Path) -> Profile:
    """A fresh profile saved at ``path`` whose key toxcore accepts (last byte < 128)."""
    while True:
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:
            profile.save(path)
            return profile


def lab_tor_config(lab: TorLab, client: int, **changes: Any) -> TorConfig:
    """Tor mode through lab client ``client`` (its SOCKS, control port and cookie)."""
    base = TorConfig(
        socks=f"{LOCALHOST}:{lab.socks_port(client)}",
        control=f"{LOCALHOST}:{lab.control_port(client)}",
        cookie=lab.cookie_path(client),
        bootstrap_wait_s=30.0,
        connect_timeout_s=30.0,
        check_interval_s=2.0,
    )
    return dataclasses.replace(base, **changes)


def bootstrap_options(bsd: Bootstrapd | OurBootstrapd, name: str) -> NodeOptions:
    """Node options that know only ``bsd`` (its DHT/onion key and TCP relay port)."""
    return NodeOptions(
        ipv6=False,
        hole_punching=False,
        bootstrap=bootstrap_nodes(bsd),
        name=name.encode(),
    )


@asynccontextmanager
async def running_tor_node(
    name: str,
    options: NodeOptions,
    tor: TorConfig,
    tmp_path: Path,
    *,
    profile: Profile | None = None,
) -> AsyncIterator[TorNode]:
    """A started :class:`TorNode` (Tor checked, node listening); stopped on exit."""
    tor_node = TorNode(profile or toxcore_profile(tmp_path / f"{name}.tox"), options, tor)
    async with trio.open_nursery() as nursery:
        await nursery.start(tor_node.run)
        try:
            yield tor_node
        finally:
            if tor_node.node is not None:
                with trio.move_on_after(NODE_STOP_S):
                    await tor_node.node.aclose()
            nursery.cancel_scope.cancel()


def udp_sockets() -> set[int]:
    """Inodes of the UDP sockets this process holds now."""
    return {s.inode for s in own_sockets() if s.proto == "udp"}


def assert_only_tor_traffic(
    udp_before: set[int],
    allowed_tcp_ports: Collection[int],
    forbidden_tcp_ports: Collection[int],
) -> list[ProcSocket]:
    """No UDP socket beyond ``udp_before``; every TCP connection of this process talks to an
    allowed port (Tor's SOCKS/control ports, the test's own local services) and none to a
    forbidden one (the relay itself, the other node). Returns the TCP sockets seen.

    Raises:
        AssertionError: naming the offending socket.
    """
    sockets = own_sockets()
    new_udp = [s for s in sockets if s.proto == "udp" and s.inode not in udp_before]
    assert not new_udp, f"UDP sockets opened: {new_udp}"
    tcp = [s for s in sockets if s.proto == "tcp" and s.state != "LISTEN"]
    for s in tcp:
        port = s.remote[1]
        assert port not in forbidden_tcp_ports, f"direct TCP connection: {s}"
        assert port in allowed_tcp_ports or s.local[1] in allowed_tcp_ports, (
            f"TCP connection that is not through Tor: {s}"
        )
    return tcp


__all__ = [
    "OurBootstrapd",
    "assert_only_tor_traffic",
    "bootstrap_options",
    "lab_tor_config",
    "running_tor_node",
    "toxcore_profile",
    "udp_sockets",
]


OUR_BOOTSTRAPD_START_TIMEOUT_S = 20.0


class OurBootstrapd:
    """``python -m tunnel bootstrapd`` (our DHT + onion + TCP relay) on 127.0.0.1, as a process.

    Quacks like :class:`~tunnel.testing.bootstrapd.Bootstrapd` where the Tor tests need it
    (``host``, ``udp_port``, ``tcp_ports``, ``public_key``, ``pid``).
    """

    def __init__(self, workdir: Path, udp_port: int, tcp_port: int) -> None:
        self.workdir = workdir
        self.host = LOCALHOST
        self.udp_port = udp_port
        self.tcp_ports: tuple[int, ...] = (tcp_port,)
        self.public_key = b""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> OurBootstrapd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bootstrapd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "role": "bootstrapd",
                    "keys_file": str(self.workdir / "bootstrapd.keys"),
                    "port": self.udp_port,
                    "ipv6": False,
                    "tcp_relay_ports": list(self.tcp_ports),
                    "onion": True,
                    "log_level": "WARNING",
                }
            )
        )
        with (self.workdir / "bootstrapd.log").open("wb") as log_file:
            self._proc = popen_dies_with_parent(
                [sys.executable, "-m", "tunnel", "bootstrapd", "-c", str(config)],
                stdout=subprocess.PIPE,
                stderr=log_file,
            )
        assert self._proc.stdout is not None
        deadline = time.monotonic() + OUR_BOOTSTRAPD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            raw = self._proc.stdout.readline()
            if not raw:
                break
            text = raw.decode(errors="replace").strip()
            if text.startswith("Public Key:"):
                self.public_key = bytes.fromhex(text.split(":", 1)[1].strip())
            if text.startswith("TCP relay listening"):
                break
        if not self.public_key:
            self.__exit__(None, None, None)
            raise RuntimeError(f"our bootstrapd did not start; log in {self.workdir}")
        return self

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
