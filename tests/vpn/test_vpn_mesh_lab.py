"""Issue 9 data path end to end in namespaces: three members behind their own NATs.

The Tox transport is replaced by the plain-UDP stand-in ``vpn_udp_peer.py`` (the node is
built elsewhere); everything else is real: membership from one invite each (c only knows b),
key-derived addresses, TUN devices, the pump threads, routing and anti-spoofing, and the
kernel's ICMP echo through the VPN.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tunnel.testing.netlab import NatMode, NetLab, unavailable_reason
from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId

from .test_vpn_tun import PING

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

PEER_SCRIPT = Path(__file__).with_name("vpn_udp_peer.py")
BASE_PORT = 49100
POOL = "10.88.0.0/24"
MESH_TIMEOUT_S = 20.0


class PeerOutput:
    """Collects a peer's JSON stdout lines on a thread; waits scan the whole history."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(json.loads(line))
                self._cond.notify_all()

    def wait_for(self, key: str, predicate: Callable[[object], bool], deadline: float) -> object:
        """The first ``line[key]`` satisfying ``predicate``, waiting until ``deadline``."""
        with self._cond:
            while True:
                for data in self.lines:
                    if key in data and predicate(data[key]):
                        return data[key]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"timed out waiting for {key}: {self.lines}")
                self._cond.wait(min(remaining, 0.2))


def test_three_members_behind_nats_form_a_mesh_and_ping() -> None:
    rng = SeededRng(9)
    ids = []
    for _ in range(3):
        raw = rng(32)
        ids.append(ToxId(raw[:31] + bytes([raw[31] & 0x7F]), rng(4)))
    secret = secrets.token_hex(32)
    with NetLab() as lab:
        hosts = [lab.add_nat_host(name) for name in ("a", "b")]
        hosts.append(lab.add_nat_host("c", NatMode.ENDPOINT_INDEPENDENT))
        directory = {
            tid.public_key.hex(): [host.public_address, BASE_PORT + i]
            for i, (tid, host) in enumerate(zip(ids, hosts, strict=True))
        }
        procs = []
        for i, host in enumerate(hosts):
            argv = [
                sys.executable,
                str(PEER_SCRIPT),
                "--secret",
                secret,
                "--tox-id",
                str(ids[i]),
                "--port",
                str(BASE_PORT + i),
                "--tun",
                f"tnl{secrets.token_hex(3)}",
                "--directory",
                json.dumps(directory),
            ]
            if i == 0:
                argv += ["--ipv4-pool", POOL]
            else:
                argv += ["--join", str(ids[i - 1])]  # c is invited by b and knows nobody else
            procs.append(lab.popen(host, argv))
        outputs = [PeerOutput(proc) for proc in procs]
        deadline = time.monotonic() + MESH_TIMEOUT_S
        for output in outputs:
            output.wait_for("peers", lambda n: n == 2, deadline)
        addresses = []
        for output in outputs:
            found = output.wait_for(
                "addresses", lambda a: isinstance(a, list) and len(a) == 1, deadline
            )
            assert isinstance(found, list)
            addresses.append(found[0].split("/")[0])
        assert len(set(addresses)) == 3
        assert all(address.startswith("10.88.0.") for address in addresses)

        # a pings c (which a only learned about through b) and c pings a and b
        out = lab.python(hosts[0], PING, addresses[2], timeout=10)
        assert out.strip().startswith(f"reply from {addresses[2]}")
        for target in (addresses[0], addresses[1]):
            out = lab.python(hosts[2], PING, target, timeout=10)
            assert out.strip().startswith(f"reply from {target}")
