"""Trio drivers on loopback: our relay server, relay pools, bad clients, SOCKS5/HTTP proxies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tunnel.crypto import KeyPair
from tunnel.errors import ConfigError
from tunnel.io.proxy import ProxyConfig, open_tcp_stream
from tunnel.io.tcp_relay import MAX_ROUTED_BYTES, RelayPoolDriver, TcpRelayServer, serve_tcp_relay
from tunnel.tcp_relay.client import ClientStatus, RelayClientConnection
from tunnel.tcp_relay.connections import (
    PeerData,
    PeerOffline,
    PeerOnline,
    RelayConnected,
)
from tunnel.testing.ports import PortPool
from tunnel.testing.proxies import Microsocks, Tinyproxy

from .pool_events import wait_event

TIMEOUT_S = 10.0


async def start_relay(nursery: trio.Nursery, port: int) -> TcpRelayServer:
    keys = KeyPair.generate(os.urandom)
    server: TcpRelayServer = await nursery.start(
        lambda task_status: serve_tcp_relay(keys, [port], host="127.0.0.1", task_status=task_status)
    )
    return server


async def start_pool(nursery: trio.Nursery, proxy: ProxyConfig | None = None) -> RelayPoolDriver:
    driver = RelayPoolDriver(KeyPair.generate(os.urandom), proxy=proxy)
    await nursery.start(driver.run)
    return driver


async def link(a: RelayPoolDriver, b: RelayPoolDriver, relay: TcpRelayServer, port: int) -> None:
    for d in (a, b):
        d.add_relay("127.0.0.1", port, relay.public_key)
    a.add_peer(b.pool.self_keys.public_key)
    b.add_peer(a.pool.self_keys.public_key)
    await wait_event(a, lambda e: isinstance(e, PeerOnline))
    await wait_event(b, lambda e: isinstance(e, PeerOnline))


async def exchange(a: RelayPoolDriver, b: RelayPoolDriver, payload: bytes) -> None:
    assert a.send_to_peer(b.pool.self_keys.public_key, payload)
    ev = await wait_event(b, lambda e: isinstance(e, PeerData))
    assert isinstance(ev, PeerData)
    assert ev.data == payload


def numbered(seq: int) -> bytes:
    """A 1400-byte data packet carrying ``seq`` in bytes 1-2."""
    return b"\x1b" + seq.to_bytes(2, "big") + bytes(1397)


async def receive_numbered(driver: RelayPoolDriver, count: int) -> list[int]:
    """The numbers carried by the next ``count`` data packets (see :func:`numbered`)."""
    got = []
    with trio.fail_after(TIMEOUT_S):
        while len(got) < count:
            ev = await wait_event(driver, lambda e: isinstance(e, PeerData))
            assert isinstance(ev, PeerData)
            got.append(int.from_bytes(ev.data[1:3], "big"))
    return got


async def test_pools_exchange_data_over_our_relay(relay_ports: PortPool) -> None:
    port = relay_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        assert relay.ports == [port]
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        for i in range(50):
            await exchange(a, b, b"\x1b" + bytes([i]) * 1399)
            await exchange(b, a, b"\x1b" + bytes([i]) * 10)
        st = relay.statistics()
        assert st.routed_packets == 100
        assert st.routed_bytes == 50 * 1400 + 50 * 11
        assert st.clients == 2
        nursery.cancel_scope.cancel()


async def _handshaken(
    port: int, relay: TcpRelayServer
) -> tuple[trio.SocketStream, RelayClientConnection]:
    """A raw stream with a completed, confirmed handshake (so garbage lands in the frames)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = RelayClientConnection(
        KeyPair.generate(os.urandom), relay.public_key, os.urandom, trio.current_time()
    )
    await stream.send_all(conn.data_to_send())
    reply = b""
    while len(reply) < 96:
        reply += await stream.receive_some(96 - len(reply))
    conn.receive_data(reply, trio.current_time())
    assert conn.status is ClientStatus.CONFIRMED
    await stream.send_all(conn.data_to_send())  # the first ping confirms us at the server
    return stream, conn


async def _closed_by_server(stream: trio.SocketStream) -> bool:
    with trio.fail_after(TIMEOUT_S):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


@pytest.mark.parametrize(
    "kind", ["garbage-handshake", "bad-mac", "over-2048", "short", "flood", "buffer-cap"]
)
async def test_misbehaving_client_is_dropped_alone(relay_ports: PortPool, kind: str) -> None:
    port = relay_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        if kind == "garbage-handshake":
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(os.urandom(128))
        else:
            stream, conn = await _handshaken(port, relay)
            if kind == "bad-mac":
                await stream.send_all(b"\x00\x21" + bytes(33))
            elif kind == "over-2048":
                await stream.send_all(b"\x08\x01" + bytes(100))
            elif kind == "short":
                await stream.send_all(b"\x00\x05" + bytes(5))
            elif kind == "flood":
                try:
                    for _ in range(20):
                        for _ in range(100):
                            conn.send_routing_request(os.urandom(32))
                        await stream.send_all(conn.data_to_send())
                except trio.BrokenResourceError:
                    pass
            elif kind == "buffer-cap":
                # announce a full frame, then stream far more than any frame can need
                try:
                    await stream.send_all(b"\x08\x00" + bytes(200_000))
                except trio.BrokenResourceError:
                    pass
        assert await _closed_by_server(stream)
        await stream.aclose()
        # the others are untouched
        await exchange(a, b, b"\x1bstill here")
        st = relay.statistics()
        assert st.clients == 2
        assert st.closed_bad_input + st.closed_flood == 1
        nursery.cancel_scope.cancel()


