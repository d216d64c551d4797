"""Harness for the NAT-traversal lab (issue 11): our ``tunnel bootstrapd`` (DHT + onion + TCP
relay) on the lab's internet, two of our Nodes (:mod:`tunnel.testing.nat_peer` processes)
behind their own NAT routers, and byte meters on the routers that tell host-to-host UDP from
traffic through the bootstrap/relay host.

Meters. Each router gets an nftables table ``tnlnatmeter`` whose forward-hook counters count
UDP forwarded between its host and any internet address other than the bootstrap host
(``direct_out``/``direct_in``: peer-to-peer through both NATs, whatever address the other
router has now) and TCP to/from the bootstrap host (``relay_out``/``relay_in``).

Ports: 54000-54999 (issue 11's range).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from tunnel.profile import Profile
from tunnel.testing.netlab import Host, NatMode, NetLab

BOOTSTRAPD_UDP_PORT = 54000
BOOTSTRAPD_TCP_PORT = 54001
FIRST_PEER_PORT = 54010
BOOTSTRAPD_START_TIMEOUT_S = 20.0
METER_TABLE = "tnlnatmeter"
METER_COUNTERS = ("direct_out", "direct_in", "relay_out", "relay_in")
_COUNTER_RE = re.compile(r"counter (\w+) \{\s*packets (\d+) bytes (\d+)")


def _valid_profile(path: Path) -> Profile:
    import os

    while True:
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:  # toxcore-valid key
            profile.save(path)
            return profile


@dataclass
class Peer:
    """One ``nat_peer`` process and what it reported."""

    name: str
    host: Host
    port: int
    profile: Profile
    profile_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def first(self, event: str) -> dict[str, Any] | None:
        with self.cond:
            return next((line for line in self.lines if line["event"] == event), None)

    def first_match(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        with self.cond:
            return next((line for line in self.lines if predicate(line)), None)

    def last(self, event: str) -> dict[str, Any] | None:
        with self.cond:
            return next((line for line in reversed(self.lines) if line["event"] == event), None)

    def wait(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float
    ) -> dict[str, Any] | None:
        """The first reported line (old or new) matching ``predicate``, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None):
                    return None
                self.cond.wait(min(left, 0.5))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class NatNodeLab:
    """A NetLab with our bootstrapd on the internet and our Nodes behind NAT routers."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.lab = NetLab()
        self.peers: dict[str, Peer] = {}
        self._next_port = FIRST_PEER_PORT
        self.bootstrap_arg = ""
        self.server: Host | None = None
        self._threads: list[threading.Thread] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> Self:
        self.lab.__enter__()
        try:
            self._start_bootstrapd()
        except BaseException:
            self.lab.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.lab.close()
        for thread in self._threads:
            thread.join(2)
        for file in self._files:
            file.close()

    def _start_bootstrapd(self) -> None:
        self.server = self.lab.add_public_host("srv")
        config = self.workdir / "bootstrapd.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "role": "bootstrapd",
                    "keys_file": str(self.workdir / "bootstrapd.keys"),
                    "port": BOOTSTRAPD_UDP_PORT,
                    "ipv6": False,
                    "tcp_relay_ports": [BOOTSTRAPD_TCP_PORT],
                    "onion": True,
                    "log_level": "WARNING",
                }
            )
        )
        log = (self.workdir / "bootstrapd.log").open("wb")
        self._files.append(log)
        proc = self.lab.popen(
            self.server,
            [sys.executable, "-m", "tunnel", "bootstrapd", "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert proc.stdout is not None
        key = ""
        deadline = time.monotonic() + BOOTSTRAPD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            raw = proc.stdout.readline()
            if not raw:
                break
            text = raw.decode(errors="replace").strip()
            if text.startswith("Public Key:"):
                key = text.split(":", 1)[1].strip()
            if text.startswith("TCP relay listening"):
                break
        if not key:
            raise RuntimeError("our bootstrapd did not start")
        self.bootstrap_arg = (
            f"{self.server.address}:{BOOTSTRAPD_UDP_PORT}:{key}:{BOOTSTRAPD_TCP_PORT}"
        )

    def add_peer(self, name: str, nat: NatMode = NatMode.ENDPOINT_INDEPENDENT) -> Peer:
        host = self.lab.add_nat_host(name, nat)
        path = self.workdir / f"{name}.tox"
        peer = Peer(
            name, host, self._next_port, _valid_profile(path), path, self.workdir / f"{name}.log"
        )
        self._next_port += 1
        self.peers[name] = peer
        self._install_meter(host)
        return peer

    def add_dht_helpers(self, count: int, friend: Peer) -> list[Peer]:
        """``count`` more of our Nodes on public hosts (plain DHT/onion nodes; each lists
        ``friend`` as a friend so it has something to do). Without them the only DHT node
        both NATed peers can reach may be the bootstrap node."""
        helpers = []
        for i in range(count):
            name = f"dht{i}"
            host = self.lab.add_public_host(name)
            path = self.workdir / f"{name}.tox"
            peer = Peer(
                name,
                host,
                self._next_port,
                _valid_profile(path),
                path,
                self.workdir / f"{name}.log",
            )
            self._next_port += 1
            self.start(peer, friend)
            helpers.append(peer)
        return helpers

    def _install_meter(self, host: Host) -> None:
        assert host.router is not None
        assert self.server is not None
        srv = self.server.address
        lan = host.address
        counters = "\n".join(f"  counter {name} {{ }}" for name in METER_COUNTERS)
        self.lab.nft(
            host.router.netns,
            f"""table inet {METER_TABLE} {{
{counters}
  chain count_fwd {{
    type filter hook forward priority 10; policy accept;
    ip saddr {lan} ip daddr != {srv} meta l4proto udp counter name direct_out
    ip daddr {lan} ip saddr != {srv} meta l4proto udp counter name direct_in
    ip saddr {lan} ip daddr {srv} meta l4proto tcp counter name relay_out
    ip daddr {lan} ip saddr {srv} meta l4proto tcp counter name relay_in
  }}
}}
""",
        )

    def meter(self, peer: Peer) -> dict[str, int]:
        """Bytes per meter counter on ``peer``'s router so far."""
        router = self.lab.host(peer.name).router
        assert router is not None
        out = self.lab.exec(router.netns, ["nft", "list", "counters", "table", "inet", METER_TABLE])
        return {name: int(nbytes) for name, _packets, nbytes in _COUNTER_RE.findall(out)}

    def start(self, peer: Peer, friend: Peer, *extra: str) -> None:
        argv = [
            sys.executable,
            "-m",
            "tunnel.testing.nat_peer",
            "--name",
            peer.name,
            "--profile",
            str(peer.profile_path),
            "--friend",
            friend.profile.public_key.hex(),
            "--bootstrap",
            self.bootstrap_arg,
            "--port",
            str(peer.port),
            *extra,
        ]
        log = peer.log_path.open("ab")
        self._files.append(log)
        peer.proc = self.lab.popen(peer.host, argv, stdout=subprocess.PIPE, stderr=log)
        thread = threading.Thread(target=self._read, args=(peer,), daemon=True)
        thread.start()
        self._threads.append(thread)

    @staticmethod
    def _read(peer: Peer) -> None:
        assert peer.proc is not None
        assert peer.proc.stdout is not None
        for raw in peer.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            with peer.cond:
                peer.lines.append(line)
                peer.cond.notify_all()
        with peer.cond:
            peer.cond.notify_all()
