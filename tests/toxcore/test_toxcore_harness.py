"""The test harness itself: PortPool, Bootstrapd and ToxPeer, without waiting on the onion.

All fast (well under a second each, apart from the bootstrapd chain at ~2 s).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from tunnel.crypto import KeyPair
from tunnel.testing import ports as ports_mod
from tunnel.testing.bootstrapd import Bootstrapd, BootstrapdError
from tunnel.testing.libtoxcore import toxcore_version
from tunnel.testing.ports import PortPool, PortPoolExhaustedError
from tunnel.testing.toxcore import Connection, ToxError, ToxPeer
from tunnel.testing.toxcore_factory import ToxPeerFactory
from tunnel.toxid import ToxId

# ---------------------------------------------------------------------------- PortPool
# These bind only inside the harness range 41000-41999 (at its top end, away from the
# session pool, which starts at the bottom).


def test_port_pool_hands_out_consecutive_free_blocks() -> None:
    pool = PortPool(41960, 41999)
    first = pool.allocate(3)
    second = pool.allocate(3)
    assert first == list(range(first[0], first[0] + 3))
    assert second[0] >= first[-1] + 1
    assert all(41960 <= p <= 41999 for p in first + second)


def test_port_pool_skips_busy_ports() -> None:
    pool = PortPool(41990, 41999)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 41991))
        block = pool.allocate(3)
    # The first free run after the busy port; another process may hold a later port too.
    assert block[0] > 41991
    assert block == list(range(block[0], block[0] + 3))


def test_port_pool_exhausted() -> None:
    pool = PortPool(41996, 41998)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 41997))
        with pytest.raises(PortPoolExhaustedError):
            pool.allocate(2)


def test_port_pool_wraps_around() -> None:
    pool = PortPool(41994, 41997)
    assert pool.allocate(3) == [41994, 41995, 41996]
    assert pool.allocate(3) == [41994, 41995, 41996]  # too few left at the end: wrap


def test_port_pool_never_hands_out_toxcore_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports_mod, "port_is_free", lambda port, host="0.0.0.0": True)
    pool = PortPool(33440, 33550)
    handed = [p for _ in range(3) for p in pool.allocate(4)]
    assert not set(handed) & set(range(33445, 33546))
    with pytest.raises(ValueError, match="default range"):
        PortPool(33445, 33545)


# ---------------------------------------------------------------------------- Bootstrapd


@pytest.mark.toxcore
def test_bootstrapd_uses_pregenerated_key_and_stops_cleanly(
    tmp_path: Path, port_pool: PortPool
) -> None:
    udp, tcp = port_pool.allocate(2)
    bsd = Bootstrapd(tmp_path, udp, (tcp,), motd="hello motd")
    known_before_start = bsd.public_key
    with bsd:
        assert bsd.running
        assert bsd.keys_path.read_bytes()[:32] == known_before_start
        config = bsd.config_path.read_text()
        assert "enable_lan_discovery = false;" in config
        assert f"port = {udp};" in config
        assert f"tcp_relay_ports = [{tcp}];" in config
        # BOOTSTRAP_INFO (0xf0): a 78-byte request gets [0xf0][version u32 BE][motd NUL].
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"\xf0" + bytes(77), ("127.0.0.1", udp))
            reply, _ = sock.recvfrom(2048)
        assert reply[0] == 0xF0
        assert int.from_bytes(reply[1:5], "big") == 1000002018
        assert reply[5:] == b"hello motd\x00"
        # The TCP relay port accepts connections.
        with socket.create_connection(("127.0.0.1", tcp), timeout=5):
            pass
    assert not bsd.running
    assert bsd.stop() == 0
    assert "Received SIGTERM" in bsd.log_text()
    assert bsd.log_path.read_text().count("Public Key:") == 1


@pytest.mark.toxcore
def test_bootstrapd_reports_failure_with_its_log(tmp_path: Path, port_pool: PortPool) -> None:
    udp, tcp = port_pool.allocate(2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("0.0.0.0", tcp))
        squatter.listen()
        bsd = Bootstrapd(tmp_path, udp, (tcp,))
        with pytest.raises(BootstrapdError, match="exited"):
            bsd.start()
    assert not bsd.running


@pytest.mark.toxcore
def test_bootstrapd_chain_bootstraps_off_another(tmp_path: Path, port_pool: PortPool) -> None:
    first_port, second_port = port_pool.allocate(2)
    with (
        Bootstrapd(tmp_path, first_port, name="first") as first,
        Bootstrapd(tmp_path, second_port, name="second", bootstrap_nodes=[first.node]) as second,
    ):
        assert f"{first.public_key.hex().upper()}" in second.config_path.read_text()
        second.wait_for_log("Connected to another bootstrap node successfully", 20)


# ---------------------------------------------------------------------------- ToxPeer offline


@pytest.mark.toxcore
def test_libtoxcore_is_0_2_18() -> None:
    assert toxcore_version() == (0, 2, 18)


@pytest.mark.toxcore
def test_tox_peer_identity(tox_peer_factory: ToxPeerFactory) -> None:
    peer = tox_peer_factory("ident")
    address = peer.address
    tox_id = ToxId.from_bytes(address)  # checksum and key validity as toxcore computes them
    assert tox_id.public_key == peer.public_key
    assert tox_id.nospam == peer.nospam
    assert KeyPair.from_secret_key(peer.secret_key).public_key == peer.public_key
    assert len(peer.dht_id) == 32
    assert peer.dht_id != peer.public_key
    assert tox_peer_factory.peers[0].udp_port == peer.udp_port
    peer.set_nospam(b"\x01\x02\x03\x04")
    assert peer.address[32:36] == b"\x01\x02\x03\x04"
    assert ToxId.from_bytes(peer.address).nospam == b"\x01\x02\x03\x04"
    assert peer.self_connection_status() is Connection.NONE


@pytest.mark.toxcore
def test_tox_peer_binds_the_given_ports(port_pool: PortPool) -> None:
    start, _, end = port_pool.allocate(3)
    with ToxPeer("ports", start_port=start, end_port=end, start=False) as peer:
        assert peer.udp_port == start
        with ToxPeer("next", start_port=start, end_port=end, start=False) as other:
            assert other.udp_port == start + 1


@pytest.mark.toxcore
def test_tox_peer_errors_carry_code_names(tox_peer_factory: ToxPeerFactory) -> None:
    peer = tox_peer_factory("errors", udp=False)
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_ADD_OWN_KEY") as own:
        peer.friend_add(peer.address, "me")
    assert own.value.code_name == "TOX_ERR_FRIEND_ADD_OWN_KEY"
    other = KeyPair.from_secret_key(bytes(range(32))).public_key
    good = ToxId(other, b"\0\0\0\0").to_bytes()
    bad = good[:-1] + bytes([good[-1] ^ 1])
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_ADD_BAD_CHECKSUM"):
        peer.friend_add(bad, "hi")
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_ADD_NO_MESSAGE"):
        peer.friend_add(good, b"")
    assert peer.friend_add(good, "hi") == 0
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_ADD_ALREADY_SENT"):
        peer.friend_add(good, "again")
    with pytest.raises(ToxError, match="TOX_ERR_GET_PORT_NOT_BOUND"):
        _ = peer.udp_port
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_QUERY_FRIEND_NOT_FOUND"):
        peer.friend_connection_status(7)
    with pytest.raises(ToxError, match="TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_CONNECTED"):
        peer.send_lossless(0, b"\xa0x")
    assert peer.friend_list() == [0]
    assert peer.friend_public_key(0) == other


@pytest.mark.toxcore
def test_tox_new_port_in_use_is_a_clear_error(port_pool: PortPool) -> None:
    port = port_pool.allocate_one()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("::", port))
        with pytest.raises(ToxError, match="TOX_ERR_NEW_PORT_ALLOC"):
            ToxPeer("squatted", start_port=port, end_port=port, ipv6=True, start=False)


@pytest.mark.toxcore
def test_tox_peer_loads_a_secret_key() -> None:
    pair = KeyPair.from_secret_key(bytes(range(1, 33)))
    with ToxPeer("sk", udp=False, secret_key=pair.secret_key, start=False) as peer:
        assert peer.public_key == pair.public_key


@pytest.mark.toxcore
def test_wait_for_times_out_and_wakes_on_kill(tox_peer_factory: ToxPeerFactory) -> None:
    peer = tox_peer_factory("waiter", udp=False)
    with pytest.raises(TimeoutError, match="never"):
        peer.wait_for(lambda: False, 0.2, "never")
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            peer.wait_for(lambda: False, 30, "forever")
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    peer.wait_for(lambda: peer.stats().iterations >= 2, 5, "two iterations")
    peer.kill()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError)
    assert not peer.alive
    peer.kill()  # idempotent


@pytest.mark.toxcore
def test_bootstrapd_ipv6_answers_on_loopback(tmp_path: Path, port_pool: PortPool) -> None:
    udp = port_pool.allocate_one()
    with Bootstrapd(tmp_path, udp, ipv6=True, motd="six") as bsd:
        assert bsd.host == "::1"
        assert "enable_ipv6 = true;" in bsd.config_path.read_text()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"\xf0" + bytes(77), ("::1", udp))
            reply, _ = sock.recvfrom(2048)
        assert reply[5:] == b"six\x00"