async def test_truncated_frame_then_hangup_is_harmless(relay_ports: PortPool) -> None:
    port = relay_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        stream, conn = await _handshaken(port, relay)
        conn.send_routing_request(a.pool.self_keys.public_key)
        await stream.send_all(conn.data_to_send())
        a.add_peer(conn.self_keys.public_key)
        await wait_event(
            a, lambda e: isinstance(e, PeerOnline) and e.peer == conn.self_keys.public_key
        )
        conn.send_routing_request(os.urandom(32))
        frame = conn.data_to_send()
        await stream.send_all(frame[:-3])
        await stream.aclose()
        await wait_event(
            a, lambda e: isinstance(e, PeerOffline) and e.peer == conn.self_keys.public_key
        )
        assert relay.statistics().clients == 2
        await exchange(b, a, b"\x1bfine")
        nursery.cancel_scope.cancel()


def test_proxy_config_parsing() -> None:
    p = ProxyConfig.parse("socks5://user:p%40ss@127.0.0.1:1080")
    assert (p.kind, p.host, p.port, p.username, p.password) == (
        "socks5",
        "127.0.0.1",
        1080,
        "user",
        "p@ss",
    )
    assert ProxyConfig.parse(p.url()) == p
    assert "p@ss" not in str(p)
    h = ProxyConfig.parse("http://[::1]:8888")
    assert (h.kind, h.host, h.port) == ("http", "::1", 8888)
    assert ProxyConfig.parse("socks5://10.0.0.1").port == 1080
    for bad in ("ftp://x:1", "socks5://:1080", "socks5://h:99999"):
        with pytest.raises(ConfigError):
            ProxyConfig.parse(bad)


needs_microsocks = pytest.mark.skipif(not Microsocks.available(), reason="microsocks missing")
needs_tinyproxy = pytest.mark.skipif(not Tinyproxy.available(), reason="tinyproxy missing")


@needs_microsocks
@pytest.mark.parametrize("auth", [False, True], ids=["noauth", "userpass"])
async def test_client_reaches_relay_through_socks5(
    relay_ports: PortPool, tmp_path: Path, auth: bool
) -> None:
    relay_port, proxy_port = relay_ports.allocate(2)
    user, password = ("tunnel", "s3cret") if auth else (None, None)
    with Microsocks(tmp_path, proxy_port, username=user, password=password) as socks:
        proxy = ProxyConfig.parse(socks.url())
        async with trio.open_nursery() as nursery:
            relay = await start_relay(nursery, relay_port)
            a = await start_pool(nursery, proxy=proxy)
            b = await start_pool(nursery)  # b connects directly
            await link(a, b, relay, relay_port)
            await exchange(a, b, b"\x1bvia socks")
            await exchange(b, a, b"\x1bback")
            nursery.cancel_scope.cancel()
        assert socks.tunnels_to(relay_port) == 1, socks.log_text()


@needs_microsocks
async def test_socks5_wrong_password_never_falls_back_to_direct(
    relay_ports: PortPool, tmp_path: Path
) -> None:
    relay_port, proxy_port = relay_ports.allocate(2)
    with Microsocks(tmp_path, proxy_port, username="tunnel", password="right"):
        async with trio.open_nursery() as nursery:
            relay = await start_relay(nursery, relay_port)
            with pytest.raises(OSError, match="proxy"):
                await open_tcp_stream(
                    "127.0.0.1",
                    relay_port,
                    proxy=ProxyConfig.parse(f"socks5://tunnel:wrong@127.0.0.1:{proxy_port}"),
                    timeout_s=5.0,
                )
            a = await start_pool(
                nursery, proxy=ProxyConfig.parse(f"socks5://tunnel:wrong@127.0.0.1:{proxy_port}")
            )
            a.add_relay("127.0.0.1", relay_port, relay.public_key)
            with trio.move_on_after(1.5):
                await wait_event(a, lambda e: isinstance(e, RelayConnected))
                pytest.fail("connected although the proxy refused us")
            assert a.connects_started >= 1
            assert relay.statistics().connections_accepted == 0
            nursery.cancel_scope.cancel()


@needs_tinyproxy
async def test_client_reaches_relay_through_http_connect(
    relay_ports: PortPool, tmp_path: Path
) -> None:
    relay_port, proxy_port = relay_ports.allocate(2)
    with Tinyproxy(tmp_path, proxy_port, connect_ports=[relay_port]) as http:
        async with trio.open_nursery() as nursery:
            relay = await start_relay(nursery, relay_port)
            a = await start_pool(nursery, proxy=ProxyConfig.parse(http.url()))
            b = await start_pool(nursery)
            await link(a, b, relay, relay_port)
            await exchange(a, b, b"\x1bvia http")
            nursery.cancel_scope.cancel()
        assert http.tunnels_to(relay_port) == 1, http.log_text()


