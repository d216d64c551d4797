"""Port forwarding benchmark: `tunnel serve` + `tunnel connect -L` as real processes.

Measures what tuntox-toxvpn.md section 4 measured for tuntox, on the same kind of setup (a
local tox-bootstrapd as DHT node and TCP relay, everything on 127.0.0.1):

(a) time from starting the client to the first echoed byte through the -L port;
(b) throughput up (client -> server) and down (server -> client), ``--megabytes`` each,
    byte-checked (SHA-256);
(d) round-trip latency of 32-byte messages over one forwarded connection (TCP_NODELAY).

Paths (``--paths``): direct UDP; the TCP relay of tox-bootstrapd (its main loop sleeps 30 ms
per iteration, which bounds every round trip through it from below, as it did for tuntox's
121 ms); the TCP relay of our own ``tunnel bootstrapd``. The yardstick of the issue, iperf3
(one TCP stream, both directions) through wireguard-go on a netns pair, is measured in the same
run when root and wireguard-go are available (``--wireguard-seconds 0`` skips it), and each
tunnel row is printed as a ratio of it. ``--memory`` instead runs the Trio drivers in-process
over the in-memory transport (the drivers' own ceiling, no Tox). Figures are printed; nothing
is asserted.

    .venv/bin/python bench/forward.py [--megabytes 20] [--rounds 200] [--paths udp,relay,...]
                                      [--wireguard-seconds 5] [--memory] [--lo-mtu 1500]

Between two of our nodes the direct path carries lossless packets up to 16 KiB once a probe
proved it (issue 8); on loopback (MTU 65536) those datagrams are not fragmented, so
``--lo-mtu 1500`` runs the tunnel processes where they are, as on a real link.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
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
from tunnel.testing.netlab import NetLab, unavailable_reason
from tunnel.testing.our_bootstrapd import OurBootstrapd
from tunnel.testing.ports import PortPool
from tunnel.testing.wireguard import iperf3_mbit, start_wireguard_pair

LOCALHOST = "127.0.0.1"
BLOCK = hashlib.sha256(b"bench").digest() * 2048  # 64 KiB
ROUND_BYTES = 32
MEASURE_TIMEOUT_S = 120.0


async def _sink(stream: trio.SocketStream) -> None:
    digest = hashlib.sha256()
    while data := await stream.receive_some(65536):
        digest.update(data)
    await stream.send_all(digest.digest())
    await stream.aclose()


def _source(total: int) -> object:
    async def handler(stream: trio.SocketStream) -> None:
        sent = 0
        try:
            while sent < total:
                await stream.send_all(BLOCK)
                sent += len(BLOCK)
        except trio.BrokenResourceError as exc:
            print(f"    source: connection broken after {sent} bytes: {exc}", flush=True)
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
        raise TransferBroken("the server received different bytes (corrupted or lost data)")
    return elapsed


class TransferBroken(Exception):
    """A transfer did not deliver the bytes sent (counted as 0 Mbit/s, printed)."""


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
        raise TransferBroken(f"got {received} of {total} bytes")
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


def _log_file(args: argparse.Namespace, name: str) -> int | object:
    """``--log DIR``: the process's debug log goes to DIR/name.log."""
    if not args.log:
        return subprocess.DEVNULL
    Path(args.log).mkdir(parents=True, exist_ok=True)
    return open(Path(args.log) / f"{name}.log", "wb")  # closed when the bench exits


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


