"""The private Tor network launcher (tunnel.testing.torlab): it comes up, carries SOCKS streams
through an exit to a local echo server, and its tor processes die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tunnel.testing.ports import PortPool
from tunnel.testing.torlab import READY_TIMEOUT_S, TorLab
from tunnel.testing.torlab_tools import bench_socks_echo, bootstrap_status
from tunnel.tor.check import open_tor_stream

pytestmark = pytest.mark.slow


async def test_lab_socks_through_exit_reaches_local_echo(tor_lab: TorLab, echo_port: int) -> None:
    assert tor_lab.ready_s is not None
    assert tor_lab.ready_s < READY_TIMEOUT_S
    for i in range(len(tor_lab.clients)):
        status = bootstrap_status(tor_lab.control_port(i), tor_lab.cookie_path(i))
        assert status.done
        with trio.fail_after(40):
            stream = await open_tor_stream(
                "127.0.0.1",
                tor_lab.socks_port(i),
                "127.0.0.1",
                echo_port,
                timeout_s=30,
                isolation=f"lab:test@{i}",  # any bytes: not put in a URL
            )
            async with stream:
                payload = os.urandom(64 * 1024)
                await stream.send_all(payload)
                got = b""
                while len(got) < len(payload):
                    got += await stream.receive_some(65536)
        assert got == payload


def _proc_state(pid: int) -> str | None:
    """'R', 'S', 'Z'... or None when the pid is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from tunnel.testing.torlab import TorProcess
d, port = Path(sys.argv[1]), int(sys.argv[2])
torrc = (f"DataDirectory {d}\\nRunAsDaemon 0\\nDisableNetwork 1\\nSocksPort 0\\n"
         f"ControlPort 127.0.0.1:{port}\\nCookieAuthentication 1\\nSandbox 0\\n"
         f"Log notice file {d}/notice.log\\n")
p = TorProcess("orphan", d, torrc)
p.start()
print(p.pid, flush=True)
time.sleep(120)
"""


def test_lab_tor_dies_with_the_test_runner(tmp_path: Path, tor_ports: PortPool) -> None:
    from tunnel.testing.torlab import tor_available

    if not tor_available():
        pytest.skip("tor not installed")
    (port,) = tor_ports.allocate(1)
    runner = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path / "orphan"), str(port)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    tor_pid = 0
    try:
        assert runner.stdout is not None
        tor_pid = int(runner.stdout.readline())
        deadline = time.monotonic() + 10
        while not (tmp_path / "orphan" / "control_auth_cookie").exists():  # tor is up
            assert time.monotonic() < deadline, "tor did not start"
            time.sleep(0.05)
        assert _proc_state(tor_pid) not in (None, "Z")
        assert os.getpgid(tor_pid) == tor_pid  # its own process group
        runner.kill()  # the "test runner" dies without cleaning up
        runner.wait(5)
        deadline = time.monotonic() + 5
        while _proc_state(tor_pid) not in (None, "Z"):
            assert time.monotonic() < deadline, "tor outlived its parent"
            time.sleep(0.05)
    finally:
        runner.kill()
        runner.wait(5)
        if runner.stdout is not None:
            runner.stdout.close()
        if tor_pid and _proc_state(tor_pid) not in (None, "Z"):
            os.kill(tor_pid, signal.SIGKILL)


def test_lab_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="4 relays"):
        TorLab(tmp_path, 48000, authorities=1, relays=2)
    with pytest.raises(ValueError, match="client"):
        TorLab(tmp_path, 48000, clients=0)
    lab = TorLab(tmp_path, 48000)
    assert [n.role for n in lab.nodes].count("client") == 2
    assert lab.nodes[0].dir_port == 48020
    assert lab.clients[0].socks_port == 48064
    assert lab.control_port(1) == 48045


def test_lab_raw_socks_baseline_benchmark(tor_lab: TorLab) -> None:
    """The raw Tor SOCKS numbers a tunnel over Tor is compared with (small sample here)."""
    result = bench_socks_echo(
        tor_lab.socks_port(0),
        "127.0.0.1",
        tor_lab.echo_port,
        payload_bytes=512 * 1024,
        rtt_samples=20,
        timeout_s=30,
        username="bench",
    )
    assert 0 < result.rtt_median_s <= result.rtt_p90_s < 5
    assert result.echo_bytes_per_s > 10_000
    print(f"raw Tor SOCKS on the lab: {result.describe()}")
