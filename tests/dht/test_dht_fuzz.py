"""Bad input: random and mutated packets never escape a DhtCore, are counted, and a running
node keeps answering valid pings afterwards."""

from __future__ import annotations

import trio
import trio.lowlevel
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair
from tunnel.dht.core import PACKET_KINDS, DhtCore
from tunnel.io.udp import PacketDispatcher, UdpDriver, open_udp_socket
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.wire.dht import (
    KIND_PING_RESPONSE,
    bootstrap_info_request,
)
from tunnel.wire.ip_port import IPPort

PORTS = PortPool(42200, 42399)
A_ADDR = ("11.0.0.1", 33445)
B_ADDR = ("11.0.0.2", 33445)


def _valid_packets(a: DhtCore, b: DhtCore) -> list[bytes]:
    """Well-formed packets a sends to b: ping, nodes request, DHT request, LAN discovery."""
    b_ip = IPPort.from_addr(B_ADDR)
    a._send_ping_request(b_ip, b.public_key, 0.0)
    a._send_nodes_request(b_ip, b.public_key, a.public_key, 0.0)
    packets = [data for _, data in a.datagrams_to_send()]
    packets.append(a.send_dht_request(b.public_key, 0xFE, b"\x00" + bytes(8)))
    packets.append(b"\x21" + a.public_key)
    packets.append(bootstrap_info_request())
    return packets


A = DhtCore(KeyPair.generate(SeededRng("fuzz-a")), SeededRng("fuzz-a"))
B = DhtCore(KeyPair.generate(SeededRng("fuzz-b")), SeededRng("fuzz-b"))
VALID = _valid_packets(A, B)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "grow", "kind"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "grow":
            data += draw(st.binary(min_size=1, max_size=64))
        elif data:
            data[0] = draw(st.sampled_from(sorted(PACKET_KINDS)))
    return bytes(data)


@given(st.lists(st.one_of(st.binary(max_size=300), mutated()), max_size=30))
def test_core_never_raises_and_counts(packets: list[bytes]) -> None:
    rng = SeededRng("fuzz-target")
    core = DhtCore(KeyPair.generate(rng), rng)
    for i, data in enumerate(packets):
        core.receive(data, A_ADDR, float(i))
        core.handle_timer(float(i))
    core.datagrams_to_send()
    s = core.stats
    assert s.packets_received == len(packets)
    handled = s.pings_answered + s.nodes_answered + s.nodes_requests_without_answer
    handled += s.bootstrap_info_answered + s.dht_requests_forwarded
    assert s.dropped + handled <= len(packets)


async def test_running_node_survives_garbage_and_still_answers_pings() -> None:
    port = PORTS.allocate_one()
    rng = SeededRng("fuzz-running")
    core = DhtCore(KeyPair.generate(rng), rng, now=trio.current_time())
    bound = await open_udp_socket("127.0.0.1", port, port, ipv6=False)
    dispatcher = PacketDispatcher()
    dispatcher.register(PACKET_KINDS, core)
    driver = UdpDriver(dispatcher, bound)
    prober_rng = SeededRng("fuzz-prober")
    prober = DhtCore(KeyPair.generate(prober_rng), prober_rng)
    valid = _valid_packets(prober, core)
    junk_rng = SeededRng("fuzz-junk")
    sent = 0
    with trio.fail_after(20.0):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await client.bind(("127.0.0.1", 0))
            for i in range(2000):
                if i % 2:
                    data = junk_rng(junk_rng.randrange(400))
                else:
                    base = bytearray(valid[junk_rng.randrange(len(valid))])
                    base[junk_rng.randrange(len(base))] ^= 1 + junk_rng.randrange(255)
                    data = bytes(base)
                await client.sendto(data, ("127.0.0.1", port))
                sent += 1
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()
            # A valid ping from a real key pair is still answered.
            prober._send_ping_request(
                IPPort.parse("127.0.0.1", port), core.public_key, trio.current_time()
            )
            ((_, ping),) = prober.datagrams_to_send()
            await client.sendto(ping, ("127.0.0.1", port))
            sent += 1
            with trio.fail_after(5.0):
                while True:
                    data, _ = await client.recvfrom(2048)
                    if data[0] == KIND_PING_RESPONSE:
                        break
            # The prober accepts it only if it echoes the ping id it sent, from that address.
            prober.receive(data, ("127.0.0.1", port), trio.current_time())
            assert prober.stats.responses_accepted == 1
            client.close()
            nursery.cancel_scope.cancel()
    bound.close()
    stats = core.statistics()
    unknown = dispatcher.dropped_unknown_kind
    assert driver.received == sent  # loopback: nothing lost
    assert stats.packets_received + unknown == sent
    assert stats.dropped + unknown >= 1500
    assert stats.pings_answered >= 1
