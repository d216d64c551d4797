"""The commands as users run them: `tunnel serve` and `tunnel connect -W` as real processes,
finding each other through a real tox-bootstrapd on loopback; the status socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tunnel.io.node_runner import read_status
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.forward_harness import start_tcp_echo
from tunnel.testing.ports import PortPool

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

SECRET = "cli e2e secret"
TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def port_pool() -> PortPool:
    return PortPool(51900, 51999)


def _node_flags(bsd: Bootstrapd, port: int) -> list[str]:
    tcp = f":{bsd.tcp_ports[0]}" if bsd.tcp_ports else ""
    return [
        "--bootstrap",
        f"{bsd.host}:{bsd.udp_port}:{bsd.public_key.hex()}{tcp}",
        "--udp-host",
        "127.0.0.1",
        "--udp-port",
        str(port),
        "--no-ipv6",
    ]


async def test_serve_and_connect_w_processes(
    bootstrapd: Bootstrapd, port_pool: PortPool, tmp_path: Path
) -> None:
    echo_port, serve_port, connect_port = port_pool.allocate(3)
    status_path = tmp_path / "serve.sock"
    serve_cmd = [
        sys.executable,
        "-m",
        "tunnel",
        "serve",
        "-s",
        SECRET,
        "--profile",
        str(tmp_path / "serve.tox"),
        "--status-socket",
        str(status_path),
        "--rule",
        f"127.0.0.1:{echo_port}",
        *_node_flags(bootstrapd, serve_port),
    ]
    server = await trio.lowlevel.open_process(
        serve_cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        async with trio.open_nursery() as nursery:
            await start_tcp_echo(nursery, echo_port)
            assert server.stdout is not None
            line = bytearray()
            with trio.fail_after(20):
                while not line.endswith(b"\n"):
                    chunk = await server.stdout.receive_some(1)
                    assert chunk, "tunnel serve exited early"
                    line += chunk
            tox_id = line.decode().strip()
            assert len(tox_id) == 76
            payload = os.urandom(200_000)
            connect_cmd = [
                sys.executable,
                "-m",
                "tunnel",
                "connect",
                tox_id,
                "-s",
                SECRET,
                "-W",
                f"127.0.0.1:{echo_port}",
                *_node_flags(bootstrapd, connect_port),
            ]
            with trio.fail_after(TIMEOUT_S):
                result = await trio.run_process(
                    connect_cmd,
                    stdin=payload,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            assert result.returncode == 0, result.stderr.decode()[-2000:]
            assert result.stdout == payload
            with trio.fail_after(5):
                status = await read_status(status_path)
            assert status["tox_id"] == tox_id
            friends = status["friends"]
            assert isinstance(friends, list)
            assert len(friends) == 1
            forward = status["forward"]
            assert isinstance(forward, dict)
            assert forward.get("tunnels_opened") == 1
            shown = await trio.run_process(
                [sys.executable, "-m", "tunnel", "status", str(status_path)], capture_stdout=True
            )
            text = shown.stdout.decode()
            assert tox_id in text
            assert "opened 1" in text
            nursery.cancel_scope.cancel()
        # SIGTERM: a clean exit (status 0) with the accepted friend saved
        server.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await server.wait() == 0
        assert not status_path.exists()
    finally:
        if server.returncode is None:
            server.kill()
            with trio.move_on_after(5):
                await server.wait()
