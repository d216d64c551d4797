"""Our client mux and our server mux over a REAL c-toxcore 0.2.18 friend connection.

Both ends speak the extensions (caps answer, flow control, half-close, UDP in lossy packets);
toxcore's own send queue supplies real back-pressure (SENDQ) underneath.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from tunnel.forward.auth import AuthPolicy, request_message
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import (
    ConnectRequest,
    DatagramReceived,
    Event,
    PeerEof,
    TunnelClosed,
    TunnelData,
    TunnelOpened,
)
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.state import PeerMode
from tunnel.testing.forward_driver import SyncDriver
from tunnel.testing.rng import SeededRng
from tunnel.testing.toxcore_events import FriendRequest

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

SECRET = b"open sesame"
FRIEND_TIMEOUT_S = 90.0
WINDOW = 128 * 1024
"""Small windows so the 400 kB uploads need several WINDOW grants."""


def _blob(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


def test_extended_peers_over_real_toxcore(
    bootstrapd: object, tox_peer_factory: Callable[..., object]
) -> None:
    server_peer = tox_peer_factory("srv", bootstrap=bootstrapd, auto_accept=False)
    client_peer = tox_peer_factory("cli", bootstrap=bootstrapd)
    server_address = server_peer.address  # type: ignore[attr-defined]
    number_at_client = client_peer.friend_add(  # type: ignore[attr-defined]
        server_address, request_message(SECRET)
    )
    request = server_peer.wait_event(FriendRequest, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]
    server = ServerMux(SeededRng(1), auth=AuthPolicy(secret=SECRET), window_bytes=WINDOW)
    assert server.friend_request(request.public_key, request.message)
    number_at_server = server_peer.friend_add_norequest(request.public_key)  # type: ignore[attr-defined]
    client_peer.wait_friend_connected(number_at_client, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]
    server_peer.wait_friend_connected(number_at_server, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]

    client = ClientMux(SeededRng(2), window_bytes=WINDOW)
    cdrv = SyncDriver(client, client_peer, number_at_client, server_address[:32])  # type: ignore[arg-type]
    sdrv = SyncDriver(server, server_peer, number_at_server, request.public_key)  # type: ignore[arg-type]
    client.friend_online(cdrv.pk, cdrv.now())
    server.friend_online(sdrv.pk, sdrv.now())

    server_in: dict[int, bytearray] = {}
    client_in: dict[int, bytearray] = {}

    def on_server(event: Event) -> None:
        if isinstance(event, ConnectRequest):
            server.connect_result(event.handle, None, sdrv.now())
        elif isinstance(event, TunnelData):
            server_in.setdefault(event.handle, bytearray()).extend(event.data)
            server.data_consumed(event.handle, len(event.data), sdrv.now())
        elif isinstance(event, DatagramReceived):
            server.send_datagram(event.handle, event.data[::-1], sdrv.now())

    def on_client(event: Event) -> None:
        if isinstance(event, TunnelData):
            client_in.setdefault(event.handle, bytearray()).extend(event.data)
            client.data_consumed(event.handle, len(event.data), cdrv.now())

    sdrv.on_event = on_server
    cdrv.on_event = on_client

    def both_until(done: Callable[[], object], timeout: float, what: str) -> None:
        def step() -> object:
            sdrv.pump_once(64)
            return done()

        cdrv.pump_until(step, timeout, what)

    both_until(lambda: client.peer_mode(cdrv.pk) is PeerMode.EXTENDED, 30, "caps answer")
    assert server.peer_mode(sdrv.pk) is PeerMode.EXTENDED

    handles = [client.open_tunnel(cdrv.pk, "svc", 100 + i, cdrv.now()) for i in range(3)]
    both_until(lambda: all(TunnelOpened(h, cdrv.pk) in cdrv.events for h in handles), 30, "opens")
    connects = [e for e in sdrv.events if isinstance(e, ConnectRequest)]
    by_port = {c.port: c.handle for c in connects}
    uploads = {h: _blob(h, 400_000) for h in handles}
    for h in handles:
        client.stream_data(h, uploads[h], cdrv.now())  # beyond one window: credit must flow
        client.stream_eof(h, cdrv.now())
    both_until(
        lambda: all(PeerEof(by_port[100 + i]) in sdrv.events for i in range(3)), 120, "uploads"
    )
    for i, h in enumerate(handles):
        assert bytes(server_in[by_port[100 + i]]) == uploads[h]
    # Half-close: the server still answers on each tunnel after the client's EOF.
    for i in range(3):
        server.stream_data(by_port[100 + i], _blob(50 + i, 100_000), sdrv.now())
        server.stream_eof(by_port[100 + i], sdrv.now())
    both_until(lambda: all(TunnelClosed(h, None) in cdrv.events for h in handles), 120, "downloads")
    for i, h in enumerate(handles):
        assert bytes(client_in[h]) == _blob(50 + i, 100_000)

    # UDP association over toxcore lossy packets (loss is possible: retry a few times).
    udp = client.open_tunnel(cdrv.pk, "dns", 53, cdrv.now(), udp=True)
    both_until(lambda: TunnelOpened(udp, cdrv.pk) in cdrv.events, 30, "UDP open")

    def answered() -> bool:
        return any(isinstance(e, DatagramReceived) for e in cdrv.events)

    for _ in range(20):
        client.send_datagram(udp, b"ping?", cdrv.now())
        try:
            both_until(answered, 1.0, "datagram")
            break
        except TimeoutError:
            continue
    assert DatagramReceived(udp, b"?gnip") in cdrv.events
    assert server.statistics()["frames_received"] > 3 * 400_000 // 1365
    assert client.statistics().get("bad_packet", 0) == 0
    assert server.statistics().get("bad_packet", 0) == 0
