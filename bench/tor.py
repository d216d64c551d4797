"""Tunnel over Tor benchmark (issue 10), on the private Tor lab (no Internet needed).

Prints, from one run and one lab, side by side:

* raw Tor SOCKS: one SOCKS stream from a lab client through an exit to an echo server on
  127.0.0.1 (stream set-up, 32-byte round trips, echo throughput);
* raw onion service: the same through a v3 onion service published by the other lab client;
* tunnel through Tor SOCKS: two Tor-mode nodes (each through its own lab client) that found each
  other through our ``tunnel bootstrapd`` whose TCP relay the exits reach; a forwarded TCP
  connection (``-L``) to an echo server: time until the friend is online, 32-byte round trips,
  echo throughput (byte-checked);
* tunnel through onion services: two Tor-only nodes (no bootstrapd, no DHT, no exit), each
  publishing its relay as an onion service and knowing the other as Tox ID plus .onion; the
  same forwarded connection, measured the same way.

Throughput is echo throughput: ``--megabytes`` sent and the same echoed back, counted once.
Figures are printed; nothing is asserted. Every phase is bounded (``PHASE_TIMEOUT_S``, blocking
raw measurements run on an abandonable thread): a stalled phase prints ``failed: ... after N s``
and the next phase runs.

    .venv/bin/python bench/tor.py [--megabytes 4] [--rounds 50] [--base 48900]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import trio

from tunnel.forward.auth import AuthPolicy
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.specs import parse_local_forward
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_node import NodeTransport
from tunnel.io.forward_server import ForwardServer
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.testing.forward_harness import start_tcp_echo
from tunnel.testing.ports import PortPool
from tunnel.testing.tor_node_harness import (
    LOCALHOST,
    OurBootstrapd,
    bootstrap_options,
    lab_tor_config,
    running_tor_node,
    toxcore_profile,
)
from tunnel.testing.torlab import TorLab
from tunnel.testing.torlab_tools import SocksBenchResult, bench_socks_echo
from tunnel.tor.config import TorFriend
from tunnel.tor.control import open_onion_service
from tunnel.tor.keystore import load_or_create_onion_key
from tunnel.tor.onion_key import OnionKey

SECRET = b"bench over tor"
FIND_TIMEOUT_S = 120.0
ONION_VIRTUAL_PORT = 7
ONION_ATTEMPTS = 10
EXCHANGE_TIMEOUT_S = 180.0
RAW_TIMEOUT_S = 60.0
"""Per socket operation in the raw measurements."""
PHASE_TIMEOUT_S = 420.0
"""Upper bound of one phase (set-up, measurement and tear-down)."""
ONION_BENCH_PORT = 443


def _line(name: str, result: SocksBenchResult | None, note: str = "") -> str:
    if result is None:
        return f"{name:<32} {note}"
    return f"{name:<32} {result.describe()}{'  ' + note if note else ''}"


async def _raw_onion(lab: TorLab, echo_port: int, megabytes: int, rounds: int) -> SocksBenchResult:
    key = OnionKey.generate(os.urandom)
    async with open_onion_service(
        LOCALHOST,
        lab.control_port(1),
        key,
        [(ONION_VIRTUAL_PORT, f"{LOCALHOST}:{echo_port}")],
        cookie_path=lab.cookie_path(1),
    ) as service:
        last: BaseException | None = None
        for _ in range(ONION_ATTEMPTS):  # a fresh descriptor may need a retry or two
            try:
                return await trio.to_thread.run_sync(
                    lambda: bench_socks_echo(
                        lab.socks_port(0),
                        service.address,
                        ONION_VIRTUAL_PORT,
                        payload_bytes=megabytes * 1024 * 1024,
                        rtt_samples=rounds,
                        timeout_s=RAW_TIMEOUT_S,
                    ),
                    abandon_on_cancel=True,
                )
            except Exception as exc:
                last = exc
                await trio.sleep(1.0)
        raise RuntimeError(f"onion service not reachable: {last}")


async def _echo_exchange(port: int, payload: bytes, rounds: int) -> tuple[list[float], float]:
    stream = await trio.open_tcp_stream(LOCALHOST, port)
    async with stream:
        rtts: list[float] = []
        for i in range(rounds):
            msg = i.to_bytes(4, "big") * 8
            t = time.monotonic()
            await stream.send_all(msg)
            got = b""
            while len(got) < len(msg):
                got += await stream.receive_some(len(msg) - len(got))
            rtts.append(time.monotonic() - t)
        received = hashlib.sha256()
        count = 0

        async def send() -> None:
            await stream.send_all(payload)
            await stream.send_eof()

        t = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            while data := await stream.receive_some(65536):
                received.update(data)
                count += len(data)
        elapsed = time.monotonic() - t
    if count != len(payload) or received.digest() != hashlib.sha256(payload).digest():
        raise RuntimeError(f"echo mismatch: {count} of {len(payload)} bytes")
    return rtts, elapsed


async def _measure_forward(
    a: Node, b: Node, pool: PortPool, megabytes: int, rounds: int, t0: float
) -> str:
    """A forwarded connection a -> b -> echo server: time until online (from ``t0``), round
    trips and echo throughput, byte-checked."""
    echo_port, local_port = pool.allocate(2)
    async with trio.open_nursery() as nursery:
        await start_tcp_echo(nursery, echo_port)
        server = ForwardServer(
            ServerMux(os.urandom, auth=AuthPolicy.build(SECRET, None)), NodeTransport(b)
        )
        client = ForwardClient(
            ClientMux(os.urandom, open_timeout_s=FIND_TIMEOUT_S),
            NodeTransport(a),
            b.tox_id.to_bytes(),
            secret=SECRET,
        )
        await nursery.start(server.run)
        await nursery.start(client.run)
        await nursery.start(
            client.serve_tcp, parse_local_forward(f"{local_port}:{LOCALHOST}:{echo_port}")
        )
        with trio.fail_after(FIND_TIMEOUT_S):
            await client.wait_online(b.public_key)
        online_s = time.monotonic() - t0
        payload = os.urandom(megabytes * 1024 * 1024)
        with trio.fail_after(EXCHANGE_TIMEOUT_S):
            rtts, elapsed = await _echo_exchange(local_port, payload, rounds)
        nursery.cancel_scope.cancel()
    rtts.sort()
    return (
        f"friend online {online_s * 1000:.0f} ms, RTT median {statistics.median(rtts) * 1000:.1f}"
        f" ms / p90 {rtts[(len(rtts) * 9) // 10] * 1000:.1f} ms, "
        f"echo {len(payload) / elapsed / 1e6:.2f} MB/s"
    )


async def _tunnel(
    lab: TorLab, bsd: OurBootstrapd, pool: PortPool, work: Path, megabytes: int, rounds: int
) -> str:
    t0 = time.monotonic()
    async with (
        running_tor_node("a", bootstrap_options(bsd, "a"), lab_tor_config(lab, 0), work) as ta,
        running_tor_node("b", bootstrap_options(bsd, "b"), lab_tor_config(lab, 1), work) as tb,
    ):
        a, b = ta.node, tb.node
        assert a is not None
        assert b is not None
        return await _measure_forward(a, b, pool, megabytes, rounds, t0)


async def _tunnel_onion(
    lab: TorLab, pool: PortPool, work: Path, megabytes: int, rounds: int
) -> str:
    """Two Tor-only nodes that know each other as Tox ID plus .onion (no bootstrapd)."""
    names = ("onion-a", "onion-b")
    profiles = [toxcore_profile(work / f"{n}.tox") for n in names]
    keys = [load_or_create_onion_key(work / f"{n}.onion.key") for n in names]
    configs = [
        lab_tor_config(
            lab,
            i,
            only=True,
            onion_service=True,
            onion_key=work / f"{n}.onion.key",
            onion_port=ONION_BENCH_PORT,
            friends=(TorFriend(profiles[1 - i].public_key, keys[1 - i].address, ONION_BENCH_PORT),),
        )
        for i, n in enumerate(names)
    ]
    options = NodeOptions(ipv6=False, hole_punching=False)
    t0 = time.monotonic()
    async with (
        running_tor_node(names[0], options, configs[0], work, profile=profiles[0]) as ta,
        running_tor_node(names[1], options, configs[1], work, profile=profiles[1]) as tb,
    ):
        a, b = ta.node, tb.node
        assert a is not None
        assert b is not None
        return await _measure_forward(a, b, pool, megabytes, rounds, t0)


async def _raw_socks(lab: TorLab, megabytes: int, rounds: int) -> SocksBenchResult:
    return await trio.to_thread.run_sync(
        lambda: bench_socks_echo(
            lab.socks_port(0),
            LOCALHOST,
            lab.echo_port,
            payload_bytes=megabytes * 1024 * 1024,
            rtt_samples=rounds,
            timeout_s=RAW_TIMEOUT_S,
        ),
        abandon_on_cancel=True,
    )


def _describe(exc: BaseException) -> str:
    """The innermost exceptions of an exception group, one line."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__} {exc}".strip()


