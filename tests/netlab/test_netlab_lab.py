"""The network-namespace lab (tunnel.testing.netlab): NAT, UDP blocking, conntrack, teardown."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
import trio

from tunnel.testing.netlab import (
    Host,
    NatMode,
    NetLab,
    NetLabError,
    list_netns,
    run_in_netns,
    sweep_stale,
    unavailable_reason,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

TCP_PORT = 49001
UDP_PORT = 49002
CLIENT_UDP_PORT = 49003

# A TCP server that tells every client the address it sees, until killed.
TCP_WHOAMI = f"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {TCP_PORT}))
s.listen()
print("ready", flush=True)
while True:
    c, addr = s.accept()
    c.sendall(f"{{addr[0]}}:{{addr[1]}}".encode())
    c.close()
"""

# A UDP server that echoes the sender's address back to it.
UDP_WHOAMI = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {UDP_PORT}))
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(100)
    s.sendto(f"{{addr[0]}}:{{addr[1]}}".encode(), addr)
"""

TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(c.recv(100).decode())
"""

# Sends one datagram per argv[3] round from a fixed local port; prints each answer or timeout.
UDP_CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {CLIENT_UDP_PORT}))
s.settimeout(float(sys.argv[3]))
try:
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    print(s.recvfrom(100)[0].decode())
except TimeoutError:
    print("timeout")
"""


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with NetLab() as built:
        yield built


def _start_server(lab: NetLab, host_code: str, host: Host) -> subprocess.Popen[bytes]:
    proc = lab.popen(host, [sys.executable, "-u", "-c", host_code])
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


def test_nat_hosts_reach_server_and_nat_rewrites_source(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    b = lab.add_nat_host("b", NatMode.RANDOM)
    assert server.address.startswith("198.18.")
    assert a.address.startswith("10.")
    assert b.address.startswith("10.")
    _start_server(lab, TCP_WHOAMI, server)
    for host in (a, b):
        seen = lab.python(host, TCP_CLIENT, server.address, str(TCP_PORT)).strip()
        seen_ip = seen.split(":")[0]
        # The server sees the router's public address, never the private one.
        assert seen_ip == host.public_address
        assert seen_ip != host.address
    # Private addresses are not routable from the internet side.
    result = lab.run(
        server,
        [sys.executable, "-c", TCP_CLIENT, a.address, str(TCP_PORT)],
        check=False,
    )
    assert result.returncode != 0


def test_endpoint_independent_keeps_port_random_does_not(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    b = lab.add_nat_host("b", NatMode.RANDOM)
    _start_server(lab, UDP_WHOAMI, server)
    seen_a = lab.python(a, UDP_CLIENT, server.address, str(UDP_PORT), "3").strip()
    assert seen_a == f"{a.public_address}:{CLIENT_UDP_PORT}"
    ports = set()
    for _ in range(3):
        assert b.router is not None
        seen_b = lab.python(b, UDP_CLIENT, server.address, str(UDP_PORT), "3").strip()
        ip, port = seen_b.split(":")
        assert ip == b.public_address
        ports.add(int(port))
        lab.flush_conntrack(b.router)
    # fully-random: a fresh random public port per mapping (3 equal ports: ~1e-9 chance).
    assert ports != {CLIENT_UDP_PORT}
    assert len(ports) >= 2


def test_block_udp_between_hosts(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    b = lab.add_nat_host("b")
    _start_server(lab, UDP_WHOAMI, server)
    _start_server(lab, TCP_WHOAMI, server)
    args = (server.address, str(UDP_PORT))
    assert lab.python(a, UDP_CLIENT, *args, "3").strip().startswith(a.public_address)

    lab.block_udp(a, server)
    assert lab.python(a, UDP_CLIENT, *args, "0.3").strip() == "timeout"
    assert lab.udp_drop_count() >= 1
    # Only UDP between a and the server: b still gets through, and TCP still works for a.
    assert lab.python(b, UDP_CLIENT, *args, "3").strip().startswith(b.public_address)
    tcp = lab.python(a, TCP_CLIENT, server.address, str(TCP_PORT)).strip()
    assert tcp.startswith(a.public_address)

    lab.unblock_udp(a, server)
    assert lab.python(a, UDP_CLIENT, *args, "3").strip().startswith(a.public_address)

    lab.block_udp(b)  # all of b's UDP
    assert lab.python(b, UDP_CLIENT, *args, "0.3").strip() == "timeout"


def test_renumber_changes_public_address(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    assert a.router is not None
    _start_server(lab, UDP_WHOAMI, server)
    old = a.public_address
    router = lab.renumber(a.router)
    a = lab.host("a")
    assert a.public_address == router.public_address != old
    seen = lab.python(a, UDP_CLIENT, server.address, str(UDP_PORT), "3").strip()
    assert seen.split(":")[0] == a.public_address


def _root_links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_teardown_leaves_nothing_even_on_failure() -> None:
    links_before = _root_links()
    procs: list[subprocess.Popen[bytes]] = []
    lab = NetLab()

    def build_and_fail() -> None:
        with lab:
            server = lab.add_public_host("srv")
            a = lab.add_nat_host("a")
            procs.append(lab.popen(server, ["sleep", "60"]))
            procs.append(lab.popen(a, ["sh", "-c", "trap '' TERM; sleep 60"]))
            assert len([n for n in list_netns() if n.startswith(lab.run_id)]) == 4
            raise RuntimeError("boom")

    run_id = lab.run_id
    with pytest.raises(RuntimeError, match="boom"):
        build_and_fail()
    assert [n for n in list_netns() if n.startswith(run_id)] == []
    assert all(proc.poll() is not None for proc in procs)
    assert _root_links() == links_before
    with pytest.raises(NetLabError):
        lab.add_public_host("late")


def test_stale_sweep_deletes_only_dead_runs() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"tnl-{dead.pid}-abcd-x"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with NetLab() as lab:
            names = list_netns()
            assert stale not in names
            assert any(n.startswith(lab.run_id) for n in names)
            # A live run (this one) survives a sweep.
            assert sweep_stale() == []
            assert any(n.startswith(lab.run_id) for n in list_netns())
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True, check=False)


def test_names_are_validated() -> None:
    with NetLab() as lab:
        lab.add_public_host("x1")
        with pytest.raises(ValueError, match="already used"):
            lab.add_public_host("x1")
        with pytest.raises(ValueError, match="lower-case"):
            lab.add_public_host("Bad-Name")


# Punch: send to the peer's public address every 50 ms (the first one after argv[4] s),
# until a datagram from the peer arrives; print who it came from.
PUNCH = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.05)
peer = (sys.argv[2], int(sys.argv[3]))
time.sleep(float(sys.argv[4]))
end = time.monotonic() + 5
while time.monotonic() < end:
    s.sendto(b"punch", peer)
    try:
        data, addr = s.recvfrom(100)
    except TimeoutError:
        continue
    for _ in range(5):
        s.sendto(b"punch", peer)  # let the peer hear us too before we exit
    print(f"{addr[0]}:{addr[1]}")
    break
else:
    print("timeout")
"""


