"""TCP relay benchmark: our relay server against tox-bootstrapd's relay, measured in one run.

Two of our relay clients (Python, in this process) link through a relay and measure:

* round-trip time of a small routed packet A -> relay -> B -> relay -> A (median, p90), and the
  RTT of a plain loopback TCP echo as the floor, so "added latency" = relay RTT - floor;
* one-way throughput of 1400-byte routed packets A -> B (MB/s), with A keeping a window of
  128 packets in flight (relays drop routed data when a receiver falls behind, as toxcore does).

Our relay runs in a child process (``--serve``), like the tox-bootstrapd, so neither relay shares
a CPU with the clients' event loop. tox-bootstrapd's main loop sleeps 30 ms per iteration, which
shows up in its latency. It also drops a routed packet whenever the previous write to the
receiver is still incomplete (``write_packet_TCP_secure_connection`` returns 0 for non-priority
data), so under load it loses packets; the sender then waits LOSS_TIMEOUT_S (0.2 s, about what a
net_crypto retransmission costs) before refilling its window, and that wait dominates its
throughput figure. Figures and ratios are printed; nothing is asserted.

    .venv/bin/python bench/tcp_relay.py [--packets 20000] [--pings 200] [--base-port 43500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.lowlevel

from tunnel.crypto import KeyPair
from tunnel.io.tcp_relay import RelayPoolDriver, serve_tcp_relay
from tunnel.tcp_relay.connections import PeerData, PeerOnline, PoolEvent, RelayConnected
from tunnel.testing.bootstrapd import Bootstrapd, popen_dies_with_parent

PAYLOAD_BYTES = 1400
WINDOW_PACKETS = 128
LOSS_TIMEOUT_S = 0.2


async def _serve(port: int, secret_hex: str) -> None:
    keys = KeyPair.from_secret_key(bytes.fromhex(secret_hex))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_tcp_relay(
                keys, [port], host="127.0.0.1", task_status=task_status
            )
        )
        print("listening", flush=True)


async def _wait(driver: RelayPoolDriver, kind: type[PoolEvent], limit_s: float = 15.0) -> PoolEvent:
    with trio.fail_after(limit_s):
        while True:
            ev = await driver.next_event()
            if isinstance(ev, kind):
                return ev


async def _measure(port: int, relay_pk: bytes, packets: int, pings: int) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        a = RelayPoolDriver(KeyPair.generate(os.urandom))
        b = RelayPoolDriver(KeyPair.generate(os.urandom))
        for d in (a, b):
            await nursery.start(d.run)
            d.add_relay("127.0.0.1", port, relay_pk)
        for d in (a, b):
            await _wait(d, RelayConnected)
        a_pk, b_pk = a.pool.self_keys.public_key, b.pool.self_keys.public_key
        a.add_peer(b_pk)
        b.add_peer(a_pk)
        await _wait(a, PeerOnline)
        await _wait(b, PeerOnline)

        # latency: B echoes everything back
        rtts: list[float] = []
        for i in range(pings):
            t0 = trio.current_time()
            assert a.send_to_peer(b_pk, b"\x1b" + i.to_bytes(4, "big"))
            ev = await _wait(b, PeerData)
            assert isinstance(ev, PeerData)
            assert b.send_to_peer(a_pk, ev.data)  # one small packet: the queue is empty
            await _wait(a, PeerData)
            rtts.append(trio.current_time() - t0)

        # throughput A -> B (relays drop routed data when the receiver's socket is full, as
        # toxcore does; net_crypto would retransmit. Count what arrives until 1 s of silence.)
        received = 0
        last_rx = trio.current_time()

        async def receiver() -> None:
            nonlocal received, last_rx
            while True:
                ev = await b.next_event()
                if isinstance(ev, PeerData):
                    received += 1
                    last_rx = trio.current_time()

        payload = b"\x1b" + bytes(PAYLOAD_BYTES - 1)
        t0 = trio.current_time()
        async with trio.open_nursery() as inner:
            inner.start_soon(receiver)
            sent = lost = 0
            while sent < packets:
                # a fixed window in flight, like a transport with flow control would keep;
                # after LOSS_TIMEOUT_S without progress the packets in flight count as lost
                in_flight = sent - received - lost
                if in_flight >= WINDOW_PACKETS and trio.current_time() - last_rx > LOSS_TIMEOUT_S:
                    lost += in_flight
                    last_rx = trio.current_time()
                elif in_flight < WINDOW_PACKETS and a.send_to_peer(b_pk, payload):
                    sent += 1
                else:
                    await trio.lowlevel.checkpoint()
            while received < packets and trio.current_time() - last_rx < 1.0:  # noqa: ASYNC110
                await trio.sleep(0.05)  # a benchmark deadline poll, not an event wait
            inner.cancel_scope.cancel()
        elapsed = last_rx - t0
        nursery.cancel_scope.cancel()
    rtts.sort()
    return {
        "rtt_median_ms": statistics.median(rtts) * 1000,
        "rtt_p90_ms": rtts[int(len(rtts) * 0.9)] * 1000,
        "mb_per_s": received * PAYLOAD_BYTES / elapsed / 1e6,
        "pkt_per_s": received / elapsed,
        "delivered_pct": 100.0 * received / packets,
    }


async def _tcp_floor(port: int, pings: int) -> float:
    """Median RTT of a 5-byte echo over plain loopback TCP (the floor for added latency)."""

    async def echo(stream: trio.SocketStream) -> None:
        while data := await stream.receive_some(64):
            await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, echo, port)
        del listeners
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        rtts = []
        for _ in range(pings):
            t0 = trio.current_time()
            await stream.send_all(b"hello")
            got = b""
            while len(got) < 5:
                got += await stream.receive_some(64)
            rtts.append(trio.current_time() - t0)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return statistics.median(rtts) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--base-port", type=int, default=43500, help="uses 4 ports from here")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "SECRET_HEX"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve, int(args.serve[0]), args.serve[1])
        return 0

    bsd_udp, bsd_tcp, ours, floor_port = range(args.base_port, args.base_port + 4)
    ours_keys = KeyPair.generate(os.urandom)
    with tempfile.TemporaryDirectory() as tmp, Bootstrapd(Path(tmp), bsd_udp, (bsd_tcp,)) as bsd:
        child = popen_dies_with_parent(
            [sys.executable, __file__, "--serve", str(ours), ours_keys.secret_key.hex()],
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"listening":
                raise SystemExit("our relay did not start")
            time.sleep(0.1)
            floor = trio.run(_tcp_floor, floor_port, args.pings)
            results = {
                "tox-bootstrapd": trio.run(
                    _measure, bsd_tcp, bsd.public_key, args.packets, args.pings
                ),
                "tunnel relay": trio.run(
                    _measure, ours, ours_keys.public_key, args.packets, args.pings
                ),
            }
        finally:
            child.terminate()
            child.wait(5)

    print(f"loopback TCP echo RTT (floor): {floor:.3f} ms; {args.packets} x {PAYLOAD_BYTES} B")
    print(
        f"{'relay':16} {'RTT med ms':>10} {'p90 ms':>8} {'added ms':>9} {'MB/s':>8} "
        f"{'pkt/s':>9} {'delivered':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:16} {r['rtt_median_ms']:10.3f} {r['rtt_p90_ms']:8.3f} "
            f"{r['rtt_median_ms'] - floor:9.3f} {r['mb_per_s']:8.2f} {r['pkt_per_s']:9.0f} "
            f"{r['delivered_pct']:8.1f}%"
        )
    ours_r, bsd_r = results["tunnel relay"], results["tox-bootstrapd"]
    print(
        f"ratio tunnel/bootstrapd: throughput x{ours_r['mb_per_s'] / bsd_r['mb_per_s']:.2f}, "
        f"median RTT x{ours_r['rtt_median_ms'] / bsd_r['rtt_median_ms']:.2f}"
    )
    print("note: both relays are driven by the same Python clients, which may be the bottleneck")
    return 0


if __name__ == "__main__":
    sys.exit(main())
