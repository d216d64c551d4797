"""``LargePackets`` (tunnel/io/vpn_large.py) against a fake node and engine, virtual clock:
who gets probed, over which path, and what the engine's route caps become."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnel.io.vpn_large import LargePackets
from tunnel.vpn.pmtu import ProbeTiming
from tunnel.wire.vpn import (
    MAX_IP_PACKET_BYTES,
    VPN_PROBE_PACKET_ID,
    Probe,
    ProbeAck,
    decode_probe_untrusted,
)

PEER = bytes(range(32))
TOXCORE_PEER = bytes(range(1, 33))
LIMIT = 9000
ADDR_1 = ("198.18.0.2", 33445)
ADDR_2 = ("198.18.0.9", 33445)


@dataclass
class FakeSession:
    max_lossy_payload: int = MAX_IP_PACKET_BYTES + 1
    receive_bytes: int = MAX_IP_PACKET_BYTES + 1

    def set_lossy_limits(self, *, receive_bytes: int, send_bytes: int) -> None:
        self.receive_bytes = receive_bytes
        self.max_lossy_payload = send_bytes


@dataclass
class FakeNetCrypto:
    sessions: dict[bytes, FakeSession] = field(default_factory=dict)
    direct: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    sent: list[tuple[bytes, bytes]] = field(default_factory=list)

    def is_direct(self, public_key: bytes, now: float) -> bool:
        return public_key in self.direct

    def udp_addr(self, public_key: bytes) -> tuple[str, int] | None:
        return self.direct.get(public_key)

    def send_lossy(self, public_key: bytes, data: bytes, now: float) -> None:
        if len(data) > self.sessions[public_key].max_lossy_payload:
            raise ValueError("too large for this session")
        self.sent.append((public_key, data))


@dataclass
class FakeNode:
    netcrypto: FakeNetCrypto = field(default_factory=FakeNetCrypto)
    flushes: int = 0

    def flush(self) -> None:
        self.flushes += 1


@dataclass
class FakeEngine:
    limits: dict[bytes, int] = field(default_factory=dict)
    caps: dict[bytes, int | None] = field(default_factory=dict)

    def negotiated_limit(self, public_key: bytes) -> int | None:
        return self.limits.get(public_key)

    def set_path_cap(self, public_key: bytes, limit: int | None) -> None:
        self.caps[public_key] = limit


class Lab:
    def __init__(self) -> None:
        self.now = 0.0
        self.node = FakeNode()
        self.engine = FakeEngine()
        self.large = LargePackets(
            self.node,  # type: ignore[arg-type]
            self.engine,  # type: ignore[arg-type]
            LIMIT,
            timing=ProbeTiming(search=False),
            now=lambda: self.now,
        )
        for key in (PEER, TOXCORE_PEER):
            self.node.netcrypto.sessions[key] = FakeSession()

    def probes(self) -> list[Probe]:
        found = []
        for key, data in self.node.netcrypto.sent:
            assert key == PEER
            message = decode_probe_untrusted(data)
            if isinstance(message, Probe):
                found.append(message)
        self.node.netcrypto.sent.clear()
        return found


def test_toxcore_peers_and_small_limits_get_no_probes_nor_large_sessions() -> None:
    lab = Lab()
    lab.large.prepare_session(TOXCORE_PEER)  # friend connected: we accept large packets ...
    assert lab.node.netcrypto.sessions[TOXCORE_PEER].receive_bytes == LIMIT + 1
    # ... but send only toxcore-sized ones: a toxcore peer never sends a HELLO (no agree()),
    # and a member announcing 1372 gets no prober
    lab.large.agree(TOXCORE_PEER, MAX_IP_PACKET_BYTES)
    assert lab.node.netcrypto.sessions[TOXCORE_PEER].max_lossy_payload == MAX_IP_PACKET_BYTES + 1
    lab.node.netcrypto.direct[TOXCORE_PEER] = ADDR_1
    lab.large.check_paths()
    lab.large.service()
    assert lab.node.netcrypto.sent == []
    assert lab.large.path_cap(TOXCORE_PEER) is None


def test_capped_until_acked_then_path_change_starts_over() -> None:
    lab = Lab()
    lab.engine.limits[PEER] = LIMIT
    lab.large.agree(PEER, LIMIT)  # relayed: capped, nothing sent
    assert lab.node.netcrypto.sessions[PEER].max_lossy_payload == LIMIT + 1
    assert lab.engine.caps[PEER] == MAX_IP_PACKET_BYTES
    lab.large.service()
    assert lab.probes() == []
    # a direct path: probed at once, still capped
    lab.node.netcrypto.direct[PEER] = ADDR_1
    lab.large.check_paths()
    lab.large.service()
    [probe] = lab.probes()
    assert probe.size == LIMIT
    assert lab.engine.caps[PEER] == MAX_IP_PACKET_BYTES
    # the member answers a probe of ours: cap lifted (None: the agreed limit applies)
    lab.large.handle_packet(PEER, ProbeAck(probe.nonce, probe.size).encode())
    assert lab.engine.caps[PEER] is None
    assert lab.large.path_cap(PEER) == LIMIT
    # the member's probe gets a small ack
    lab.large.handle_packet(PEER, Probe(77, 5000).encode())
    lab.large.service()
    [(key, data)] = lab.node.netcrypto.sent
    assert key == PEER
    assert data == ProbeAck(77, 5000).encode()
    assert data[0] == VPN_PROBE_PACKET_ID
    lab.node.netcrypto.sent.clear()
    # a new address: back to 1372 and probed again at once
    lab.now = 5.0
    lab.node.netcrypto.direct[PEER] = ADDR_2
    lab.large.check_paths()
    assert lab.engine.caps[PEER] == MAX_IP_PACKET_BYTES
    lab.large.service()
    [again] = lab.probes()
    assert again.size == LIMIT
    # relayed: capped, and no probe goes over the relay
    del lab.node.netcrypto.direct[PEER]
    lab.large.check_paths()
    lab.now = 10.0
    lab.large.service()
    assert lab.probes() == []
    assert lab.large.path_cap(PEER) == MAX_IP_PACKET_BYTES
    stats = lab.large.statistics()
    assert stats["probes_sent"] == 2
    assert stats["probes_acked"] == 1
    assert stats["probes_answered"] == 1
    assert stats["probe_fallbacks"] == 1
    # garbage is counted, never answered
    lab.large.handle_packet(PEER, bytes([VPN_PROBE_PACKET_ID, 9]))
    assert lab.large.statistics()["probe_bad"] == 1
    # offline: forgotten
    lab.large.forget(PEER)
    assert lab.large.path_cap(PEER) is None
    assert lab.large.statistics()["probes_sent"] == 2  # totals keep past probers


def test_failed_probes_keep_the_cap_and_fall_back_after_a_failed_reprobe() -> None:
    lab = Lab()
    lab.engine.limits[PEER] = LIMIT
    lab.node.netcrypto.direct[PEER] = ADDR_1
    lab.large.agree(PEER, LIMIT)
    timing = ProbeTiming(search=False)
    for second in range(timing.attempts + 1):
        lab.now = float(second)
        lab.large.service()
    assert len(lab.probes()) == timing.attempts  # all lost
    assert lab.engine.caps[PEER] == MAX_IP_PACKET_BYTES
    assert lab.large.statistics()["probe_rounds_failed"] == 1
    # the retry is answered
    lab.now += timing.retry_interval_s
    lab.large.service()
    [probe] = lab.probes()
    lab.large.handle_packet(PEER, ProbeAck(probe.nonce, probe.size).encode())
    assert lab.engine.caps[PEER] is None
    # the re-probes go unanswered: back to 1372 at once when the round fails
    start = lab.now + timing.reprobe_interval_s
    for second in range(timing.attempts + 1):
        lab.now = start + second
        lab.large.service()
    assert lab.engine.caps[PEER] == MAX_IP_PACKET_BYTES
    assert lab.large.statistics()["probe_fallbacks"] == 1
