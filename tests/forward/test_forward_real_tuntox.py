"""Our muxes against the REAL tuntox binary, over real c-toxcore 0.2.18 friend connections.

Opt-in, local only (tuntox is not packaged, so CI cannot run it): set ``TUNTOX_BIN`` to a
tuntox binary you built yourself from its public source against Debian's libtoxcore-dev. For an
offline run the binary needs three test-only changes (the ones the tuntox-toxvpn.md 4.1
measurements used): its ``-b`` JSON bootstrap loader must read the whole hex key string (upstream
reads only ``sizeof(char*) - 1`` characters), LAN discovery must be off, and its hard-coded
internet bootstrap nodes must not be contacted, so that it bootstraps only off the local
tox-bootstrapd and sends nothing beyond loopback. No tuntox code or build script is kept here.

Our side uses a real toxcore (``ToxPeer``) as its friend transport and a minimal synchronous
driver defined here (the product drivers live with the node).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tunnel.forward.auth import AuthPolicy, request_message
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.events import (
    ConnectRequest,
    Event,
    PeerEof,
    PeerModeKnown,
    PongReceived,
    TunnelClosed,
    TunnelData,
    TunnelOpened,
)
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.state import PeerMode
from tunnel.testing.forward_driver import SyncDriver
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng

TUNTOX_BIN = os.environ.get("TUNTOX_BIN", "")
SECRET = b"sekrit"
FRIEND_TIMEOUT_S = 90.0

pytestmark = [
    pytest.mark.toxcore,
    pytest.mark.slow,
    pytest.mark.skipif(not TUNTOX_BIN, reason="set TUNTOX_BIN (see the module docstring)"),
]

_ports = PortPool(47000, 47999)


def _blob(seed: int, size: int) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(size)


@contextlib.contextmanager
def echo_server() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (one thread per connection)."""
    port = _ports.allocate_one()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        thread.join(5)