Row = dict[str, float]


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """user+system CPU seconds of each process so far (Linux /proc; empty elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / ticks
    return out


async def _measure(
    ports: dict[str, int], total: int, rounds: int, pids: dict[str, int] | None = None
) -> Row:
    """Up, down (Mbit/s; 0 if it did not finish within MEASURE_TIMEOUT_S) and RTT p50/p99.

    With ``pids``, also each process's CPU time per transfer (ms per MB: a figure that the
    other load on a shared machine disturbs much less than the throughput)."""
    row: Row = {}

    async def timed(name: str, run: object) -> None:
        before = _cpu_seconds(pids or {})
        await _timed(name, run)
        after = _cpu_seconds(pids or {})
        if row.get(name) and after:
            mb = total / 1e6
            parts = [f"{p} {(after[p] - before[p]) * 1000 / mb:.1f}" for p in after if p in before]
            for p in after:
                if p in before:
                    row[f"cpu_{name}_{p}"] = (after[p] - before[p]) * 1000 / mb
            print(f"{'':>10}  CPU ms per MB: {', '.join(parts)}", flush=True)

    async def _timed(name: str, run: object) -> None:
        with trio.move_on_after(MEASURE_TIMEOUT_S) as scope:
            try:
                seconds = await run  # type: ignore[misc]
            except (TransferBroken, trio.BrokenResourceError, OSError) as exc:
                print(f"{name:>10}: FAILED: {exc}", flush=True)
                row[name] = 0.0
                return
            _report(name, total, seconds)
            row[name] = total * 8 / seconds / 1e6
        if scope.cancelled_caught:
            print(f"{name:>10}: did not finish within {MEASURE_TIMEOUT_S:.0f} s", flush=True)
            row[name] = 0.0

    if os.environ.get("BENCH_DOWN_FIRST"):
        await timed("down", _download(ports["down"], total))
    await timed("up", _upload(ports["up"], total))
    if "down" not in row:
        await timed("down", _download(ports["down"], total))
    times = await _latency(ports["echo"], rounds)
    _report_latency(times)
    ordered = sorted(times)
    row["p50"] = ordered[len(ordered) // 2]
    row["p99"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return row


def _table(rows: dict[str, Row]) -> None:
    """The summary: each row, and the tunnel rows' ratios to the same-run baseline."""
    base = rows.get("no tunnel")
    print("\nsummary (same run)", flush=True)
    print(f"{'path':<22}{'first byte s':>13}{'up Mbit/s':>11}{'down Mbit/s':>12}"
          f"{'RTT p50 ms':>11}{'RTT p99 ms':>11}")  # fmt: skip
    for name, row in rows.items():
        first = f"{row['first']:.1f}" if "first" in row else "-"
        print(f"{name:<22}{first:>13}{row['up']:>11.1f}{row['down']:>12.1f}"
              f"{row['p50']:>11.2f}{row['p99']:>11.2f}")  # fmt: skip
    if base is None:
        return
    for name, row in rows.items():
        if name == "no tunnel":
            continue
        print(
            f"{name}: up {row['up'] / base['up']:.3f}x, down {row['down'] / base['down']:.3f}x "
            f"of no tunnel; RTT p50 overhead {row['p50'] - base['p50']:.2f} ms",
            flush=True,
        )


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
        rows = {"no tunnel": await _measure({"up": sink, "down": source, "echo": echo}, total,
                                            args.rounds)}  # fmt: skip
        rows["drivers (memory)"] = await _measure(
            {"up": up, "down": down, "echo": lecho}, total, args.rounds
        )
        _table(rows)
        pair.nursery.cancel_scope.cancel()


async def bench_baseline(args: argparse.Namespace, pool: PortPool) -> Row:
    """The same transfers and round trips straight to the services (no tunnel)."""
    total = args.megabytes * 1_000_000 // len(BLOCK) * len(BLOCK)
    sink, source, echo = pool.allocate(3)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_tcp, _sink, sink))
        await nursery.start(partial(serve_tcp, _source(total), source))
        await nursery.start(partial(serve_tcp, tcp_echo_handler, echo))
        print("no tunnel (loopback TCP straight to the services)", flush=True)
        row = await _measure({"up": sink, "down": source, "echo": echo}, total, args.rounds)
        nursery.cancel_scope.cancel()
    return row


