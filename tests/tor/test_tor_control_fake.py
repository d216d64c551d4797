"""The Trio control client against a scripted fake Tor (no tor process; fast).

Covers what the real-Tor tests cannot force: the choice of authentication method, refusals,
malformed replies, silence (timeouts), events arriving between replies, closed ports.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.tor.control import TorController, connect_tor_controller
from tunnel.tor.errors import TorControlError
from tunnel.tor.onion_key import OnionKey


async def _line(stream: trio.abc.Stream, buf: bytearray) -> str:
    while b"\r\n" not in buf:
        data = await stream.receive_some(4096)
        if not data:
            raise EOFError
        buf += data
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line.decode()


def _protocolinfo(methods: str, cookie: Path | None = None) -> bytes:
    extra = f' COOKIEFILE="{cookie}"' if cookie else ""
    return (
        f"250-PROTOCOLINFO 1\r\n250-AUTH METHODS={methods}{extra}\r\n"
        f'250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n'
    ).encode()


async def test_null_auth_preferred_and_events_queued() -> None:
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    buf = bytearray()

    async def fake_tor() -> None:
        assert await _line(server, buf) == "PROTOCOLINFO 1"
        await server.send_all(_protocolinfo("NULL,HASHEDPASSWORD"))
        assert await _line(server, buf) == "AUTHENTICATE"
        await server.send_all(b"250 OK\r\n")
        assert await _line(server, buf) == "GETINFO status/bootstrap-phase"
        await server.send_all(
            b"650 HS_DESC UPLOADED " + b"a" * 56 + b" UNKNOWN $X\r\n"
            b'250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=42 TAG=x SUMMARY="Half"\r\n'
            b"250 OK\r\n"
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_tor)
        await ctl.authenticate()
        status = await ctl.bootstrap_status()
    assert status.progress == 42
    assert ctl.protocol_info is not None
    assert ctl.protocol_info.tor_version == "0.4.9.11"
    event = await ctl.next_event()  # queued while waiting for the GETINFO reply
    assert event.message.startswith("HS_DESC UPLOADED")


async def test_cookie_auth_reads_the_cookie_file(tmp_path: Path) -> None:
    cookie = tmp_path / "control_auth_cookie"
    cookie.write_bytes(bytes(range(32)))
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    buf = bytearray()

    async def fake_tor() -> None:
        await _line(server, buf)
        await server.send_all(_protocolinfo("COOKIE,SAFECOOKIE", cookie))
        assert await _line(server, buf) == "AUTHENTICATE " + bytes(range(32)).hex().upper()
        await server.send_all(b"250 OK\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_tor)
        await ctl.authenticate()


@pytest.mark.parametrize(
    ("methods", "kwargs", "reply", "message"),
    [
        ("COOKIE", {}, b"515 Authentication failed: Wrong length on auth cookie.\r\n", "515"),
        ("HASHEDPASSWORD", {}, b"", "needs HASHEDPASSWORD: configure a control password"),
        ("HASHEDPASSWORD", {"password": "x"}, b"515 Authentication failed: bad\r\n", "515"),
    ],
)
async def test_auth_refusals(
    tmp_path: Path, methods: str, kwargs: dict[str, str], reply: bytes, message: str
) -> None:
    cookie = tmp_path / "c"
    cookie.write_bytes(bytes(32))
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    buf = bytearray()

    async def fake_tor() -> None:
        await _line(server, buf)
        await server.send_all(_protocolinfo(methods, cookie))
        if reply:
            await _line(server, buf)
            await server.send_all(reply)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_tor)
        with pytest.raises(TorControlError, match=message):
            await ctl.authenticate(**kwargs)


async def test_missing_cookie_file(tmp_path: Path) -> None:
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    buf = bytearray()

    async def fake_tor() -> None:
        await _line(server, buf)
        await server.send_all(_protocolinfo("COOKIE", tmp_path / "missing"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_tor)
        with pytest.raises(TorControlError, match="cannot read Tor control cookie"):
            await ctl.authenticate()


async def test_silent_tor_times_out(autojump_clock: trio.testing.MockClock) -> None:
    client, _server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "127.0.0.1:1", timeout_s=3)
    t0 = trio.current_time()
    with pytest.raises(TorControlError, match=r"did not answer GETINFO within 3 s"):
        await ctl.getinfo("version")
    assert trio.current_time() - t0 == pytest.approx(3)
    with pytest.raises(TorControlError, match="is closed"):
        await ctl.getinfo("version")


async def test_garbage_and_eof_are_control_errors() -> None:
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)

    async def garbage() -> None:
        await server.receive_some(100)
        await server.send_all(b"HTTP/1.0 200 OK\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(garbage)
        with pytest.raises(TorControlError, match="bad control reply line"):
            await ctl.getinfo("version")

    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)

    async def hang_up() -> None:
        await server.receive_some(100)
        await server.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up)
        with pytest.raises(TorControlError, match="closed by Tor"):
            await ctl.getinfo("version")


async def test_add_onion_checks_the_returned_address() -> None:
    key = OnionKey.generate(SeededRng("fake"))
    other = OnionKey.generate(SeededRng("other"))
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    buf = bytearray()

    async def fake_tor() -> None:
        line = await _line(server, buf)
        assert line == f"ADD_ONION {key.blob} Flags=DiscardPK Port=80,127.0.0.1:48950"
        await server.send_all(f"250-ServiceID={other.service_id}\r\n250 OK\r\n".encode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fake_tor)
        with pytest.raises(TorControlError, match=f"expected {key.service_id}"):
            await ctl.add_onion(key, [(80, "127.0.0.1:48950")])


async def test_closed_control_port(tor_ports: PortPool) -> None:
    (port,) = tor_ports.allocate(1)
    with pytest.raises(TorControlError, match=f"^Tor control port 127.0.0.1:{port} closed$"):
        await connect_tor_controller("127.0.0.1", port)


async def test_cancelled_command_closes_the_connection() -> None:
    client, server = trio.testing.memory_stream_pair()
    ctl = TorController(client, "fake", timeout_s=5)
    with trio.move_on_after(0.05):
        await ctl.getinfo("version")  # the fake Tor never answers
    with pytest.raises(trio.BrokenResourceError):  # the late reply finds the connection closed
        await server.send_all(b"250-version=0.4.9.11\r\n250 OK\r\n")
    with pytest.raises(TorControlError, match="is closed"):
        await ctl.getinfo("config-file")
