"""net_crypto bulk throughput: ours-to-ours against toxcore-to-toxcore, measured in one run.

Custom lossless packets of 1373 bytes (the maximum) flow one way for ``--seconds`` (10 by
default, the window the issue's goal is stated on) over UDP on 127.0.0.1:

* **toxcore -> toxcore**: two real libtoxcore 0.2.18 peers bootstrapped off a local
  tox-bootstrapd (they find each other through the DHT/onion as usual; ~10 s), the sender
  pushing until SENDQ on every iteration (toxcore-test-peers.md 5.2), each in its own process;
* **ours -> ours**: two of our Messenger nodes, each in its own process, connected with the
  net_crypto handshake directly (the receiver's DHT key and port are given to the sender), the
  sender awaiting back-pressure (``send_custom_lossless``).

The receiver counts bytes from its first packet for the window and checks the sequence numbers
are in order. Figures and the ratio are printed; nothing is asserted.

    .venv/bin/python bench/netcrypto.py [--seconds 10] [--base-port 45900] [--skip-toxcore]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from tunnel.crypto import KeyPair
from tunnel.friends.messenger import CustomLossless, FriendOnline, Messenger
from tunnel.io.netcrypto_udp import MessengerNode
from tunnel.io.udp import open_udp_socket
from tunnel.netcrypto.core import NetCrypto

PACKET_BYTES = 1373


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _packet(i: int) -> bytes:
    return bytes([160]) + i.to_bytes(4, "big") + bytes(PACKET_BYTES - 5)


# ----------------------------------------------------------------------------- ours


async def _ours_receiver(
    port: int, real_hex: str, dht_hex: str, peer_hex: str, secs: float
) -> None:
    real = KeyPair.from_secret_key(bytes.fromhex(real_hex))
    dht = KeyPair.from_secret_key(bytes.fromhex(dht_hex))
    messenger = Messenger(NetCrypto(real, dht, os.urandom))
    bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
    node = MessengerNode(messenger, bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        messenger.add_friend_norequest(bytes.fromhex(peer_hex), node.now())
        print("ready", flush=True)
        await node.wait_for(lambda: node.received)
        expected = 0
        total = 0
        first: float | None = None
        in_order = True
        while True:
            await node.wait_for(lambda: node.received)
            now = trio.current_time()
            for event in node.take(CustomLossless):
                if first is None:
                    first = now
                seq = int.from_bytes(event.data[1:5], "big")
                in_order = in_order and seq == expected
                expected = seq + 1
                if now - first <= secs:
                    total += len(event.data)
            node.take(FriendOnline)
            if first is not None and now - first > secs:
                break
        stats = messenger.statistics(0)
        print(
            json.dumps(
                {
                    "bytes": total,
                    "seconds": secs,
                    "in_order": in_order,
                    "packets": expected,
                    "session": str(stats.session),
                    "cpu_s": _cpu_s(),
                }
            ),
            flush=True,
        )
        nursery.cancel_scope.cancel()


async def _ours_sender(
    port: int, real_hex: str, peer_hex: str, peer_dht_hex: str, peer_port: int, secs: float
) -> None:
    real = KeyPair.from_secret_key(bytes.fromhex(real_hex))
    messenger = Messenger(NetCrypto(real, KeyPair.generate(os.urandom), os.urandom))
    bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
    node = MessengerNode(messenger, bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        friend = messenger.add_friend_norequest(
            bytes.fromhex(peer_hex),
            node.now(),
            dht_pk=bytes.fromhex(peer_dht_hex),
            udp_addr=("127.0.0.1", peer_port),
        )
        node.kick()
        with trio.fail_after(15):
            await node.wait_for(lambda: node.take(FriendOnline))
        end = trio.current_time() + secs + 2
        i = 0
        if os.environ.get("BENCH_TRACE"):

            async def trace() -> None:
                session = messenger.netcrypto.sessions[bytes.fromhex(peer_hex)]
                while True:
                    await trio.sleep(0.25)
                    cc = session.congestion
                    print(
                        f"t={trio.current_time():.2f} mode={cc.mode} rate={cc.rate:.0f} "
                        f"btl={cc.btl_bw:.0f} srtt={cc.srtt * 1000:.1f}ms "
                        f"min={cc.min_rtt * 1000:.1f}ms sent={session.sent_packets} "
                        f"resent={session.resent_packets} "
                        f"unacked={session.send_end - session.send_start} "
                        f"queue={session.send_end - session._next_new} cpu={_cpu_s():.2f}",
                        file=sys.stderr,
                        flush=True,
                    )

            nursery.start_soon(trace)
        with trio.move_on_at(end):
            while True:
                await node.send_custom_lossless(friend, _packet(i))
                i += 1
                if i % 64 == 0:
                    await trio.lowlevel.checkpoint()
        print(
            f"sender: {messenger.statistics(friend).session}, cpu {_cpu_s():.1f} s",
            file=sys.stderr,
            flush=True,
        )
        nursery.cancel_scope.cancel()


def _run_ours(base_port: int, secs: float) -> dict[str, object]:
    recv_real, recv_dht, send_real = (KeyPair.generate(os.urandom) for _ in range(3))
    py = sys.executable
    me = str(Path(__file__).resolve())
    receiver = subprocess.Popen(
        [
            py,
            me,
            "--ours-receiver",
            str(base_port),
            recv_real.secret_key.hex(),
            recv_dht.secret_key.hex(),
            send_real.public_key.hex(),
            str(secs),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready"
        sender = subprocess.Popen(
            [
                py,
                me,
                "--ours-sender",
                str(base_port + 1),
                send_real.secret_key.hex(),
                recv_real.public_key.hex(),
                recv_dht.public_key.hex(),
                str(base_port),
                str(secs),
            ]
        )
        try:
            line = receiver.stdout.readline()
            result: dict[str, object] = json.loads(line)
        finally:
            try:
                sender.wait(timeout=secs + 10)
            except subprocess.TimeoutExpired:
                sender.kill()
                sender.wait()
    finally:
        receiver.kill()
        receiver.wait()
    return result


# ----------------------------------------------------------------------------- toxcore


def _run_toxcore(base_port: int, secs: float) -> dict[str, object]:
    from tunnel.testing.bootstrapd import Bootstrapd
    from tunnel.testing.toxcore import ToxPeer

    with tempfile.TemporaryDirectory() as tmp, Bootstrapd(tmp, base_port + 2, ()) as bsd:
        a = ToxPeer("a", start_port=base_port + 3, end_port=base_port + 5)
        b = ToxPeer("b", start_port=base_port + 6, end_port=base_port + 8, record_packets=False)
        try:
            for peer in (a, b):
                peer.bootstrap("127.0.0.1", bsd.udp_port, bsd.public_key)
            fa = a.friend_add_norequest(b.public_key)
            b.friend_add_norequest(a.public_key)
            a.wait_friend_connected(fa, 60)
            sent = [0]

            def hook() -> bool:
                # Push until SENDQ each iteration, like a sender following the interval.
                while True:
                    try:
                        a.send_lossless(fa, _packet(sent[0]))
                    except Exception:  # SENDQ
                        return True
                    sent[0] += 1

            start = b.stats().lossless_bytes
            a.add_iteration_hook(hook)
            b.wait_for(lambda: b.stats().lossless_bytes > start, 30, "first packet")
            t0 = time.monotonic()
            b0 = b.stats().lossless_bytes
            time.sleep(secs)  # the measurement window itself
            total = b.stats().lossless_bytes - b0
            elapsed = time.monotonic() - t0
        finally:
            a.kill()
            b.kill()
    return {"bytes": total, "seconds": elapsed}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ours-receiver":
        port, real, dht, peer, secs = sys.argv[2:7]
        trio.run(_ours_receiver, int(port), real, dht, peer, float(secs))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--ours-sender":
        port, real, peer, peer_dht, peer_port, secs = sys.argv[2:8]
        trio.run(_ours_sender, int(port), real, peer, peer_dht, int(peer_port), float(secs))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--base-port", type=int, default=45900)
    parser.add_argument("--skip-toxcore", action="store_true")
    args = parser.parse_args()
    ours = _run_ours(args.base_port, args.seconds)
    ours_mbs = float(ours["bytes"]) / float(ours["seconds"]) / 1e6  # type: ignore[arg-type]
    if os.environ.get("BENCH_VERBOSE"):
        print(ours)
    print(
        f"ours -> ours       {ours_mbs:7.2f} MB/s over {args.seconds:.0f} s  in order: "
        f"{ours['in_order']}"
    )
    if args.skip_toxcore:
        return
    tox = _run_toxcore(args.base_port + 10, args.seconds)
    tox_mbs = float(tox["bytes"]) / float(tox["seconds"]) / 1e6  # type: ignore[arg-type]
    print(f"toxcore -> toxcore {tox_mbs:7.2f} MB/s over {args.seconds:.0f} s")
    print(f"ratio ours/toxcore {ours_mbs / tox_mbs if tox_mbs else float('inf'):7.2f}x")


if __name__ == "__main__":
    main()