@contextlib.contextmanager
def tuntox(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    udp = _ports.allocate(3)
    cmd = [TUNTOX_BIN, "-u", f"{udp[0]}:{udp[-1]}", "-t", "0", "-d", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def nodes_json(path: Path, bootstrapd: object) -> Path:
    host, port, key = bootstrapd.node  # type: ignore[attr-defined]
    tcp_ports = list(getattr(bootstrapd, "tcp_ports", ()))
    node = {"ipv4": host, "ipv6": "-", "port": port, "public_key": key.hex().upper()}
    node["tcp_ports"] = tcp_ports
    path.write_text(json.dumps({"nodes": [node]}) + "\n" + " " * 64)
    return path


def test_our_client_against_real_tuntox_server(
    tmp_path: Path, bootstrapd: object, tox_peer_factory: Callable[..., object]
) -> None:
    json_path = nodes_json(tmp_path / "nodes.json", bootstrapd)
    id_file = tmp_path / "tuntox.id"
    conf = tmp_path / "conf"
    conf.mkdir()
    args = ["-C", str(conf), "-b", str(json_path), "-s", SECRET.decode(), "-I", str(id_file)]
    with echo_server() as echo_port, tuntox(args, tmp_path / "tuntox.log"):
        peer = tox_peer_factory("client", bootstrap=bootstrapd)
        deadline = time.monotonic() + 20
        while not (id_file.exists() and len(id_file.read_text().strip()) == 76):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        address = bytes.fromhex(id_file.read_text().strip())
        number = peer.friend_add(address, request_message(SECRET))  # type: ignore[attr-defined]
        peer.wait_friend_connected(number, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]
        mux = ClientMux(SeededRng(1))
        drv = SyncDriver(mux, peer, number, address[:32])
        mux.friend_online(drv.pk, drv.now())
        drv.pump_until(lambda: mux.peer_mode(drv.pk) is not PeerMode.UNKNOWN, 30, "caps")
        # Real tuntox echoed our caps offer as an ordinary PONG: it is seen as plain tuntox.
        assert mux.peer_mode(drv.pk) is PeerMode.LEGACY
        assert PeerModeKnown(drv.pk, None) in drv.events

        mux.ping(drv.pk, drv.now())
        drv.pump_until(lambda: any(isinstance(e, PongReceived) for e in drv.events), 30, "pong")

        received = bytearray()
        payload = _blob(1, 300_000)

        def collect(event: Event) -> None:
            if isinstance(event, TunnelData):
                received.extend(event.data)
                mux.data_consumed(event.handle, len(event.data), drv.now())

        drv.on_event = collect
        for round_ in range(2):  # two connections: tuntox HEAD's own -L only manages one
            received.clear()
            handle = mux.open_tunnel(drv.pk, "127.0.0.1", echo_port, drv.now())
            drv.pump_until(lambda h=handle: TunnelOpened(h, drv.pk) in drv.events, 30, "ACK")
            mux.stream_data(handle, payload, drv.now())
            drv.pump_until(lambda: len(received) >= len(payload), 60, f"echo {round_}")
            assert bytes(received) == payload
            mux.stream_eof(handle, drv.now())  # TCP_FIN: tuntox closes its socket
            drv.pump_until(lambda h=handle: TunnelClosed(h, None) in drv.events, 30, "close")


@contextlib.contextmanager
def tuntox_client_session(
    tmp_path: Path,
    bootstrapd: object,
    tox_peer_factory: Callable[..., object],
    server: ServerMux,
    target_port: int,
) -> Iterator[tuple[SyncDriver, int]]:
    """A real tuntox client (``-L``) befriending our ToxPeer + ``server`` mux."""
    from tunnel.testing.toxcore_events import FriendRequest

    json_path = nodes_json(tmp_path / "nodes.json", bootstrapd)
    local_port = _ports.allocate_one()
    peer = tox_peer_factory("server", bootstrap=bootstrapd, auto_accept=False)
    our_id = peer.address.hex().upper()  # type: ignore[attr-defined]
    args = ["-i", our_id, "-L", f"{local_port}:127.0.0.1:{target_port}"]
    args += ["-s", SECRET.decode(), "-b", str(json_path)]
    with tuntox(args, tmp_path / "tuntox.log"):
        request = peer.wait_event(FriendRequest, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]
        assert request.message == SECRET + b"\0"  # what the tuntox client sends
        assert server.friend_request(request.public_key, request.message)
        number = peer.friend_add_norequest(request.public_key)  # type: ignore[attr-defined]
        peer.wait_friend_connected(number, FRIEND_TIMEOUT_S)  # type: ignore[attr-defined]
        drv = SyncDriver(server, peer, number, request.public_key)
        server.friend_online(drv.pk, drv.now())
        yield drv, local_port


def test_real_tuntox_client_against_our_server(
    tmp_path: Path, bootstrapd: object, tox_peer_factory: Callable[..., object]
) -> None:
    server = ServerMux(SeededRng(2), auth=AuthPolicy(secret=SECRET))
    sockets: dict[int, socket.socket] = {}
    with (
        echo_server() as echo_port,
        tuntox_client_session(tmp_path, bootstrapd, tox_peer_factory, server, echo_port) as (
            drv,
            local_port,
        ),
    ):

        def on_event(event: Event) -> None:
            if isinstance(event, ConnectRequest):
                sock = socket.create_connection((event.host, event.port), timeout=5)
                sock.setblocking(False)
                sockets[event.handle] = sock
                server.connect_result(event.handle, None, drv.now())
            elif isinstance(event, TunnelData):
                sockets[event.handle].setblocking(True)
                sockets[event.handle].sendall(event.data)
                sockets[event.handle].setblocking(False)
                server.data_consumed(event.handle, len(event.data), drv.now())
            elif isinstance(event, TunnelClosed | PeerEof):
                sock = sockets.pop(event.handle, None)
                if sock is not None:
                    sock.close()

        drv.on_event = on_event

        def relay() -> None:
            drv.pump_once()
            for handle, sock in list(sockets.items()):
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if data:
                    server.stream_data(handle, data, drv.now())
                else:
                    server.stream_eof(handle, drv.now())
                    sockets.pop(handle).close()

        payload = _blob(2, 200_000)
        with socket.create_connection(("127.0.0.1", local_port), timeout=30) as app:
            app.setblocking(False)
            got = bytearray()
            sent = 0
            deadline = time.monotonic() + 120
            while len(got) < len(payload):
                assert time.monotonic() < deadline, f"echo stalled at {len(got)} bytes"
                relay()
                if sent < len(payload):
                    with contextlib.suppress(BlockingIOError):
                        sent += app.send(payload[sent : sent + 16384])
                with contextlib.suppress(BlockingIOError):
                    got.extend(app.recv(65536))
                time.sleep(0.002)
            assert bytes(got) == payload
        # The tuntox client sends TCP_FIN when its local socket closes.
        deadline = time.monotonic() + 30
        while server.tunnel_count():
            assert time.monotonic() < deadline, "tunnel not closed after TCP_FIN"
            relay()
            time.sleep(0.002)
        assert TunnelOpened in {type(e) for e in drv.events}


def test_refusal_closes_the_real_tuntox_clients_connection_at_once(
    tmp_path: Path, bootstrapd: object, tox_peer_factory: Callable[..., object]
) -> None:
    from tunnel.forward.rules import RuleSet

    # Only port 1 allowed: the -L target is refused; tuntox itself would answer nothing and
    # leave the connection (and its -L port) hanging forever.
    server = ServerMux(SeededRng(3), rules=RuleSet.parse(["127.0.0.1:1"]))
    target = _ports.allocate_one()
    with (
        tuntox_client_session(tmp_path, bootstrapd, tox_peer_factory, server, target) as (
            drv,
            local_port,
        ),
        socket.create_connection(("127.0.0.1", local_port), timeout=30) as app,
    ):
        app.setblocking(False)
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "tuntox client kept the refused connection"
            drv.pump_once()
            try:
                if app.recv(1) == b"":
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
            time.sleep(0.002)
        assert server.statistics()["denied"] == 1