async def bench_processes(
    args: argparse.Namespace, pool: PortPool, workdir: Path, *, use_udp: bool, ours: bool = False
) -> Row:
    total = args.megabytes * 1_000_000 // len(BLOCK) * len(BLOCK)
    bsd_udp, bsd_tcp, srv_udp, cli_udp, sink, source, echo, up, down, lecho = pool.allocate(10)
    label = "udp" if use_udp else "ours-relay" if ours else "relay"
    daemon = OurBootstrapd if ours else Bootstrapd
    with daemon(workdir / f"bsd-{label}", bsd_udp, (bsd_tcp,)) as bsd:
        node = [
            "--bootstrap",
            f"{bsd.host}:{bsd.udp_port}:{bsd.public_key.hex()}:{bsd_tcp}",
            "--udp-host",
            LOCALHOST,
            "--no-ipv6",
            *(("-vv",) if args.log else ("-q",)),
        ]
        if not use_udp:
            node.append("--no-udp")
        tunnel = [sys.executable, "-m", "tunnel"]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_tcp, _sink, sink))
            await nursery.start(partial(serve_tcp, _source(total), source))
            await nursery.start(partial(serve_tcp, tcp_echo_handler, echo))
            profile = str(workdir / f"s-{label}.tox")
            serve_cmd = [*tunnel, "serve", "-s", "bench", "--profile", profile]
            server = await trio.lowlevel.open_process(
                [*serve_cmd, *node, "--udp-port", str(srv_udp)],
                stdout=subprocess.PIPE,
                stderr=_log_file(args, f"serve-{label}"),
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
                    stderr=_log_file(args, f"connect-{label}"),
                )
                await _first_echo(lecho, 120)
                first = time.perf_counter() - start
                path = "UDP allowed" if use_udp else "TCP relay only (--no-udp)"
                via = "our tunnel bootstrapd" if ours else "tox-bootstrapd"
                print(f"two processes via {via} ({path})", flush=True)
                print(f"first echo: {first:.1f} s after starting the client", flush=True)
                pids = {"serve": server.pid, "connect": client.pid}
                row = await _measure(
                    {"up": up, "down": down, "echo": lecho}, total, args.rounds, pids
                )
                row["first"] = first
                return row
            finally:
                await _stop([p for p in (client, server) if p is not None])
                nursery.cancel_scope.cancel()


async def _stop(procs: list[trio.Process]) -> None:
    """Terminate, wait up to 10 s, then kill."""
    for proc in procs:
        proc.terminate()
        with trio.move_on_after(10):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


def _tuntox_nodes(path: Path, bsd: Bootstrapd) -> Path:
    """tuntox's ``-b`` bootstrap file: the local tox-bootstrapd only."""
    node = {
        "ipv4": bsd.host,
        "ipv6": "-",
        "port": bsd.udp_port,
        "public_key": bsd.public_key.hex().upper(),
        "tcp_ports": list(bsd.tcp_ports),
    }
    path.write_text(json.dumps({"nodes": [node]}) + "\n")
    return path


