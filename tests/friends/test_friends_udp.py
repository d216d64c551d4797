"""Two of our Messenger nodes over real UDP sockets on 127.0.0.1 (Trio driver, no toxcore)."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.friends.messenger import (
    CustomLossless,
    CustomLossy,
    FriendOnline,
    MessageReceived,
    Messenger,
    ReadReceipt,
)
from tunnel.io.netcrypto_udp import MessengerNode
from tunnel.io.udp import open_udp_socket
from tunnel.netcrypto.core import NetCrypto
from tunnel.testing.ports import PortPool

PORTS = PortPool(45500, 45599)


@pytest.mark.parametrize("dual_stack", [False, True])
async def test_two_nodes_over_loopback_udp(dual_stack: bool) -> None:
    a_real, b_real, b_dht = (KeyPair.generate(os.urandom) for _ in range(3))
    a = Messenger(NetCrypto(a_real, KeyPair.generate(os.urandom), os.urandom), name=b"a")
    b = Messenger(NetCrypto(b_real, b_dht, os.urandom), name=b"b")
    port_a, port_b = PORTS.allocate(2)
    host = None if dual_stack else "127.0.0.1"  # None: "::" with IPv4-mapped addresses
    sock_a = await open_udp_socket(host, port_a, port_a, ipv6=dual_stack)
    sock_b = await open_udp_socket(host, port_b, port_b, ipv6=dual_stack)
    node_a, node_b = MessengerNode(a, sock_a), MessengerNode(b, sock_b)
    count = 3000
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(node_a.run)
            await nursery.start(node_b.run)
            fb = b.add_friend_norequest(a_real.public_key, node_b.now())
            fa = a.add_friend_norequest(
                b_real.public_key,
                node_a.now(),
                dht_pk=b_dht.public_key,
                udp_addr=("127.0.0.1", port_b),
            )
            node_a.kick()
            node_b.kick()
            await node_a.wait_for(lambda: node_a.take(FriendOnline))
            await node_b.wait_for(lambda: node_b.take(FriendOnline))
            mid = node_a.send_message(fa, b"hi b")
            node_b.send_custom_lossy(fb, b"\xd0lossy")
            assert await node_b.wait_for(lambda: node_b.take(MessageReceived)) == [
                MessageReceived(fb, b"hi b", False)
            ]
            assert await node_a.wait_for(lambda: node_a.take(ReadReceipt)) == [ReadReceipt(fa, mid)]
            assert await node_a.wait_for(lambda: node_a.take(CustomLossy)) == [
                CustomLossy(fa, b"\xd0lossy")
            ]
            payloads = [
                bytes([170]) + i.to_bytes(4, "big") + os.urandom(1000) for i in range(count)
            ]
            for payload in payloads:
                await node_a.send_custom_lossless(fa, payload)
            got: list[bytes] = []

            def done() -> bool:
                got.extend(e.data for e in node_b.take(CustomLossless))
                return len(got) >= count

            await node_b.wait_for(done)
            nursery.cancel_scope.cancel()
    sock_a.close()
    sock_b.close()
    assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(b"".join(payloads)).digest()
    assert node_a.driver.send_errors == 0
