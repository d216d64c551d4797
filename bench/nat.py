"""Benchmark for issue 11 (direct UDP through NATs), in the network-namespace lab.

Topology: our ``tunnel bootstrapd`` (DHT + onion + TCP relay) on the internet side, two
peers each behind its own nftables-masquerade router (``--nat-b random`` gives b a
fully-random-port router). Measured for a pair of our Nodes and for a pair of real toxcore
0.2.18 peers (hole punching on, the same bootstrap/relay node), each from a cold start with
the two already friends:

* time to friend connected, time to direct UDP (path ``udp`` / ``TOX_CONNECTION_UDP``);
* a lossless stream a -> b (``--bytes``) started as soon as connected, and the share of the
  bytes a's router forwarded straight to b's router (UDP host to host) vs to the relay host
  (TCP), read from the routers' nftables counters.

Measured 2026-11-22 (2 cores; stream 1-2 MB started at "connected"; median of 2-3 runs):

=========================  =========  ==========  ========  ============
topology                   impl       connected   direct    direct share
=========================  =========  ==========  ========  ============
EI/EI, bootstrap only      ours       9.2 s (2/3) 10.1 s    0.75 (stream
                                                            began on TCP)
EI/EI, bootstrap only      toxcore    9.9 s (3/3) 13.5 s    1.00
EI/EI, +2 DHT nodes        ours       9.2 s (2/2) 9.2 s     0.999
EI/EI, +2 DHT nodes        toxcore    9.8 s (2/2) 13.6 s    1.00
EI/random, bootstrap only  ours       never (0/2) -         -
EI/random, bootstrap only  toxcore    never (0/2) -         -
EI/random, +2 DHT nodes    ours       9.2 s (2/2) relay     0.15 (relay
                                                            as expected)
EI/random, +2 DHT nodes    toxcore    never (0/2) -         -
=========================  =========  ==========  ========  ============

Needs root (namespaces). Usage: ``sudo .venv/bin/python bench/nat.py [--runs 3] [--nat-b random]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunnel.testing.libtoxcore import Connection
from tunnel.testing.nat_node_lab import NatNodeLab
from tunnel.testing.netlab import NatMode, unavailable_reason
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_bulk import pump_lossless

PAYLOAD_BYTES = 1200


def _share(meter: dict[str, int]) -> dict[str, int]:
    return {"direct_bytes": meter["direct_out"], "relay_bytes": meter["relay_out"]}


def run_ours(mode: NatMode, stream_bytes: int, timeout_s: float, helpers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, NatNodeLab(Path(tmp)) as lab:
        a = lab.add_peer("a")
        b = lab.add_peer("b", mode)
        if helpers:
            lab.add_dht_helpers(helpers, a)
        lab.start(a, b, "--send-bytes", str(stream_bytes), "--send-when", "connected")
        lab.start(b, a, "--expect-bytes", str(stream_bytes))
        connected = a.wait(lambda line: line["event"] == "connected", timeout_s)
        direct = a.wait(lambda line: line["event"] == "direct", 15.0) if connected else None
        done = b.wait(lambda line: line["event"] == "done", timeout_s) if connected else None
        extension = a.first_match(
            lambda line: (
                line["event"] == "stats" and str(line.get("direct_path")).startswith("direct")
            )
        )
        received = b.last("received")
        stats = a.last("stats") or {}
        return {
            "impl": "ours",
            "status": stats.get("direct_path"),
            "nat_a": stats.get("nat"),
            "connected_s": connected["t"] if connected else None,
            "direct_s": direct["t"] if direct else None,
            "extension_direct_s": extension["t"] if extension else None,
            "stream_done_s": done["t"] if done else None,
            "stream_intact": bool(received and received["in_order"] and done),
            **_share(lab.meter(a)),
        }


def run_toxcore(mode: NatMode, stream_bytes: int, timeout_s: float, helpers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, NatNodeLab(Path(tmp)) as lab:
        a_peer = lab.add_peer("a")
        b_peer = lab.add_peer("b", mode)
        if helpers:
            lab.add_dht_helpers(helpers, a_peer)  # our Nodes as plain DHT nodes
        host, udp, key_hex, tcp = lab.bootstrap_arg.split(":")
        key = bytes.fromhex(key_hex)
        peers: list[ToxPeer] = []
        try:
            for peer in (a_peer, b_peer):
                tox = lab.lab.call_in(
                    peer.host,
                    lambda name=peer.name, port=peer.port: ToxPeer(
                        name, start_port=port, hole_punching=True, record_packets=False
                    ),
                )
                peers.append(tox)
            a, b = peers
            start = time.monotonic()
            for peer, tox in zip((a_peer, b_peer), peers, strict=True):
                # inside the host's namespace: tox_add_tcp_relay opens its TCP socket on the
                # calling thread, and a relay whose first connect fails is dropped for good
                # (TCP_connection.c kills a connection that never reached CONNECTED)
                lab.lab.call_in(
                    peer.host,
                    lambda tox=tox: (
                        tox.bootstrap(host, int(udp), key),
                        tox.add_tcp_relay(host, int(tcp), key),
                    ),
                )
            fa = a.friend_add_norequest(b.public_key)
            b.friend_add_norequest(a.public_key)
            connected_s = direct_s = done_s = None
            try:
                a.wait_friend_connected(fa, timeout_s)
                connected_s = time.monotonic() - start
            except TimeoutError:
                pass
            if connected_s is not None:
                count = stream_bytes // PAYLOAD_BYTES
                pump_lossless(a, fa, count, size=PAYLOAD_BYTES, timeout=timeout_s)
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    if direct_s is None and a.friend_connection_status(fa) == Connection.UDP:
                        direct_s = time.monotonic() - start
                    if b._lossless.bytes >= count * PAYLOAD_BYTES:
                        done_s = time.monotonic() - start
                        break
                    time.sleep(0.05)
                if direct_s is None:
                    until = time.monotonic() + 15.0
                    while time.monotonic() < until:
                        if a.friend_connection_status(fa) == Connection.UDP:
                            direct_s = time.monotonic() - start
                            break
                        time.sleep(0.1)
            return {
                "impl": "toxcore",
                "connected_s": round(connected_s, 3) if connected_s else None,
                "direct_s": round(direct_s, 3) if direct_s else None,
                "stream_done_s": round(done_s, 3) if done_s else None,
                "stream_intact": done_s is not None,
                **_share(lab.meter(a_peer)),
            }
        finally:
            for tox in peers:
                tox.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bytes", type=int, default=2_000_000)
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--nat-b", choices=("ei", "random"), default="ei")
    parser.add_argument("--impl", choices=("ours", "toxcore", "both"), default="both")
    parser.add_argument(
        "--dht-helpers", type=int, default=0, help="more of our Nodes on the internet as DHT nodes"
    )
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench/nat.py: {reason}", file=sys.stderr)
        return 2
    mode = NatMode.RANDOM if args.nat_b == "random" else NatMode.ENDPOINT_INDEPENDENT
    impls = ("ours", "toxcore") if args.impl == "both" else (args.impl,)
    results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
    for i in range(args.runs):
        for impl in impls:
            run = run_ours if impl == "ours" else run_toxcore
            result = run(mode, args.bytes, args.timeout, args.dht_helpers)
            results[impl].append(result)
            print(
                json.dumps({"run": i, "nat_b": args.nat_b, "helpers": args.dht_helpers, **result}),
                flush=True,
            )
    for impl, runs in results.items():
        summary: dict[str, Any] = {
            "impl": impl,
            "nat_b": args.nat_b,
            "helpers": args.dht_helpers,
            "runs": len(runs),
        }
        for key in ("connected_s", "direct_s"):
            values = [r[key] for r in runs if r[key] is not None]
            summary[f"{key}_median"] = round(statistics.median(values), 2) if values else None
            summary[f"{key}_ok"] = f"{len(values)}/{len(runs)}"
        direct = sum(r["direct_bytes"] for r in runs)
        relay = sum(r["relay_bytes"] for r in runs)
        summary["direct_share"] = round(direct / (direct + relay), 3) if direct + relay else None
        summary["streams_intact"] = f"{sum(r['stream_intact'] for r in runs)}/{len(runs)}"
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