async def bench_tuntox(args: argparse.Namespace, pool: PortPool, workdir: Path, binary: str) -> Row:
    """The same measurements through tuntox (``TUNTOX`` = a tuntox binary), both ends tuntox,
    bootstrapped off a local tox-bootstrapd. Each measurement uses its own ``-L`` port: tuntox
    HEAD's ``-L`` serves only one connection (tuntox-toxvpn.md 1.4)."""
    total = args.megabytes * 1_000_000 // len(BLOCK) * len(BLOCK)
    bsd_udp, bsd_tcp, sink, source, echo, first_port, up, down, lecho = pool.allocate(9)
    srv_udp, cli_udp = pool.allocate(3), pool.allocate(3)
    with Bootstrapd(workdir / "bsd-tuntox", bsd_udp, (bsd_tcp,)) as bsd:
        nodes = _tuntox_nodes(workdir / "tuntox-nodes.json", bsd)
        conf, id_file = workdir / "tuntox-conf", workdir / "tuntox.id"
        conf.mkdir(exist_ok=True)
        common = ["-t", "0", "-s", "bench", "-b", str(nodes)]
        server_argv = [binary, "-u", f"{srv_udp[0]}:{srv_udp[-1]}", *common]
        client_argv = [binary, "-u", f"{cli_udp[0]}:{cli_udp[-1]}", *common]
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_tcp, _sink, sink))
            await nursery.start(partial(serve_tcp, _source(total), source))
            await nursery.start(partial(serve_tcp, tcp_echo_handler, echo))
            procs: list[trio.Process] = []
            try:
                procs.append(
                    await trio.lowlevel.open_process(
                        [*server_argv, "-C", str(conf), "-I", str(id_file)],
                        stdout=_log_file(args, "tuntox-server"),
                        stderr=subprocess.STDOUT,
                    )
                )
                with trio.fail_after(30):
                    # tuntox writes its ID file once; nothing to wait on but the file itself
                    while not (id_file.exists() and len(id_file.read_text().strip()) == 76):  # noqa: ASYNC110
                        await trio.sleep(0.05)
                forwards = [
                    *("-L", f"{first_port}:{LOCALHOST}:{echo}"),
                    *("-L", f"{up}:{LOCALHOST}:{sink}"),
                    *("-L", f"{down}:{LOCALHOST}:{source}"),
                    *("-L", f"{lecho}:{LOCALHOST}:{echo}"),
                ]
                start = time.perf_counter()
                procs.append(
                    await trio.lowlevel.open_process(
                        [*client_argv, "-i", id_file.read_text().strip(), *forwards],
                        stdout=_log_file(args, "tuntox-client"),
                        stderr=subprocess.STDOUT,
                    )
                )
                await _first_echo(first_port, 120)
                first = time.perf_counter() - start
                print("two tuntox processes via tox-bootstrapd (UDP allowed)", flush=True)
                print(f"first echo: {first:.1f} s after starting the client", flush=True)
                row = await _measure({"up": up, "down": down, "echo": lecho}, total, args.rounds)
                row["first"] = first
                return row
            finally:
                await _stop(procs)
                nursery.cancel_scope.cancel()


async def bench_all(args: argparse.Namespace, pool: PortPool, workdir: Path) -> None:
    rows: dict[str, Row] = {"no tunnel": await bench_baseline(args, pool)}
    for path in args.paths.split(","):
        names = {
            "udp": "tunnel, UDP direct",
            "relay": "tunnel, TCP relay",
            "ours-relay": "tunnel, our relay",
        }
        if path not in names:
            raise SystemExit(f"--paths: unknown path {path!r}")
        rows[names[path]] = await bench_processes(
            args, pool, workdir, use_udp=path == "udp", ours=path == "ours-relay"
        )
    tuntox = os.environ.get("TUNTOX")
    if tuntox:
        rows["tuntox"] = await bench_tuntox(args, pool, workdir, tuntox)
    _table(rows)
    _tuntox_ratios(rows)
    if args.wireguard_seconds > 0:
        wg = await trio.to_thread.run_sync(bench_wireguard, args, pool, workdir)
        if wg is not None:
            _wireguard_ratios(rows, wg)


def bench_wireguard(args: argparse.Namespace, pool: PortPool, workdir: Path) -> Row | None:
    """iperf3 (1 TCP stream, both directions) through wireguard-go on a netns pair: the
    issue's yardstick, measured in this run. None (with the reason printed) if unavailable."""
    reason = unavailable_reason()
    missing = [t for t in ("wireguard-go", "wg", "iperf3") if shutil.which(t) is None]
    if reason is not None or missing:
        print(f"\nwireguard-go baseline skipped: {reason or 'missing ' + ', '.join(missing)}")
        return None
    wg_ports = pool.allocate(2)
    iperf_port = pool.allocate_one()
    addresses = ("10.127.0.1", "10.127.0.2")
    seconds = args.wireguard_seconds
    with NetLab(prefix="bfwd") as lab:
        a, b = lab.add_public_host("a"), lab.add_public_host("b")
        start_wireguard_pair(
            lab,
            (a, b),
            workdir,
            names=("wgfwd0", "wgfwd1"),
            ports=(wg_ports[0], wg_ports[1]),
            addresses=addresses,
        )
        up = iperf3_mbit(lab, a, b, addresses[1], iperf_port, seconds=seconds)
        down = iperf3_mbit(lab, a, b, addresses[1], iperf_port, seconds=seconds, reverse=True)
    print(f"\nwireguard-go (netns pair, iperf3 1 stream, {seconds} s): up {up:.1f} Mbit/s, "
          f"down {down:.1f} Mbit/s")  # fmt: skip
    return {"up": up, "down": down}