async def test_serve_reports_bind_failure(relay_ports: PortPool) -> None:
    port = relay_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        await start_relay(nursery, port)
        with pytest.raises(OSError):
            await start_relay(nursery, port)
        nursery.cancel_scope.cancel()


async def test_drain_waits_until_queued_frames_are_written(relay_ports: PortPool) -> None:
    """What ``drain`` returns from has left: a paced burst queued at once all arrives although
    the sender's relay streams are cancelled right after (the node's shutdown kill packets)."""
    port = relay_ports.allocate_one()
    count = 300  # ~420 KB: many times the write budget's burst, so the writer is still pacing
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        b_pk = b.pool.self_keys.public_key
        sent = 0
        with trio.fail_after(TIMEOUT_S):
            while sent < count:
                if a.send_to_peer(b_pk, numbered(sent)):
                    sent += 1
                else:  # outbox full: until the writer takes some
                    await a.wait_writable(b_pk, len(numbered(sent)))
        assert a.output_pending()
        await a.drain(TIMEOUT_S)
        assert not a.output_pending()
        for pk in [r.public_key for r in a.pool.connected_relays()]:
            a.remove_relay(pk)  # closes a's stream at once
        assert await receive_numbered(b, count) == list(range(count))
        nursery.cancel_scope.cancel()


ROOM_PORTS = (43800, 43899)


@pytest.fixture(scope="module")
def room_ports() -> PortPool:
    """The ``wait_writable`` tests' own loopback ports."""
    return PortPool(*ROOM_PORTS)


async def test_wait_writable_returns_once_the_writer_made_room(room_ports: PortPool) -> None:
    """A full outbox refuses a send; ``wait_writable`` returns when the writer has taken some,
    and the same send is then accepted. Every packet arrives, in order."""
    port = room_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        b_pk = b.pool.self_keys.public_key
        sent = 0
        refusals: list[int] = []  # ``sent`` at each refused send
        with trio.fail_after(TIMEOUT_S):
            while len(refusals) < 20:
                packet = numbered(sent)
                if a.send_to_peer(b_pk, packet):
                    sent += 1
                    continue
                refusals.append(sent)
                assert not a.pool.peer_has_room(b_pk, len(packet))
                await a.wait_writable(b_pk, len(packet))
                assert a.pool.peer_has_room(b_pk, len(packet))
                assert a.send_to_peer(b_pk, packet)
                sent += 1
        assert refusals[0] > 100  # the first refusal came with the 256 KiB queue full
        assert sent >= refusals[0] + len(refusals)
        assert await receive_numbered(b, sent) == list(range(sent))
        nursery.cancel_scope.cancel()


async def test_wait_writable_waits_for_the_peer_to_come_online(room_ports: PortPool) -> None:
    port = room_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        b_pk = b.pool.self_keys.public_key
        a.add_relay("127.0.0.1", port, relay.public_key)
        a.add_peer(b_pk)
        await wait_event(a, lambda e: isinstance(e, RelayConnected))
        returned = trio.Event()

        async def waiter() -> None:
            await a.wait_writable(b_pk)
            returned.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not returned.is_set()  # a's relay is up, but b is not linked: nothing to route on
        big = b"\x1b" + bytes(1399)  # > 1024 bytes: no OOB fallback
        assert not a.send_to_peer(b_pk, big)
        b.add_relay("127.0.0.1", port, relay.public_key)
        b.add_peer(a.pool.self_keys.public_key)
        with trio.fail_after(TIMEOUT_S):
            await returned.wait()
        assert a.pool.peer_online(b_pk)
        assert a.send_to_peer(b_pk, big)
        ev = await wait_event(b, lambda e: isinstance(e, PeerData))
        assert isinstance(ev, PeerData)
        assert ev.data == big
        nursery.cancel_scope.cancel()


async def test_wait_writable_refuses_a_size_that_never_fits() -> None:
    driver = RelayPoolDriver(KeyPair.generate(os.urandom))
    for size in (0, MAX_ROUTED_BYTES + 1):
        with pytest.raises(ValueError):
            await driver.wait_writable(bytes(32), size)


async def test_relay_server_timer_task_sleeps_between_sweeps(room_ports: PortPool) -> None:
    """With clients linked and nothing to do, every task of the relay and the pools waits. The
    server's timer task used to wake itself after each sweep: a busy loop (~5000 timer calls
    a second with one client) that never let the process idle."""
    port = room_ports.allocate_one()
    async with trio.open_nursery() as nursery:
        relay = await start_relay(nursery, port)
        a, b = await start_pool(nursery), await start_pool(nursery)
        await link(a, b, relay, port)
        await exchange(a, b, b"\x1bidle after this")
        with trio.fail_after(TIMEOUT_S):
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
