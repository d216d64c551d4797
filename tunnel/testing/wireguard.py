"""wireguard-go and iperf3 between two :class:`~tunnel.testing.netlab.NetLab` hosts (benchmarks).

The yardstick of the speed goals (issues 8 and 9: "at least an iperf3 run through a
wireguard-go tunnel on the same netns pair in the same run"). Needs root, Debian's
``wireguard-go`` and ``wireguard-tools`` (``wg``) and ``iperf3``.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tunnel.testing.netlab import Host, NetLab

WG_START_TIMEOUT_S = 10.0
IPERF_SERVER_START_S = 0.3
IPERF_SLACK_S = 30.0


def _wg_keypair() -> tuple[str, str]:
    private = subprocess.run(
        ["wg", "genkey"], capture_output=True, text=True, check=True
    ).stdout.strip()
    public = subprocess.run(
        ["wg", "pubkey"], input=private, capture_output=True, text=True, check=True
    ).stdout.strip()
    return private, public


def start_wireguard_pair(
    lab: NetLab,
    hosts: tuple[Host, Host],
    workdir: Path,
    *,
    names: tuple[str, str],
    ports: tuple[int, int],
    addresses: tuple[str, str],
    mtu: int = 1420,
) -> list[subprocess.Popen[bytes]]:
    """Run wireguard-go on both hosts, peered over their lab addresses; the tunnel addresses
    are ``addresses`` (/24). ``names`` must be unique on the machine: the UAPI sockets in
    /var/run/wireguard are not per namespace. Returns the two processes (the lab stops them).
    """
    keys = [_wg_keypair() for _ in hosts]
    procs = []
    for host, name in zip(hosts, names, strict=True):
        env = ["env", "WG_PROCESS_FOREGROUND=1", "LOG_LEVEL=error"]
        procs.append(lab.popen(host, [*env, "wireguard-go", "-f", name], stdout=None))
    for i, host in enumerate(hosts):
        deadline = time.monotonic() + WG_START_TIMEOUT_S
        while lab.run(host, ["wg", "show", names[i]], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("wireguard-go did not start")
            time.sleep(0.1)
        other = hosts[1 - i]
        key_file = workdir / f"{names[i]}.key"
        key_file.write_text(keys[i][0] + "\n")
        lab.run(
            host,
            [
                *("wg", "set", names[i], "listen-port", str(ports[i])),
                *("private-key", str(key_file), "peer", keys[1 - i][1]),
                *("endpoint", f"{other.address}:{ports[1 - i]}"),
                *("allowed-ips", f"{addresses[1 - i]}/32"),
            ],
        )
        lab.ip(host.netns, "addr", "add", f"{addresses[i]}/24", "dev", names[i])
        lab.ip(host.netns, "link", "set", names[i], "mtu", str(mtu), "up")
    return procs


def iperf3_mbit(
    lab: NetLab,
    client: Host,
    server: Host,
    address: str,
    port: int,
    *,
    seconds: int,
    streams: int = 1,
    reverse: bool = False,
) -> float:
    """One ``iperf3`` TCP run from ``client`` to ``address`` (on ``server``): the receiver's
    Mbit/s, 0.0 if it failed. ``reverse``: the server sends."""
    proc = lab.popen(server, ["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL)
    time.sleep(IPERF_SERVER_START_S)
    argv = ["iperf3", "-c", address, "-p", str(port), "-t", str(seconds), "-P", str(streams)]
    try:
        result = lab.run(
            client,
            [*argv, *(["-R"] if reverse else []), "-J"],
            check=False,
            timeout=seconds + IPERF_SLACK_S,
        )
        report = json.loads(result.stdout or "{}")
        return float(report["end"]["sum_received"]["bits_per_second"]) / 1e6
    except (KeyError, ValueError):
        return 0.0
    finally:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