async def _phase(name: str, run: Callable[[], Awaitable[object]]) -> None:
    """Run one measurement within :data:`PHASE_TIMEOUT_S` and print its line."""
    t0 = time.monotonic()
    try:
        with trio.fail_after(PHASE_TIMEOUT_S):
            result = await run()
    except Exception as exc:  # a figure missing (e.g. a stall), not a crash
        note = f"failed after {time.monotonic() - t0:.0f} s: {_describe(exc)}"
        print(_line(name, None, note), flush=True)
        return
    if isinstance(result, SocksBenchResult):
        print(_line(name, result), flush=True)
    else:
        print(f"{name:<32} {result}", flush=True)


async def _bench(
    lab: TorLab, bsd: OurBootstrapd, pool: PortPool, work: Path, megabytes: int, rounds: int
) -> None:
    await _phase("raw Tor SOCKS (exit)", partial(_raw_socks, lab, megabytes, rounds))
    await _phase(
        "raw Tor onion service", partial(_raw_onion, lab, lab.echo_port, megabytes, rounds)
    )
    await _phase(
        "tunnel -L through Tor SOCKS", partial(_tunnel, lab, bsd, pool, work, megabytes, rounds)
    )
    await _phase(
        "tunnel -L through onion services",
        partial(_tunnel_onion, lab, pool, work, megabytes, rounds),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tor.py", description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--base", type=int, default=48900, help="lab port base (100 ports)")
    parser.add_argument("--ports", default="48500-48599", help="other ports for the bench")
    args = parser.parse_args(argv)
    first, last = (int(p) for p in args.ports.split("-"))
    pool = PortPool(first, last)
    with tempfile.TemporaryDirectory(prefix="bench-tor-") as tmp:
        work = Path(tmp)
        print("starting the private Tor lab ...", flush=True)
        with TorLab(work / "lab", args.base) as lab:
            print(f"lab ready after {lab.ready_s:.1f} s", flush=True)
            udp_port, tcp_port = pool.allocate(2)
            with OurBootstrapd(work / "bsd", udp_port, tcp_port) as bsd:
                trio.run(_bench, lab, bsd, pool, work, args.megabytes, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
