"""In-process loopback: a client mux and a server mux wired back to back, with fake drivers.

Used by the forwarding tests and usable by simulations; pure (no sockets, no clock).

No sockets, no clock: ``Link.now`` is advanced explicitly. ``FakeApp`` plays the driver of
one mux (it records events, consumes delivered data unless a handle is paused, feeds queued
outgoing bytes within ``send_capacity``, and on the server answers ``ConnectRequest``s
through a policy callable).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import (
    ConnectRequest,
    DatagramReceived,
    Event,
    PeerEof,
    PeerModeKnown,
    PingTimedOut,
    PongReceived,
    SendSpaceAvailable,
    TunnelClosed,
    TunnelData,
    TunnelOpened,
    TunnelOpenFailed,
)
from tunnel.forward.mux import ForwardMux
from tunnel.forward.server_mux import ServerMux
from tunnel.testing.rng import SeededRng

CLIENT_PK = bytes([1]) * 32
SERVER_PK = bytes([2]) * 32


def accept_all(_: ConnectRequest) -> str | None:
    return None


@dataclass
class FakeApp:
    """A driver stand-in for one mux."""

    mux: ForwardMux
    connect_policy: Callable[[ConnectRequest], str | None] | None = accept_all
    events: list[Event] = field(default_factory=list)
    received: dict[int, bytearray] = field(default_factory=dict)
    datagrams: dict[int, list[bytes]] = field(default_factory=dict)
    opened: set[int] = field(default_factory=set)
    failed: dict[int, TunnelOpenFailed] = field(default_factory=dict)
    closed: dict[int, str | None] = field(default_factory=dict)
    eof: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    unconsumed: dict[int, int] = field(default_factory=dict)
    outgoing: dict[int, bytearray] = field(default_factory=dict)
    eof_after: set[int] = field(default_factory=set)
    connects: list[ConnectRequest] = field(default_factory=list)
    pongs: list[float] = field(default_factory=list)
    ping_timeouts: int = 0
    space_events: int = 0

    def send(self, handle: int, data: bytes, *, eof: bool = False) -> None:
        self.outgoing.setdefault(handle, bytearray()).extend(data)
        if eof:
            self.eof_after.add(handle)

    def resume(self, handle: int, now: float) -> None:
        self.paused.discard(handle)
        pending = self.unconsumed.pop(handle, 0)
        if pending:
            self.mux.data_consumed(handle, pending, now)

    def pump(self, now: float) -> bool:
        """Handle events and feed outgoing data; True if anything happened."""
        busy = False
        for handle in list(self.outgoing):
            buf = self.outgoing[handle]
            if handle in self.closed or handle in self.failed:
                continue
            room = self.mux.send_capacity(handle)
            if buf and room:
                chunk = bytes(buf[:room])
                del buf[:room]
                self.mux.stream_data(handle, chunk, now)
                busy = True
            if not buf and handle in self.eof_after:
                self.eof_after.discard(handle)
                self.mux.stream_eof(handle, now)
                busy = True
        while (event := self.mux.next_event()) is not None:
            busy = True
            self.events.append(event)
            self._handle(event, now)
        return busy

    def _handle(self, event: Event, now: float) -> None:
        match event:
            case TunnelData(handle, data):
                self.received.setdefault(handle, bytearray()).extend(data)
                if handle in self.paused:
                    self.unconsumed[handle] = self.unconsumed.get(handle, 0) + len(data)
                else:
                    self.mux.data_consumed(handle, len(data), now)
            case DatagramReceived(handle, data):
                self.datagrams.setdefault(handle, []).append(data)
            case TunnelOpened(handle, _):
                self.opened.add(handle)
            case TunnelOpenFailed():
                self.failed[event.handle] = event
            case TunnelClosed(handle, error):
                self.closed[handle] = error
            case PeerEof(handle):
                self.eof.add(handle)
            case ConnectRequest():
                self.connects.append(event)
                if self.connect_policy is not None:
                    assert isinstance(self.mux, ServerMux)
                    error = self.connect_policy(event)
                    self.mux.connect_result(event.handle, error, now)
            case PongReceived(_, rtt):
                self.pongs.append(rtt)
            case PingTimedOut():
                self.ping_timeouts += 1
            case SendSpaceAvailable():
                self.space_events += 1
            case PeerModeKnown():
                pass


@dataclass
class Link:
    """Client mux <-> server mux over a perfect in-order friend connection."""

    client: ClientMux
    server: ServerMux
    client_app: FakeApp
    server_app: FakeApp
    now: float = 0.0
    budget: int | None = None
    wire_log: list[tuple[str, bytes]] = field(default_factory=list)
    log_wire: bool = False
    drop_lossy: bool = False

    def online(self) -> None:
        self.client.friend_online(SERVER_PK, self.now)
        self.server.friend_online(CLIENT_PK, self.now)

    def offline(self) -> None:
        self.client.friend_offline(SERVER_PK, self.now)
        self.server.friend_offline(CLIENT_PK, self.now)

    def step(self) -> bool:
        busy = self.client_app.pump(self.now)
        busy |= self.server_app.pump(self.now)
        c2s = self.client.packets_to_send(SERVER_PK, self.budget)
        s2c = self.server.packets_to_send(CLIENT_PK, self.budget)
        c2s_lossy = self.client.lossy_packets_to_send(SERVER_PK)
        s2c_lossy = self.server.lossy_packets_to_send(CLIENT_PK)
        for packet in c2s:
            if self.log_wire:
                self.wire_log.append(("c2s", packet))
            self.server.receive_packet(CLIENT_PK, packet, self.now)
        for packet in s2c:
            if self.log_wire:
                self.wire_log.append(("s2c", packet))
            self.client.receive_packet(SERVER_PK, packet, self.now)
        if not self.drop_lossy:
            for packet in c2s_lossy:
                self.server.receive_packet(CLIENT_PK, packet, self.now)
            for packet in s2c_lossy:
                self.client.receive_packet(SERVER_PK, packet, self.now)
        return busy or bool(c2s or s2c or c2s_lossy or s2c_lossy)

    def run(self, max_steps: int = 100_000, dt: float = 0.001) -> int:
        """Step until nothing moves; returns the number of steps. Time advances ``dt`` each."""
        for steps in range(max_steps):
            if not self.step():
                return steps
            self.now += dt
        raise AssertionError("link did not settle")

    def advance(self, seconds: float) -> None:
        """Jump the clock and fire due timers on both muxes."""
        self.now += seconds
        self.client.handle_timer(self.now)
        self.server.handle_timer(self.now)


def make_link(
    *,
    client: ClientMux | None = None,
    server: ServerMux | None = None,
    policy: Callable[[ConnectRequest], str | None] | None = accept_all,
    seed: int = 1,
) -> Link:
    client = client or ClientMux(SeededRng(seed).fork("client"))
    server = server or ServerMux(SeededRng(seed).fork("server"))
    link = Link(client, server, FakeApp(client, None), FakeApp(server, policy))
    return link