def _tuntox_ratios(rows: dict[str, Row]) -> None:
    theirs = rows.get("tuntox")
    if theirs is None:
        return
    for name, row in rows.items():
        if name in ("no tunnel", "tuntox"):
            continue
        ratios = [
            f"{key} {row[key] / theirs[key]:.1f}x" if theirs[key] else f"{key} (tuntox 0)"
            for key in ("up", "down")
        ]
        print(
            f"{name} vs tuntox: {', '.join(ratios)}; RTT p50 {row['p50']:.2f} vs"
            f" {theirs['p50']:.2f} ms; first byte {row.get('first', 0):.1f} vs"
            f" {theirs.get('first', 0):.1f} s",
            flush=True,
        )


def _wireguard_ratios(rows: dict[str, Row], wg: Row) -> None:
    for name, row in rows.items():
        if name == "no tunnel" or not wg["up"] or not wg["down"]:
            continue
        print(
            f"{name}: up {row['up'] / wg['up']:.2f}x, down {row['down'] / wg['down']:.2f}x"
            " of wireguard-go (goal: >= 1x)",
            flush=True,
        )


def _rerun_with_lo_mtu(mtu: int) -> int:
    """Run this bench again (without ``--lo-mtu``) inside a new network namespace whose
    loopback MTU is ``mtu``; the namespace is deleted afterwards. Returns the exit status."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("--lo-mtu: needs root and iproute2")
    argv = [a for a in sys.argv[1:] if not a.startswith("--lo-mtu")]
    if "--lo-mtu" in sys.argv:  # "--lo-mtu N": drop the value too
        i = sys.argv.index("--lo-mtu")
        argv = sys.argv[1:i] + sys.argv[i + 2 :]
    name = f"bfwdmtu{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up", "mtu", str(mtu)],
            check=True,
        )
        print(f"(in network namespace {name}, loopback MTU {mtu})", flush=True)
        return subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, *[sys.argv[0], *argv]], check=False
        ).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-udp", action="store_true", help="same as --paths relay")
    parser.add_argument(
        "--paths",
        default="udp,relay,ours-relay",
        help="tunnel paths to measure, comma-separated: udp (direct), relay (tox-bootstrapd's"
        " TCP relay), ours-relay (our tunnel bootstrapd's TCP relay)",
    )
    parser.add_argument("--memory", action="store_true")
    parser.add_argument(
        "--wireguard-seconds",
        type=int,
        default=5,
        help="iperf3 seconds per direction through wireguard-go on a netns pair (needs root;"
        " 0 skips it)",
    )
    parser.add_argument("--log", metavar="DIR", help="write both processes' debug logs here")
    parser.add_argument("--base-port", type=int, default=51600, help="23 ports from here")
    parser.add_argument(
        "--lo-mtu",
        type=int,
        help="run the tunnel processes in a fresh network namespace whose loopback has this"
        " MTU (needs root): with 1500 the tunnel's large UDP datagrams are IP-fragmented as"
        " on a real link (the wireguard-go yardstick runs on a 1500-MTU veth pair anyway)",
    )
    args = parser.parse_args()
    if args.lo_mtu is not None:
        raise SystemExit(_rerun_with_lo_mtu(args.lo_mtu))
    pool = PortPool(args.base_port, args.base_port + 99)
    if args.memory:
        trio.run(bench_memory, args, pool)
        return
    if args.no_udp:
        args.paths = "relay"
    with tempfile.TemporaryDirectory(prefix="bench-forward-") as workdir:
        trio.run(bench_all, args, pool, Path(workdir))


if __name__ == "__main__":
    main()
