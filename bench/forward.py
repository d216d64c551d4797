"""Port forwarding benchmark: `tunnel serve` + `tunnel connect -L` as real processes.

Measures what tuntox-toxvpn.md section 4 measured for tuntox, on the same kind of setup (a
local tox-bootstrapd as DHT node and TCP relay, everything on 127.0.0.1):

(a) time from starting the client to the first echoed byte through the -L port;
(b) throughput up (client -> server) and down (server -> client), ``--megabytes`` each,
    byte-checked (SHA-256);
(d) round-trip latency of 32-byte messages over one forwarded connection (TCP_NODELAY).

``--no-udp`` forces both nodes onto the TCP relay. ``--memory`` instead runs the Trio drivers
in-process over the in-memory transport (the drivers' own ceiling, no Tox). Figures are
printed; nothing is asserted.

    .venv/bin/python bench/forward.py [--megabytes 20] [--rounds 200] [--no-udp] [--memory]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.forward_harness import forward_pair, serve_tcp, tcp_echo_handler
from tunnel.testing.ports import PortPool

LOCALHOST = "127.0.0.1"
BLOCK = hashlib.sha256(b"bench").digest() * 2048  # 64 KiB
ROUND_BYTES = 32


async def _sink(stream: trio.SocketStream) -> None:
    digest = hashlib.sha256()
    while data := await stream.receive_some(65536):
        digest.update(data)
    await stream.send_all(digest.digest())
    await stream.aclose()


def _source(total: int) -> object:
    async def handler(stream: trio.SocketStream) -> None:
        sent = 0
        while sent < total:
            await stream.send_all(BLOCK)
            sent += len(BLOCK)
        await stream.aclose()

    return handler


async def _upload(port: int, total: int) -> float:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    start = time.perf_counter()
    async with stream:
        digest = hashlib.sha256()
        sent = 0
        while sent < total:
            await stream.send_all(BLOCK)
            digest.update(BLOCK)
            sent += len(BLOCK)
        await stream.send_eof()
        answer = b""
        while data := await stream.receive_some(64):
            answer += data
    elapsed = time.perf_counter() - start
    if answer != digest.digest():
        raise SystemExit("upload: the server received different bytes")
    return elapsed


async def _download(port: int, total: int) -> float:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    start = time.perf_counter()
    received = 0
    async with stream:
        await stream.send_eof()
        while data := await stream.receive_some(1 << 20):
            received += len(data)
    elapsed = time.perf_counter() - start
    if received != total:
        raise SystemExit(f"download: got {received} of {total} bytes")
    return elapsed


async def _latency(port: int, rounds: int) -> list[float]:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    stream.setsockopt(6, 1, 1)  # TCP_NODELAY
    times: list[float] = []
    async with stream:
        message = b"x" * ROUND_BYTES
        for _ in range(rounds):
            start = time.perf_counter()
            await stream.send_all(message)
            got = b""
            while len(got) < ROUND_BYTES:
                got += await stream.receive_some(ROUND_BYTES - len(got))
            times.append((time.perf_counter() - start) * 1000)
    return times


async def _first_echo(port: int, timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while True:
            try:
                stream = await trio.open_tcp_stream(LOCALHOST, port)
            except OSError:
                await trio.sleep(0.05)
                continue
            async with stream:
                try:
                    await stream.send_all(b"!")
                    if await stream.receive_some(1) == b"!":
                        return
                except trio.BrokenResourceError:
                    pass
            await trio.sleep(0.2)


def _report(label: str, total: int, seconds: float) -> None:
    mbit = total * 8 / seconds / 1e6
    print(f"{label:>10}: {total / 1e6:.1f} MB in {seconds:.2f} s = {mbit:.1f} Mbit/s", flush=True)


def _report_latency(times: list[float]) -> None:
    ordered = sorted(times)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    print(
        f"   latency: {len(times)} x {ROUND_BYTES} B round trips, ms: min {ordered[0]:.2f} "
        f"p50 {pct(0.5):.2f} mean {statistics.mean(times):.2f} p90 {pct(0.9):.2f} "
        f"p99 {pct(0.99):.2f} max {ordered[-1]:.2f}",
        flush=True,
    )


async def _measure(ports: dict[str, int], total: int, rounds: int) -> None:
    if os.environ.get("BENCH_DOWN_FIRST"):
        _report("down", total, await _download(ports["down"], total))
    _report("up", total, await _upload(ports["up"], total))
    _report("down", total, await _download(ports["down"], total))
    _report_latency(await _latency(ports["echo"], rounds))


async def bench_memory(args: argparse.Namespace, pool: PortPool) -> None:
    total = args.megabytes * 1_000_000 // len(BLOCK) * len(BLOCK)
    sink, source, echo, up, down, lecho = pool.allocate(6)
    async with forward_pair() as pair:
        await pair.nursery.start(partial(serve_tcp, _sink, sink))
        await pair.nursery.start(partial(serve_tcp, _source(total), source))
        await pair.nursery.start(partial(serve_tcp, tcp_echo_handler, echo))
        from tunnel.forward.specs import LocalForward

        for lport, rport in ((up, sink), (down, source), (lecho, echo)):
            await pair.nursery.start(
                pair.client.serve_tcp, LocalForward(LOCALHOST, lport, LOCALHOST, rport)
            )
        print("in-memory transport (drivers only, one process)", flush=True)
        await _measure({"up": up, "down": down, "echo": lecho}, total, args.rounds)
        pair.nursery.cancel_scope.cancel()


async def bench_processes(args: argparse.Namespace, pool: PortPool, workdir: Path) -> None:
    total = args.megabytes * 1_000_000 // len(BLOCK) * len(BLOCK)
    bsd_udp, bsd_tcp, srv_udp, cli_udp, sink, source, echo, up, down, lecho = pool.allocate(10)
    with Bootstrapd(workdir / "bsd", bsd_udp, (bsd_tcp,)) as bsd:
        node = [
            "--bootstrap",
            f"{bsd.host}:{bsd.udp_port}:{bsd.public_key.hex()}:{bsd_tcp}",
            "--udp-host",
            LOCALHOST,
            "--no-ipv6",
            "-q",
        ]
        if args.no_udp:
            node.append("--no-udp")
        tunnel = [sys.executable, "-m", "tunnel"]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_tcp, _sink, sink))
            await nursery.start(partial(serve_tcp, _source(total), source))
            await nursery.start(partial(serve_tcp, tcp_echo_handler, echo))
            serve_cmd = [*tunnel, "serve", "-s", "bench", "--profile", str(workdir / "s.tox")]
            server = await trio.lowlevel.open_process(
                [*serve_cmd, *node, "--udp-port", str(srv_udp)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            client: trio.Process | None = None
            try:
                assert server.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await server.stdout.receive_some(1)
                    if not chunk:
                        raise SystemExit("tunnel serve exited")
                    line += chunk
                tox_id = line.decode().strip()
                start = time.perf_counter()
                forwards = [
                    *("-L", f"{up}:{LOCALHOST}:{sink}"),
                    *("-L", f"{down}:{LOCALHOST}:{source}"),
                    *("-L", f"{lecho}:{LOCALHOST}:{echo}"),
                ]
                connect_cmd = [*tunnel, "connect", tox_id, "-s", "bench", *node]
                client = await trio.lowlevel.open_process(
                    [*connect_cmd, "--udp-port", str(cli_udp), *forwards],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await _first_echo(lecho, 120)
                path = "TCP relay only" if args.no_udp else "UDP allowed"
                print(f"two processes via tox-bootstrapd ({path})", flush=True)
                print(f"first echo: {time.perf_counter() - start:.1f} s after starting the client")
                await _measure({"up": up, "down": down, "echo": lecho}, total, args.rounds)
            finally:
                for proc in (client, server):
                    if proc is not None:
                        proc.terminate()
                        with trio.move_on_after(10):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.kill()
                nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-udp", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--base-port", type=int, default=51600, help="12 ports from here")
    args = parser.parse_args()
    pool = PortPool(args.base_port, args.base_port + 99)
    if args.memory:
        trio.run(bench_memory, args, pool)
        return
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as workdir:
        trio.run(bench_processes, args, pool, Path(workdir))


if __name__ == "__main__":
    main()
