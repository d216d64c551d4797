"""A VPN member over plain UDP instead of Tox, for the network-namespace mesh test.

Run inside a lab namespace by ``test_vpn_mesh_lab.py``. It uses the real pieces of issue 9
(TunDevice, TunPump, Membership, VpnEngine) and replaces only the Tox friend transport with a
tiny, UNAUTHENTICATED stand-in (test use only): every datagram is ``[sender public key 32]
[kind u8][payload]``. A directory (public key -> public UDP address) stands in for the DHT;
membership (who is a member, friend requests, introductions) is still learned only through
the membership protocol, starting from one invite.

kinds: 0 control (a lossless custom packet), 1 data (a lossy custom packet), 2 friend request
(payload = request message), 3 keepalive (payload: 1 byte, 1 = "you are in my friend list").
Two nodes that list each other and hear each other's keepalive are "connected"
(``friend_online``). Keepalives go to every directory entry every 50 ms, which also punches
the NAT holes. Prints JSON lines: ``{"addresses": [...]}`` and ``{"peers": n}``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import sys
import time

from tunnel.io.tun import PacketSlot, TunDevice, TunPump
from tunnel.toxid import ToxId
from tunnel.vpn.engine import OwnAddressesChanged, VpnEngine
from tunnel.vpn.membership import (
    AcceptFriend,
    Membership,
    NetworkParams,
    RemoveFriend,
    SendControl,
    SendFriendRequest,
)
from tunnel.wire.vpn import MemberRecord

KEEPALIVE_INTERVAL_S = 0.05
REQUEST_RETRY_S = 0.3
CONTROL, DATA, REQUEST, KEEPALIVE = 0, 1, 2, 3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--tox-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tun", required=True)
    parser.add_argument("--directory", required=True, help="JSON {pk hex: [ip, port]}")
    parser.add_argument("--ipv4-pool")
    parser.add_argument("--join", help="Tox ID of the inviting member")
    parser.add_argument("--run-s", type=float, default=30.0)
    args = parser.parse_args()

    me = ToxId.parse(args.tox_id)
    directory = {bytes.fromhex(k): (v[0], int(v[1])) for k, v in json.loads(args.directory).items()}
    params = (
        NetworkParams("lab", ipaddress.IPv4Network(args.ipv4_pool), None)
        if args.ipv4_pool
        else None
    )
    membership = Membership(
        secret=bytes.fromhex(args.secret), own=MemberRecord(me, 1), params=params
    )
    engine = VpnEngine(membership, tun_mtu=1372)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", args.port))
    header = me.public_key

    friends: set[bytes] = set()
    online: set[bytes] = set()
    pending_requests: dict[bytes, bytes] = {}
    tun = TunDevice(args.tun)
    configured: list[str] = []
    reported = [-1]

    def send(key: bytes, kind: int, payload: bytes | memoryview) -> None:
        address = directory.get(key)
        if address is not None:
            sock.sendto(b"".join((header, bytes([kind]), payload)), address)

    def on_packets(slots: list[PacketSlot]) -> None:
        for slot in slots:
            framed = engine.outbound(slot.buffer, slot.offset, slot.length)
            if framed is not None:
                send(framed[0], DATA, framed[1])
        for key, data in engine.take_extra_packets():
            send(key, DATA, data)
        pump.write_packets(engine.take_local_replies())

    pump = TunPump(tun, on_packets)

    def do_actions(now: float) -> None:
        for action in membership.actions():
            if isinstance(action, SendFriendRequest):
                key = action.tox_id.public_key
                friends.add(key)
                if key not in online:
                    pending_requests[key] = action.message
            elif isinstance(action, AcceptFriend):
                friends.add(action.public_key)
            elif isinstance(action, RemoveFriend):
                friends.discard(action.public_key)
                if action.public_key in online:
                    online.discard(action.public_key)
                    membership.friend_offline(action.public_key)
            elif isinstance(action, SendControl):
                send(action.public_key, CONTROL, action.data)
        for event in engine.refresh():
            if isinstance(event, OwnAddressesChanged):
                for address in engine.own_interfaces():
                    if address not in configured:
                        tun.configure([address], mtu=1372)
                        configured.append(address)
                print(json.dumps({"addresses": engine.own_interfaces()}), flush=True)
        peers = len(membership.verified_peers())
        if peers != reported[0]:
            reported[0] = peers
            print(json.dumps({"peers": peers}), flush=True)

    if args.join:
        membership.join(ToxId.parse(args.join))
    pump.start()
    start = time.monotonic()
    next_keepalive = 0.0
    next_retry = 0.0
    do_actions(0.0)
    while time.monotonic() - start < args.run_s:
        now = time.monotonic() - start
        if now >= next_keepalive:
            next_keepalive = now + KEEPALIVE_INTERVAL_S
            for key in directory:
                if key != me.public_key:
                    send(key, KEEPALIVE, b"\x01" if key in friends else b"\x00")
        if now >= next_retry:
            next_retry = now + REQUEST_RETRY_S
            for key, message in list(pending_requests.items()):
                if key in online:
                    del pending_requests[key]
                else:
                    send(key, REQUEST, message)
        deadline = membership.next_deadline()
        if deadline is not None and now >= deadline:
            membership.handle_timer(now)
        ready, _, _ = select.select([sock], [], [], KEEPALIVE_INTERVAL_S)
        if not ready:
            continue
        data, _addr = sock.recvfrom(4096)
        if len(data) < 33:
            continue
        sender, kind, payload = data[:32], data[32], data[33:]
        if kind == DATA:
            packet = engine.inbound(sender, payload)
            if packet is not None:
                pump.write_packets([packet])
            continue
        # A keepalive saying "you are my friend", or a control packet (the other end already
        # counts us as connected), from a friend of ours: the connection is up.
        if (
            ((kind == KEEPALIVE and payload == b"\x01") or kind == CONTROL)
            and sender in friends
            and sender not in online
        ):
            online.add(sender)
            pending_requests.pop(sender, None)
            membership.friend_online(sender, now)
        if kind == REQUEST:
            if sender not in friends:
                membership.handle_friend_request(sender, payload)
        elif kind == CONTROL and sender in online:
            membership.handle_control(sender, payload)
        do_actions(now)
    pump.stop()
    tun.close()
    names = {key: key.hex()[:8] for key in directory}
    print(
        json.dumps(
            {
                "me": me.public_key.hex()[:8],
                "friends": sorted(names[k] for k in friends),
                "online": sorted(names[k] for k in online),
                "verified": sorted(names[k] for k in membership.verified_peers()),
                "stats": str(membership.statistics()),
                "router": str(engine.router.statistics()),
            }
        ),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
