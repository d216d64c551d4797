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

Measured 2026-11-22, issue 11 wired in (2 cores shared with other work; stream 1.2 MB started
at "connected"; median of 2-3 runs, ours and toxcore alternating in the same run; toxcore gets
the bootstrap node's TCP relay from inside its namespace, see ``run_toxcore``). "direct" is the
friend's path turning ``udp`` (in EI/EI the DHT's NAT-ping path usually comes first; our
extension's own path, ``extension_direct_s``, was up within 0.8 s of it in 2 of 3 runs, the
third ended before our DHT had reported our address):

=========================  =========  ===========  ========  =============
topology                   impl       connected    direct    direct share
=========================  =========  ===========  ========  =============
EI/EI, bootstrap only      ours       1.8 s (3/3)  2.0 s     0.85 (stream
                                                             began on TCP)
EI/EI, bootstrap only      toxcore    9.3 s (3/3)  12.7 s    0.86
EI/random, bootstrap only  ours       2.8 s (2/2)  relay     0.007 (relay,
                                                             as expected)
EI/random, bootstrap only  toxcore    38.6 s (2/2) relay     0.06
EI/random, +2 DHT nodes    ours       3.3 s (1/1)  relay     0.04
EI/random, +2 DHT nodes    toxcore    8.6 s (1/1)  relay     0.10
=========================  =========  ===========  ========  =============

Rebinding (``--rebind``: a's router gets a new public address and its conntrack is flushed,
2 s into a 200 kB/s stream between two EI NATs; 3 runs each): ours goes direct to the new
address after 4.05 / 4.41 / 16.2 s (median 4.4 s; the extension's keepalives declare the path
dead after 5 s of silence, net_crypto moves to the relay at once, fresh candidates go over it
and both sides probe), the stream intact and the friend never offline (3/3); toxcore leaves
UDP after 6.9-8.1 s and stays on the relay (not direct again within 40 s, 3/3).

Before issue 11 was wired in (same day): ours 9.2 s to connected in EI/EI (2/3), never in
EI/random with the bootstrap node only (onion paths of distinct nodes all crossed an
unreachable pair); toxcore never connected over the relay because ``tox_add_tcp_relay`` was
called outside the namespace.

Needs root (namespaces). Usage: ``sudo .venv/bin/python bench/nat.py [--runs 3] [--nat-b random]
[--dht-helpers 2] [--rebind]``.
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


REBIND_STREAM_BYTES = 3_000_000
REBIND_RATE_BYTES_S = 200_000
REBIND_WAIT_S = 40.0


def _poll(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` is true, or None after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return round(time.monotonic() - start, 2)
        time.sleep(interval_s)
    return None


def rebind_ours(timeout_s: float) -> dict[str, Any]:
    """a's router renumbers (new public address, conntrack flushed) mid-stream: seconds until
    b sends straight to a's new address again, and whether the stream stayed intact."""
    with tempfile.TemporaryDirectory() as tmp, NatNodeLab(Path(tmp)) as lab:
        a = lab.add_peer("a")
        b = lab.add_peer("b")
        rate = ("--rate-bytes-s", str(REBIND_RATE_BYTES_S))
        lab.start(a, b, "--send-bytes", str(REBIND_STREAM_BYTES), *rate, "--send-when", "direct")
        lab.start(b, a, "--expect-bytes", str(REBIND_STREAM_BYTES))
        if a.wait(lambda line: line["event"] == "direct", timeout_s) is None:
            return {"impl": "ours", "direct_before": False}
        time.sleep(2.0)
        router = lab.lab.host("a").router
        assert router is not None
        new = lab.lab.renumber(router).public_address

        def back() -> bool:
            line = b.last("stats")
            return bool(line and line["path"] == "udp" and line["addr"] and line["addr"][0] == new)

        redirect_s = _poll(back, REBIND_WAIT_S)
        done = b.wait(lambda line: line["event"] == "done", REBIND_WAIT_S)
        received = b.last("received")
        return {
            "impl": "ours",
            "direct_again_s": redirect_s,
            "stream_intact": bool(done and received and received["in_order"]),
            "disconnected": a.first("disconnected") is not None,
        }


def rebind_toxcore(timeout_s: float) -> dict[str, Any]:
    """The same renumbering between two toxcore peers (no stream): seconds until toxcore
    leaves UDP, and until it is back on UDP (at the new address: the old one is gone)."""
    with tempfile.TemporaryDirectory() as tmp, NatNodeLab(Path(tmp)) as lab:
        a_peer, b_peer = lab.add_peer("a"), lab.add_peer("b")
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
                lab.lab.call_in(
                    peer.host,
                    lambda tox=tox: (
                        tox.bootstrap(host, int(udp), key),
                        tox.add_tcp_relay(host, int(tcp), key),
                    ),
                )
            a, b = peers
            fa = a.friend_add_norequest(b.public_key)
            fb = b.friend_add_norequest(a.public_key)
            if _poll(lambda: b.friend_connection_status(fb) == Connection.UDP, timeout_s) is None:
                return {"impl": "toxcore", "direct_before": False}
            time.sleep(2.0)
            router = lab.lab.host("a").router
            assert router is not None
            lab.lab.renumber(router)
            left = _poll(lambda: b.friend_connection_status(fb) != Connection.UDP, REBIND_WAIT_S)
            again = (
                _poll(lambda: b.friend_connection_status(fb) == Connection.UDP, REBIND_WAIT_S)
                if left is not None
                else None
            )
            return {
                "impl": "toxcore",
                "left_udp_after_s": left,
                "direct_again_s": None if again is None or left is None else left + again,
                "connected_at_end": a.friend_connection_status(fa) != Connection.NONE,
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
    parser.add_argument(
        "--rebind", action="store_true", help="measure a's router renumbering mid-session"
    )
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"bench/nat.py: {reason}", file=sys.stderr)
        return 2
    if args.rebind:
        for i in range(args.runs):
            for impl in ("ours", "toxcore") if args.impl == "both" else (args.impl,):
                result = (rebind_ours if impl == "ours" else rebind_toxcore)(args.timeout)
                print(json.dumps({"run": i, "rebind": True, **result}), flush=True)
        return 0
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