def test_simultaneous_udp_hole_punching_between_nats(lab: NetLab) -> None:
    a = lab.add_nat_host("a")
    b = lab.add_nat_host("b")
    port_a, port_b = 49020, 49021
    # a starts first: its first packets hit b's router before b has sent anything (dropped
    # by the router's firewall, without leaving a conntrack entry that would steal the port).
    proc_a = lab.popen(
        a, [sys.executable, "-c", PUNCH, str(port_a), b.public_address, str(port_b), "0"]
    )
    proc_b = lab.popen(
        b, [sys.executable, "-c", PUNCH, str(port_b), a.public_address, str(port_a), "0.3"]
    )
    out_a, _ = proc_a.communicate(timeout=10)
    out_b, _ = proc_b.communicate(timeout=10)
    assert out_a.decode().strip() == f"{b.public_address}:{port_b}"
    assert out_b.decode().strip() == f"{a.public_address}:{port_a}"


def test_call_in_creates_sockets_inside_the_namespace(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    _start_server(lab, UDP_WHOAMI, server)

    def make_socket() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", CLIENT_UDP_PORT))
        sock.settimeout(3)
        return sock

    sock = lab.call_in(a, make_socket)
    try:
        # used from this (root-namespace) thread, the socket still lives in a's namespace
        sock.sendto(b"x", (server.address, UDP_PORT))
        data, _ = sock.recvfrom(100)
        assert data.decode() == f"{a.public_address}:{CLIENT_UDP_PORT}"
    finally:
        sock.close()
    assert "eth0" in lab.call_in(a, lambda: str(socket.if_nameindex()))


async def _trio_whoami(address: str) -> str:
    stream = await trio.open_tcp_stream(address, TCP_PORT)
    async with stream:
        return (await stream.receive_some(100)).decode()


def test_trio_runs_inside_a_namespace(lab: NetLab) -> None:
    server = lab.add_public_host("srv")
    a = lab.add_nat_host("a")
    _start_server(lab, TCP_WHOAMI, server)
    seen = lab.call_in(a, lambda: trio.run(_trio_whoami, server.address), timeout=10)
    assert seen.split(":")[0] == a.public_address


def test_call_in_errors() -> None:
    with pytest.raises(NetLabError, match="cannot open netns"):
        run_in_netns("tnl-does-not-exist", lambda: None)
    with NetLab() as lab:
        host = lab.add_public_host("h")
        with pytest.raises(ZeroDivisionError):
            lab.call_in(host, lambda: 1 // 0)
