"""Interoperability with plain tuntox, both roles, using raw frames.

The simulated tuntox peers below parse and build frames with ``struct`` by hand, following
tuntox's main.c / client.c (``parse_lossless_packet``, ``handle_frame``,
``handle_ping_frame``, ``handle_request_tunnel_frame``, ``send_tunnel_ack_frame``,
``send_tunnel_request_packet``, ``handle_acktunnel_frame``), independently of our codec.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import (
    ConnectRequest,
    PeerEof,
    TunnelClosed,
    TunnelData,
    TunnelOpened,
    TunnelOpenFailed,
)
from tunnel.forward.rules import RuleSet
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.state import PeerMode
from tunnel.testing.rng import SeededRng
from tunnel.wire.tuntox import DenyCode

SERVER = bytes([2]) * 32
CLIENT = bytes([1]) * 32
PING, PONG, TCP, FIN, REQUEST, ACK = 0x0108, 0x0100, 0x0600, 0x0601, 0x0602, 0x0610


def frame(kind: int, connid: int, payload: bytes = b"") -> bytes:
    """tuntox send_frame(): magic, type, connid, length, all big-endian."""
    return struct.pack(">HHHH", 0xA26B, kind, connid, len(payload)) + payload


def parse(packet: bytes) -> tuple[int, int, bytes] | None:
    """tuntox parse_lossless_packet(): None where tuntox drops the packet."""
    if len(packet) < 8:
        return None
    magic, kind, connid, length = struct.unpack(">HHHH", packet[:8])
    if magic != 0xA26B or len(packet) < 8 + length or length > 1365:
        return None
    return kind, connid, packet[8 : 8 + length]


def _blob(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


@dataclass
class TuntoxServer:
    """What a tuntox server does with each frame (main.c)."""

    connect_ok: bool = True
    next_id: int = 0x4242
    tunnels: dict[int, bytearray] = field(default_factory=dict)
    closed: list[int] = field(default_factory=list)
    seen_types: list[int] = field(default_factory=list)

    def handle(self, packet: bytes) -> list[bytes]:
        parsed = parse(packet)
        assert parsed is not None, "tuntox would drop this packet"
        kind, connid, data = parsed
        self.seen_types.append(kind)
        if kind == PING:
            return [frame(PONG, 0, data)]
        if kind == REQUEST:
            forward_id = int.from_bytes(data[:4], "big")
            if not self.connect_ok:
                return []  # "TODO send reject": nothing at all
            tunnel_id = self.next_id
            self.next_id += 1
            self.tunnels[tunnel_id] = bytearray()
            return [frame(ACK, tunnel_id, forward_id.to_bytes(4, "big"))]
        if kind == TCP:
            self.tunnels[connid].extend(data)
        elif kind == FIN:
            del self.tunnels[connid]
            self.closed.append(connid)
        return []


class ClientHarness:
    def __init__(self, server: TuntoxServer) -> None:
        self.mux = ClientMux(SeededRng(7))
        self.server = server
        self.now = 0.0
        self.events: list[object] = []
        self.sent: list[bytes] = []

    def flush(self) -> None:
        for _ in range(10_000):
            packets = self.mux.packets_to_send(SERVER)
            assert self.mux.lossy_packets_to_send(SERVER) == []
            if not packets:
                break
            for packet in packets:
                self.sent.append(packet)
                for answer in self.server.handle(packet):
                    self.mux.receive_packet(SERVER, answer, self.now)
        self.events.extend(self.mux.drain_events())


def test_our_client_against_plain_tuntox_server() -> None:
    server = TuntoxServer()
    h = ClientHarness(server)
    h.mux.friend_online(SERVER, h.now)
    h.flush()
    # Our caps offer went out as an ordinary PING; the tuntox echo marks the server plain.
    assert server.seen_types == [PING]
    assert h.mux.peer_mode(SERVER) is PeerMode.LEGACY

    handle = h.mux.open_tunnel(SERVER, "127.0.0.1", 22, h.now)
    h.flush()
    request = h.sent[-1]
    forward_id = request[8:12]
    assert request == bytes.fromhex("a26b06020016000d") + forward_id + b"127.0.0.1"
    assert TunnelOpened(handle, SERVER) in h.events
    assert h.mux.wire_id(handle) == 0x4242

    upload = _blob(1, 100_000)
    h.mux.stream_data(handle, upload, h.now)
    h.flush()
    assert bytes(server.tunnels[0x4242]) == upload
    assert all(len(p) <= 1373 for p in h.sent)

    # Server -> client data, then the server closes (TCP_FIN = both directions).
    download = _blob(2, 5000)
    for i in range(0, len(download), 1365):
        h.mux.receive_packet(SERVER, frame(TCP, 0x4242, download[i : i + 1365]), h.now)
    h.mux.receive_packet(SERVER, frame(FIN, 0x4242), h.now)
    h.flush()
    delivered = b"".join(e.data for e in h.events if isinstance(e, TunnelData))
    assert delivered == download
    assert h.events[-1] == TunnelClosed(handle, None)

    # A second connection on the same forward works (tuntox HEAD's own -L cannot do this).
    second = h.mux.open_tunnel(SERVER, "127.0.0.1", 22, h.now)
    h.flush()
    assert TunnelOpened(second, SERVER) in h.events
    h.mux.stream_data(second, b"bye", h.now)
    h.mux.stream_eof(second, h.now)  # no half-close in tuntox: data, then TCP_FIN
    h.flush()
    assert server.closed == [0x4243]
    assert h.sent[-2:] == [frame(TCP, 0x4243, b"bye"), frame(FIN, 0x4243)]
    assert h.events[-1] == TunnelClosed(second, None)

    # Only frame types tuntox understands ever reached it.
    assert set(server.seen_types) <= {PING, REQUEST, TCP, FIN}

    # UDP needs our extensions.
    udp = h.mux.open_tunnel(SERVER, "127.0.0.1", 53, h.now, udp=True)
    h.flush()
    failed = [e for e in h.events if isinstance(e, TunnelOpenFailed)]
    assert failed == [TunnelOpenFailed(udp, DenyCode.UNSUPPORTED, "server cannot forward UDP")]


def test_our_client_survives_tuntox_silent_refusal() -> None:
    server = TuntoxServer(connect_ok=False)
    h = ClientHarness(server)
    h.mux.friend_online(SERVER, h.now)
    h.flush()
    handle = h.mux.open_tunnel(SERVER, "10.0.0.1", 22, h.now)
    h.flush()
    assert h.mux.next_deadline() == 30.0
    h.now = 30.0
    h.mux.handle_timer(h.now)
    h.flush()
    assert isinstance(h.events[-1], TunnelOpenFailed)
    assert (h.events[-1].handle, h.events[-1].code) == (handle, DenyCode.TIMEOUT)
    # The late ACK of the abandoned open closes the server's tunnel instead of leaking it.
    forward_id = h.sent[-1][8:12]
    h.mux.receive_packet(SERVER, frame(ACK, 0x5555, forward_id), h.now)
    assert h.mux.packets_to_send(SERVER) == [frame(FIN, 0x5555)]
    # And new opens on the same server still work once it can connect.
    server.connect_ok = True
    again = h.mux.open_tunnel(SERVER, "10.0.0.1", 22, h.now)
    h.flush()
    assert TunnelOpened(again, SERVER) in h.events


class ServerHarness:
    """Our server facing a raw tuntox client."""

    def __init__(self, **kwargs: object) -> None:
        self.mux = ServerMux(SeededRng(8), **kwargs)  # type: ignore[arg-type]
        self.mux.friend_online(CLIENT, 0.0)
        self.out: list[bytes] = []
        self.events: list[object] = []

    def send(self, packet: bytes) -> list[bytes]:
        self.mux.receive_packet(CLIENT, packet, 0.0)
        return self.collect()

    def collect(self) -> list[bytes]:
        packets = self.mux.packets_to_send(CLIENT)
        assert self.mux.lossy_packets_to_send(CLIENT) == []
        self.out.extend(packets)
        self.events.extend(self.mux.drain_events())
        return packets


def test_our_server_answers_a_tuntox_client_as_tuntox_would() -> None:
    h = ServerHarness()
    # The ping client.c hard-codes, answered as handle_ping_frame does.
    assert h.send(bytes.fromhex("a26b01080000000548656c6c6f")) == [
        bytes.fromhex("a26b01000000000548656c6c6f")
    ]
    # REQUESTTUNNEL as send_tunnel_request_packet builds it (forward id 1, "127.0.0.1":22).
    assert h.send(frame(REQUEST, 22, (1).to_bytes(4, "big") + b"127.0.0.1")) == []
    (connect,) = [e for e in h.events if isinstance(e, ConnectRequest)]
    assert (connect.host, connect.port, connect.udp) == ("127.0.0.1", 22, False)
    assert h.mux.peer_mode(CLIENT) is PeerMode.LEGACY
    h.mux.connect_result(connect.handle, None, 0.0)
    (ack,) = h.collect()
    kind, tunnel_id, payload = parse(ack) or (0, 0, b"")
    assert (kind, payload) == (ACK, (1).to_bytes(4, "big"))  # handle_acktunnel_frame input
    assert ack == frame(ACK, tunnel_id, b"\x00\x00\x00\x01")

    # Client -> server stream bytes.
    upload = _blob(3, 4000)
    for i in range(0, len(upload), 1365):
        h.send(frame(TCP, tunnel_id, upload[i : i + 1365]))
    got = b"".join(e.data for e in h.events if isinstance(e, TunnelData))
    assert got == upload

    # Server -> client: full frames, then TCP_FIN on local EOF (tuntox has no half-close).
    download = _blob(4, 3000)
    h.mux.stream_data(connect.handle, download, 0.0)
    h.mux.stream_eof(connect.handle, 0.0)
    packets = h.collect()
    assert packets == [
        frame(TCP, tunnel_id, download[:1365]),
        frame(TCP, tunnel_id, download[1365:2730]),
        frame(TCP, tunnel_id, download[2730:]),
        frame(FIN, tunnel_id),
    ]
    assert h.events[-1] == TunnelClosed(connect.handle, None)

    # tuntox's -L reuses its forward id for every connection: each request is served.
    h.send(frame(REQUEST, 22, (1).to_bytes(4, "big") + b"127.0.0.1"))
    h.send(frame(REQUEST, 22, (1).to_bytes(4, "big") + b"127.0.0.1"))
    connects = [e for e in h.events if isinstance(e, ConnectRequest)][1:]
    assert len(connects) == 2
    for request in connects:
        h.mux.connect_result(request.handle, None, 0.0)
    acks = h.collect()
    assert [parse(a)[0] for a in acks if parse(a)] == [ACK, ACK]  # type: ignore[index]
    ids = [parse(a)[1] for a in acks]  # type: ignore[index]
    assert len(set(ids)) == 2

    # The client closes one: TCP_FIN closes both directions on our side too.
    h.send(frame(FIN, ids[0]))
    assert TunnelClosed(connects[0].handle, None) in h.events

    # Frames for unknown or foreign tunnels are dropped, not raised.
    h.send(frame(TCP, 0xFFFF, b"junk"))
    h.send(b"\xa2\x6b\x00")
    h.send(bytes.fromhex("a26a010800000000"))
    assert h.mux.statistics()["bad_packet"] == 2

    # Friend goes offline: the remaining tunnel is closed (tuntox's server leaks it).
    h.mux.friend_offline(CLIENT, 1.0)
    h.collect()
    assert TunnelClosed(connects[1].handle, "friend went offline") in h.events
    assert h.mux.tunnel_count() == 0

    # Nothing but tuntox's own frame types ever went to the tuntox client.
    assert {parse(p)[0] for p in h.out} <= {PONG, ACK, TCP, FIN}  # type: ignore[index]


def test_refusal_to_tuntox_client_silent_mode_is_exactly_tuntox() -> None:
    h = ServerHarness(rules=RuleSet.parse(["localhost:22"]), legacy_refusal="silent")
    assert h.send(frame(REQUEST, 23, (9).to_bytes(4, "big") + b"localhost")) == []
    assert not any(isinstance(e, ConnectRequest) for e in h.events)


def test_refusal_to_tuntox_client_ack_fin_closes_its_socket_at_once() -> None:
    h = ServerHarness(rules=RuleSet.parse(["localhost:22"]))
    packets = h.send(frame(REQUEST, 23, (9).to_bytes(4, "big") + b"localhost"))
    assert len(packets) == 2
    ack, fin = (parse(p) for p in packets)
    assert ack is not None
    assert fin is not None
    assert (ack[0], ack[2]) == (ACK, (9).to_bytes(4, "big"))
    assert fin == (FIN, ack[1], b"")
    # Data the tuntox client sends on it before seeing the FIN is dropped quietly.
    h.send(frame(TCP, ack[1], b"late"))
    assert h.mux.statistics()["late_frame"] == 1


def test_connect_failure_to_tuntox_client() -> None:
    h = ServerHarness()
    h.send(frame(REQUEST, 1, (3).to_bytes(4, "big") + b"127.0.0.1"))
    (connect,) = [e for e in h.events if isinstance(e, ConnectRequest)]
    h.mux.connect_result(connect.handle, "Connection refused", 0.0)
    ack, fin = (parse(p) for p in h.collect())
    assert ack is not None
    assert fin is not None
    assert ack[0] == ACK
    assert fin[:2] == (FIN, ack[1])


def test_ping_mode_client_is_answered_forever() -> None:
    h = ServerHarness()
    for _ in range(3):
        assert h.send(frame(PING, 0, b"Hello")) == [frame(PONG, 0, b"Hello")]
    assert h.mux.peer_mode(CLIENT) is PeerMode.UNKNOWN
    assert not [e for e in h.events if isinstance(e, PeerEof)]
