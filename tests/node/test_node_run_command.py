"""``tunnel run -c FILE`` as a real process: prints its Tox ID, a libtoxcore peer befriends it
(``--accept-all``), SIGTERM stops it cleanly with the friend saved in the profile."""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd, popen_dies_with_parent
from tunnel.testing.ports import PortPool
from tunnel.testing.toxcore import Connection, FriendName
from tunnel.testing.toxcore_factory import ToxPeerFactory
from tunnel.toxid import ToxId
from tunnel.wire.savedata import FRIEND_STATUS_CONFIRMED

pytestmark = [pytest.mark.toxcore, pytest.mark.slow]

START_TIMEOUT_S = 20.0
FIND_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def _config(tmp_path: Path, port: int, bsd: Bootstrapd) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(
        f"""role: node
profile: profile.tox
control_socket: control.sock
log_level: debug
udp:
  enabled: true
  ipv6: false
  port_start: {port}
  port_end: {port}
lan_discovery: false
hole_punching: false
bootstrap:
  - host: {bsd.host}
    port: {bsd.udp_port}
    public_key: {bsd.public_key.hex().upper()}
    tcp_ports: [{", ".join(str(p) for p in bsd.tcp_ports)}]
"""
    )
    return path


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output from tunnel run"
    return proc.stdout.readline()


def test_tunnel_run_befriended_by_toxcore_and_stops_on_sigterm(
    tmp_path: Path, bootstrapd: Bootstrapd, tox_peer_factory: ToxPeerFactory, port_pool: PortPool
) -> None:
    config = _config(tmp_path, port_pool.allocate_one(), bootstrapd)
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log_file:
        proc = popen_dies_with_parent(
            [sys.executable, "-m", "tunnel", "run", "-c", str(config), "--accept-all"],
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    try:
        line = _read_line(proc, START_TIMEOUT_S).decode()
        assert line.startswith("Tox ID: "), line
        tox_id = ToxId.parse(line.removeprefix("Tox ID: ").strip())
        profile = Profile.load(tmp_path / "profile.tox")
        assert profile.tox_id == tox_id
        assert (tmp_path / "profile.tox").stat().st_mode & 0o777 == 0o600

        tox = tox_peer_factory("dave", bootstrap=bootstrapd)
        friend = tox.friend_add(tox_id.to_bytes(), "hello tunnel run")
        assert tox.wait_friend_connected(friend, FIND_TIMEOUT_S) in (Connection.UDP, Connection.TCP)
        # We went online on our side too: we send our name once toxcore's ONLINE arrived.
        assert tox.wait_event(FriendName, FIND_TIMEOUT_S).name == b"tunnel"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT_S) == 0
        # Graceful: toxcore sees us offline right away (net_crypto kill), not after 32 s.
        tox.wait_for(
            lambda: tox.friend_connection_status(friend) is Connection.NONE or None,
            5,
            "friend offline after SIGTERM",
        )
    except Exception as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # the node's own account of what happened (a rare CI failure left no trace of it)
        exc.add_note("tunnel run log:\n" + log_path.read_text(errors="replace")[-6000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    log = log_path.read_text()
    assert "friend request from" in log
    assert "hello tunnel run" in log
    assert "online via" in log
    saved = Profile.load(tmp_path / "profile.tox")
    assert [(f.public_key, f.status) for f in saved.friends] == [
        (tox.public_key, FRIEND_STATUS_CONFIRMED)
    ]
