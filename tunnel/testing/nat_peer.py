"""One of our Nodes as a process for the NAT-traversal lab (issue 11): befriends one peer,
reports what happens as JSON lines on stdout, optionally streams data to the friend.

Run inside a NetLab host (``lab.popen(host, [python, "-m", "tunnel.testing.nat_peer", ...])``).
Both profiles exist beforehand and list each other as confirmed friends, so no friend request
is needed: the time to "connected" is the time to find the friend (DHT + onion) and handshake.

Output lines (``t`` = seconds since the node started)::

    {"event": "started", "t": 0.1, "udp_port": 54010}
    {"event": "connected", "t": 4.2, "path": "tcp"}
    {"event": "direct", "t": 5.0, "addr": ["198.18.0.3", 54011]}      # first time path == udp
    {"event": "stats", "t": ..., "path": ..., "addr": ..., "sent": ..., "received": ...}
    {"event": "received", "t": ..., "bytes": N, "packets": K, "in_order": true}
    {"event": "sent", "t": ..., "bytes": N}

The sender streams ``--send-bytes`` in numbered lossless packets (``0xA8`` + 4-byte sequence +
filler) once the friend is connected (``--send-when connected``) or direct (``direct``), at most
``--rate-bytes-s``; the receiver checks every packet arrives exactly once and in order.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

import trio

from tunnel.config import BootstrapNode
from tunnel.node import Node
from tunnel.node_types import FriendDhtKey, LosslessPacket, NodeOptions
from tunnel.profile import Profile

STREAM_KIND = 0xA8
PAYLOAD_BYTES = 1200
STATS_INTERVAL_S = 0.25


def emit(event: str, t0: float, **fields: Any) -> None:
    line = {"event": event, "t": round(trio.current_time() - t0, 3), **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _friend_addr(node: Node, pk: bytes) -> list[object] | None:
    paths = getattr(node.netcrypto, "_paths", {})
    path = paths.get(pk)
    addr = getattr(path, "udp_addr", None)
    return list(addr) if addr is not None else None


async def main(args: argparse.Namespace) -> None:
    profile = Profile.load(args.profile)
    friend = bytes.fromhex(args.friend)
    host, port, key, tcp = args.bootstrap.split(":")
    options = NodeOptions(
        udp_enabled=not args.no_udp,
        ipv6=False,
        port_start=args.port,
        port_end=args.port,
        hole_punching=True,
        bootstrap=(BootstrapNode(host, int(port), bytes.fromhex(key), (int(tcp),)),),
        friends=(friend,),
        name=args.name.encode(),
    )
    node = Node(profile, options)
    t0 = trio.current_time()
    events = node.subscribe()
    connected = trio.Event()
    direct = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        emit("started", t0, udp_port=node.udp_port)

        async def watch() -> None:
            was_online = False
            while True:
                stats = node.statistics()
                mine = next((f for f in stats.friends if f.public_key == friend), None)
                online = mine is not None and mine.online
                path = mine.path if mine is not None else None
                if online and not was_online:
                    emit("connected", t0, path=path)
                    connected.set()
                if not online and was_online:
                    emit("disconnected", t0)
                was_online = online
                if path == "udp" and not direct.is_set():
                    emit("direct", t0, addr=_friend_addr(node, friend))
                    direct.set()
                emit(
                    "stats",
                    t0,
                    path=path,
                    addr=_friend_addr(node, friend),
                    sent=mine.sent_bytes if mine else 0,
                    received=mine.received_bytes if mine else 0,
                    resent=mine.resent_packets if mine else 0,
                    rtt_ms=round(mine.rtt_s * 1000, 1) if mine and mine.rtt_s else None,
                    rate=round(mine.send_rate_pkt_s) if mine else 0,
                    udp_sent=stats.udp_datagrams_sent,
                    udp_received=stats.udp_datagrams_received,
                    relays=stats.tcp_relays_connected,
                    direct_path=node.direct_path_status(friend),
                    nat=node.direct_paths.nat.name,
                    candidates=[c.address.to_addr() for c in node.direct_paths.local],
                    dht=stats.dht_connected,
                    onion=stats.onion_connected,
                    onion_stats=dataclasses.asdict(node.onion.stats) if args.verbose else None,
                    onion_friend=[
                        (n.node.ip_port.to_addr(), n.is_stored)
                        for f in node.onion.friends.values()
                        for n in f.nodes
                    ]
                    if args.verbose
                    else None,
                    path_nodes=[n.ip_port.to_addr() for n in node.onion.path_nodes]
                    if args.verbose
                    else None,
                    good_nodes=len(node.dht.random_good_nodes(8, trio.current_time()))
                    if args.verbose
                    else None,
                )
                await trio.sleep(STATS_INTERVAL_S)

        async def receive() -> None:
            expected = 0
            total = 0
            in_order = True
            last_report = 0.0
            async for event in events:
                if isinstance(event, FriendDhtKey):
                    emit("friend_dht_key", t0)
                if isinstance(event, LosslessPacket) and event.data[:1] == bytes([STREAM_KIND]):
                    seq = int.from_bytes(event.data[1:5], "big")
                    in_order = in_order and seq == expected
                    expected = seq + 1
                    total += len(event.data)
                    now = trio.current_time()
                    if now - last_report > STATS_INTERVAL_S:
                        last_report = now
                        emit("received", t0, bytes=total, packets=expected, in_order=in_order)
                    if args.expect_bytes and total >= args.expect_bytes:
                        emit("received", t0, bytes=total, packets=expected, in_order=in_order)
                        emit("done", t0)

        async def send() -> None:
            await (direct if args.send_when == "direct" else connected).wait()
            sent = 0
            seq = 0
            start = trio.current_time()
            filler = bytes(PAYLOAD_BYTES - 5)
            while sent < args.send_bytes:
                if args.rate_bytes_s:
                    ahead = sent / args.rate_bytes_s - (trio.current_time() - start)
                    if ahead > 0:
                        await trio.sleep(ahead)
                packet = bytes([STREAM_KIND]) + seq.to_bytes(4, "big") + filler
                await node.send_lossless(friend, packet)
                sent += len(packet)
                seq += 1
            emit("sent", t0, bytes=sent, packets=seq)

        nursery.start_soon(watch)
        nursery.start_soon(receive)
        if args.send_bytes:
            nursery.start_soon(send)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nat_peer")
    parser.add_argument("--name", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--friend", required=True, help="friend's public key (hex)")
    parser.add_argument("--bootstrap", required=True, help="host:udp_port:key_hex:tcp_port")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-udp", action="store_true")
    parser.add_argument("--send-bytes", type=int, default=0)
    parser.add_argument("--send-when", choices=("connected", "direct"), default="connected")
    parser.add_argument("--rate-bytes-s", type=int, default=0)
    parser.add_argument("--expect-bytes", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="onion/DHT counters in stats")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args())
