"""OnionRelay (tox-protocol.md 5.2/5.3): a 3-hop path through three in-process relays on the
simulator delivers to D, the response comes back along the return path, bad input is counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto import KeyPair, shared_key
from tunnel.onion.relay import (
    RETURN_KEY_ROTATION_INTERVAL_S,
    OnionRelay,
    TcpClientSource,
)
from tunnel.testing.rng import SeededRng
from tunnel.testing.sim import SimNetwork
from tunnel.wire.ip_port import IPPort
from tunnel.wire.onion import (
    ONION_RETURN_3_SIZE,
    OnionResponse3,
    seal_onion_request,
    seal_tcp_onion_request,
)

PORT = 44001


class Harness:
    def __init__(self, seed: int = 1) -> None:
        self.net = SimNetwork(seed)
        rng = SeededRng(seed)
        self.rng = rng
        self.keys = [KeyPair.generate(rng) for _ in range(3)]
        self.relays = [OnionRelay(k, rng.fork(i), self.net.now) for i, k in enumerate(self.keys)]
        self.hosts = [self.net.add_host(f"11.0.0.{i + 1}") for i in range(3)]
        for relay, host in zip(self.relays, self.hosts, strict=True):
            self.net.attach(relay, host, PORT)
        self.client_keys = KeyPair.generate(rng)
        self.client_inbox: list[tuple[bytes, tuple[str, int]]] = []
        self.d_inbox: list[tuple[bytes, tuple[str, int]]] = []
        client_host = self.net.add_host("11.0.0.50")
        self.client = client_host.bind(PORT, handler=lambda d, a: self.client_inbox.append((d, a)))
        d_host = self.net.add_host("11.0.0.60")
        self.d_sock = d_host.bind(PORT, handler=lambda d, a: self.d_inbox.append((d, a)))
        self.t2 = KeyPair.generate(rng)
        self.t3 = KeyPair.generate(rng)

    def addr(self, i: int) -> IPPort:
        return IPPort.parse(f"11.0.0.{i + 1}", PORT)

    def hop_keys(self) -> list[tuple[bytes, bytes]]:
        return [
            (
                shared_key(self.keys[0].public_key, self.client_keys.secret_key),
                self.client_keys.public_key,
            ),
            (shared_key(self.keys[1].public_key, self.t2.secret_key), self.t2.public_key),
            (shared_key(self.keys[2].public_key, self.t3.secret_key), self.t3.public_key),
        ]

    def request(self, payload: bytes) -> bytes:
        packet = seal_onion_request(
            self.rng(24),
            self.hop_keys(),
            [self.addr(1), self.addr(2)],
            IPPort.parse("11.0.0.60", PORT),
            payload,
        )
        return packet.encode()


ANNOUNCE_LIKE = b"\x83" + bytes(range(176))


def test_three_hop_path_delivers_and_response_returns() -> None:
    h = Harness()
    h.client.sendto(h.request(ANNOUNCE_LIKE), ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    assert len(h.d_inbox) == 1
    data, source = h.d_inbox[0]
    assert source == ("11.0.0.3", PORT)  # D hears from node C
    assert data[:-ONION_RETURN_3_SIZE] == ANNOUNCE_LIKE
    assert len(data) == 354  # tox-protocol.md 5.2: arriving at D
    ret3 = data[-ONION_RETURN_3_SIZE:]
    response = b"\x84" + bytes(81)
    h.d_sock.sendto(OnionResponse3(ret3, response).encode(), source)
    h.net.run_for(1.0)
    assert h.client_inbox == [(response, ("11.0.0.1", PORT))]
    assert [r.stats.requests_forwarded for r in h.relays] == [1, 1, 1]
    assert [r.stats.responses_forwarded for r in h.relays] == [1, 1, 1]


def test_tampered_layers_dropped_and_counted() -> None:
    h = Harness(2)
    packet = bytearray(h.request(ANNOUNCE_LIKE))
    packet[100] ^= 1
    h.client.sendto(bytes(packet), ("11.0.0.1", PORT))
    h.client.sendto(b"\x80" + bytes(10), ("11.0.0.1", PORT))
    h.client.sendto(b"\x99hello", ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    assert h.d_inbox == []
    assert h.relays[0].stats.dropped_decrypt == 1
    assert h.relays[0].stats.dropped_malformed == 2
    # A genuine request, then a response with a tampered return blob.
    h.client.sendto(h.request(ANNOUNCE_LIKE), ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    data, source = h.d_inbox[0]
    ret3 = bytearray(data[-ONION_RETURN_3_SIZE:])
    ret3[50] ^= 0x40
    h.d_sock.sendto(OnionResponse3(bytes(ret3), b"\x84" + bytes(81)).encode(), source)
    # A response carrying a kind relays must not forward (0x88).
    h.d_sock.sendto(b"\x8c" + data[-ONION_RETURN_3_SIZE:] + b"\x88" + bytes(81), source)
    h.net.run_for(1.0)
    assert h.client_inbox == []
    assert h.relays[2].stats.dropped_decrypt == 1
    assert h.relays[2].stats.dropped_malformed == 1


def test_c_refuses_to_forward_new_format_announce() -> None:
    h = Harness(3)
    h.client.sendto(h.request(b"\x87" + bytes(176)), ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    assert h.d_inbox == []
    assert h.relays[2].stats.dropped_malformed == 1


def test_return_key_rotation_keeps_previous_key() -> None:
    h = Harness(4)
    h.client.sendto(h.request(ANNOUNCE_LIKE), ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    data, source = h.d_inbox[0]
    ret3 = data[-ONION_RETURN_3_SIZE:]
    response = OnionResponse3(ret3, b"\x86" + bytes(121)).encode()
    h.net.run_for(RETURN_KEY_ROTATION_INTERVAL_S + 1)
    assert all(r.stats.key_rotations == 1 for r in h.relays)
    h.d_sock.sendto(response, source)
    h.net.run_for(1.0)
    assert len(h.client_inbox) == 1  # blobs sealed with the previous key still open
    h.net.run_for(RETURN_KEY_ROTATION_INTERVAL_S + 1)
    h.d_sock.sendto(response, source)
    h.net.run_for(1.0)
    assert len(h.client_inbox) == 1
    assert h.relays[2].stats.dropped_decrypt == 1


def test_tcp_client_as_source() -> None:
    rng = SeededRng(5)
    relay_a = OnionRelay(KeyPair.generate(rng), rng.fork("a"), 0.0)
    b_keys, c_keys = KeyPair.generate(rng), KeyPair.generate(rng)
    relay_b = OnionRelay(b_keys, rng.fork("b"), 0.0)
    relay_c = OnionRelay(c_keys, rng.fork("c"), 0.0)
    t2, t3 = KeyPair.generate(rng), KeyPair.generate(rng)
    b_addr, c_addr = IPPort.parse("10.1.0.2", PORT), IPPort.parse("10.1.0.3", PORT)
    packet = seal_tcp_onion_request(
        rng(24),
        [
            (shared_key(b_keys.public_key, t2.secret_key), t2.public_key),
            (shared_key(c_keys.public_key, t3.secret_key), t3.public_key),
        ],
        [b_addr, c_addr],
        IPPort.parse("10.1.0.4", PORT),
        ANNOUNCE_LIKE,
    ).encode()
    client = TcpClientSource(connection_id=7, identifier=2**63 + 5)
    relay_a.receive_tcp_onion_request(packet, client, 1.0)
    [(to_b, p1)] = relay_a.datagrams_to_send()
    assert to_b == b_addr.to_addr()
    relay_b.receive(p1, ("10.1.0.1", PORT), 1.0)
    [(to_c, p2)] = relay_b.datagrams_to_send()
    assert to_c == c_addr.to_addr()
    relay_c.receive(p2, ("10.1.0.2", PORT), 1.0)
    [(to_d, p3)] = relay_c.datagrams_to_send()
    assert to_d == ("10.1.0.4", PORT)
    relay_c.receive(OnionResponse3(p3[-177:], b"\x84" + bytes(81)).encode(), to_d, 2.0)
    [(_, r2)] = relay_c.datagrams_to_send()
    relay_b.receive(r2, ("10.1.0.3", PORT), 2.0)
    [(_, r1)] = relay_b.datagrams_to_send()
    relay_a.receive(r1, ("10.1.0.2", PORT), 2.0)
    assert relay_a.datagrams_to_send() == []
    assert relay_a.tcp_responses_to_send() == [(client, b"\x84" + bytes(81))]
    relay_a.receive_tcp_onion_request(b"\x08" + bytes(100), client, 3.0)
    assert relay_a.stats.dropped_malformed == 1


@pytest.fixture(scope="module")
def lone_relay() -> OnionRelay:
    rng = SeededRng(9)
    return OnionRelay(KeyPair.generate(rng), rng, 0.0)


KINDS = [b"\x80", b"\x81", b"\x82", b"\x8c", b"\x8d", b"\x8e", b"\x08", b""]


@given(prefix=st.sampled_from(KINDS), data=st.binary(max_size=1500))
def test_random_bytes_never_raise(lone_relay: OnionRelay, prefix: bytes, data: bytes) -> None:
    before = lone_relay.statistics()
    lone_relay.receive(prefix + data, ("11.0.0.9", PORT), 5.0)
    lone_relay.receive_tcp_onion_request(prefix + data, TcpClientSource(1, 1), 5.0)
    after = lone_relay.statistics()
    assert lone_relay.datagrams_to_send() == []
    dropped = (after.dropped_decrypt + after.dropped_malformed) - (
        before.dropped_decrypt + before.dropped_malformed
    )
    assert dropped == 2


def test_oversized_packets_dropped_and_counted() -> None:
    h = Harness(6)
    big = h.request(b"\x83" + bytes(1173))  # the largest payload: a 1400-byte 0x80
    assert len(big) == 1400
    h.client.sendto(big, ("11.0.0.1", PORT))
    h.client.sendto(big + b"\x00", ("11.0.0.1", PORT))  # 1401 bytes
    h.client.sendto(b"\x8e" + bytes(1400), ("11.0.0.1", PORT))
    h.net.run_for(1.0)
    assert len(h.d_inbox) == 1
    assert h.relays[0].stats.dropped_malformed == 2
    with pytest.raises(ValueError, match="onion payload"):
        h.request(b"\x83" + bytes(1174))


def test_ipv6_hops_and_sources() -> None:
    rng = SeededRng(11)
    keys = [KeyPair.generate(rng) for _ in range(3)]
    relays = [OnionRelay(k, rng.fork(i), 0.0) for i, k in enumerate(keys)]
    addrs = [("2001:db8::1", PORT), ("2001:db8::2", PORT), ("2001:db8::3", PORT)]
    client = KeyPair.generate(rng)
    t2, t3 = KeyPair.generate(rng), KeyPair.generate(rng)
    packet = seal_onion_request(
        rng(24),
        [
            (shared_key(keys[0].public_key, client.secret_key), client.public_key),
            (shared_key(keys[1].public_key, t2.secret_key), t2.public_key),
            (shared_key(keys[2].public_key, t3.secret_key), t3.public_key),
        ],
        [IPPort.parse(*addrs[1]), IPPort.parse(*addrs[2])],
        IPPort.parse("2001:db8::4", PORT),
        ANNOUNCE_LIKE,
    ).encode()
    source = ("2001:db8::50", PORT)
    relays[0].receive(packet, source, 1.0)
    [(to, p)] = relays[0].datagrams_to_send()
    assert to == addrs[1]
    relays[1].receive(p, addrs[0], 1.0)
    [(to, p)] = relays[1].datagrams_to_send()
    assert to == addrs[2]
    relays[2].receive(p, addrs[1], 1.0)
    [(to, p)] = relays[2].datagrams_to_send()
    assert to == ("2001:db8::4", PORT)
    relays[2].receive(OnionResponse3(p[-177:], b"\x86" + bytes(121)).encode(), to, 2.0)
    [(to, p)] = relays[2].datagrams_to_send()
    assert to == addrs[1]
    relays[1].receive(p, addrs[2], 2.0)
    [(to, p)] = relays[1].datagrams_to_send()
    assert to == addrs[0]
    relays[0].receive(p, addrs[1], 2.0)
    assert relays[0].datagrams_to_send() == [(source, b"\x86" + bytes(121))]
