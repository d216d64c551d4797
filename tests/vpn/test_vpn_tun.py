"""The Linux TUN device and pump inside a lab namespace: ping in, reply out, PMTU via ICMP."""

from __future__ import annotations

import pwd
import secrets
import struct
import threading
from collections.abc import Iterator

import pytest

from tunnel.io.tun import PacketSlot, TunDevice, TunError, TunPump
from tunnel.testing.netlab import Host, NetLab, unavailable_reason
from tunnel.vpn.icmp import frag_needed_v4
from tunnel.vpn.ip import (
    PROTO_ICMP,
    PROTO_UDP,
    check_packet,
    dst_address,
    internet_checksum,
    ipv4_header_bytes,
    src_address,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

TUN_ADDRESS = "10.200.0.1"
PEER_ADDRESS = "10.200.0.2"  # on-link behind the TUN: the "member" we impersonate
UDP_PORT = 49010
PMTU_BYTES = 1000

# Sends one ICMP echo request to argv[1] and waits for the reply (raw socket, as root).
PING = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1) + b"tunnel-ping"
csum = 0
data = body
for i in range(0, len(data) - 1, 2):
    csum += data[i] << 8 | data[i + 1]
if len(data) % 2:
    csum += data[-1] << 8
while csum >> 16:
    csum = (csum & 0xFFFF) + (csum >> 16)
body = body[:2] + struct.pack("!H", ~csum & 0xFFFF) + body[4:]
s.sendto(body, (sys.argv[1], 0))
while True:
    packet, addr = s.recvfrom(2048)
    icmp = packet[(packet[0] & 15) * 4:]
    if icmp[0] == 0 and icmp[4:6] == b"\\x42\\x42":
        print("reply from", addr[0], icmp[8:].decode())
        break
"""

# Sends a DF UDP datagram bigger than the PMTU we will announce, then reports what the kernel
# learned: IP_MTU of the connected socket and whether a second big send now fails.
PMTU_PROBE = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.connect((sys.argv[1], {UDP_PORT}))
s.send(b"x" * 1200)
for _ in range(100):
    mtu = s.getsockopt(socket.IPPROTO_IP, 14)  # IP_MTU
    if mtu != 1400:
        break
    time.sleep(0.02)
try:
    s.send(b"x" * 1200)
    second = "sent"
except OSError as exc:
    second = exc.errno
print(mtu, second)
"""


@pytest.fixture
def lab_host() -> Iterator[tuple[NetLab, Host]]:
    with NetLab() as lab:
        yield lab, lab.add_public_host("h")


def echo_reply(request: memoryview) -> bytes:
    """The ICMP echo reply to an IPv4 echo request (addresses swapped, type 0)."""
    header_bytes = ipv4_header_bytes(request)
    header = bytearray(request[:header_bytes])
    header[12:16], header[16:20] = request[16:20], request[12:16]
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, internet_checksum(header))
    icmp = bytearray(request[header_bytes:])
    icmp[0] = 0
    struct.pack_into("!H", icmp, 2, 0)
    struct.pack_into("!H", icmp, 2, internet_checksum(icmp))
    return bytes(header + icmp)


def test_ping_into_tun_and_reply_out(lab_host: tuple[NetLab, Host]) -> None:
    lab, host = lab_host
    name = f"tnl{secrets.token_hex(4)}"
    seen: list[bytes] = []
    got_request = threading.Event()

    with TunDevice(name, netns=host.netns) as tun:
        tun.configure([f"{TUN_ADDRESS}/24"], mtu=1400)
        link = lab.ip(host.netns, "link", "show", "dev", name)
        assert "mtu 1400" in link
        assert "UP" in link
        assert f"{TUN_ADDRESS}/24" in lab.ip(host.netns, "addr", "show", "dev", name)

        def on_packets(slots: list[PacketSlot]) -> None:
            for slot in slots:
                packet = slot.packet()
                if check_packet(packet, slot.length) != 4 or packet[9] != PROTO_ICMP:
                    continue
                seen.append(bytes(packet))
                assert slot.offset == 64  # headroom in front of every packet
                pump.write_packets([echo_reply(packet)])
                got_request.set()

        with TunPump(tun, on_packets) as pump:
            out = lab.python(host, PING, PEER_ADDRESS, timeout=10)
            assert got_request.wait(5)
        stats = pump.statistics()

    assert out.strip() == f"reply from {PEER_ADDRESS} tunnel-ping"
    request = seen[0]
    assert src_address(request, 4) == bytes([10, 200, 0, 1])
    assert dst_address(request, 4) == bytes([10, 200, 0, 2])
    assert request[ipv4_header_bytes(request)] == 8  # echo request
    assert stats.read_packets >= 1
    assert stats.written_packets >= 1
    assert stats.write_errors == 0
    assert stats.callback_errors == 0
    # closing the device removed the interface
    assert name not in lab.ip(host.netns, "link")


def test_frag_needed_teaches_the_kernel_the_path_mtu(lab_host: tuple[NetLab, Host]) -> None:
    lab, host = lab_host
    name = f"tnl{secrets.token_hex(4)}"
    with TunDevice(name, netns=host.netns) as tun:
        tun.configure([f"{TUN_ADDRESS}/24"], mtu=1400)

        def on_packets(slots: list[PacketSlot]) -> None:
            for slot in slots:
                packet = slot.packet()
                version = check_packet(packet, slot.length)
                if version == 4 and packet[9] == PROTO_UDP and slot.length > PMTU_BYTES:
                    reply = frag_needed_v4(packet, slot.length, PMTU_BYTES)
                    assert reply is not None
                    pump.write_packets([reply])

        with TunPump(tun, on_packets) as pump:
            out = lab.python(host, PMTU_PROBE, PEER_ADDRESS, timeout=10)
    mtu, second = out.split()
    assert int(mtu) == PMTU_BYTES
    assert second == "90"  # EMSGSIZE: the kernel now refuses 1200-byte DF datagrams


def test_write_errors_are_counted(lab_host: tuple[NetLab, Host]) -> None:
    _lab, host = lab_host
    with TunDevice(f"tnl{secrets.token_hex(4)}", netns=host.netns) as tun:
        tun.configure([f"{TUN_ADDRESS}/24"])
        pump = TunPump(tun, lambda slots: None, batch_size=4, capacity=2048)
        assert pump.write_packets([b""]) == 0  # the kernel refuses an empty write
        assert pump.statistics().write_errors == 1
        pump.stop()


def test_bad_names_and_configs() -> None:
    with pytest.raises(TunError, match="interface name"):
        TunDevice("x" * 16)
    with TunDevice(f"tnl{secrets.token_hex(4)}") as tun, pytest.raises(TunError, match="mtu"):
        tun.configure([], mtu=10)


def test_missing_netns_is_reported() -> None:
    with pytest.raises(TunError, match="netns"):
        TunDevice(f"tnl{secrets.token_hex(4)}", netns=f"tnl-missing-{secrets.token_hex(2)}")


# Inside the namespace: create and configure a TUN, drop root, then inject an echo request
# from the "peer" to our own address and read the kernel's echo reply out of the device.
DROP_AND_ECHO = """
import os, select, struct, sys
from tunnel.io.tun import TunDevice, drop_privileges
from tunnel.vpn.ip import internet_checksum
tun = TunDevice(sys.argv[1])
tun.configure(["10.200.0.1/24"], mtu=1400)
drop_privileges("nobody")
icmp = bytearray(struct.pack("!BBHHH", 8, 0, 0, 7, 1) + b"after-drop")
struct.pack_into("!H", icmp, 2, internet_checksum(icmp))
ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                           bytes([10, 200, 0, 2]), bytes([10, 200, 0, 1])))
struct.pack_into("!H", ip, 10, internet_checksum(ip))
tun.write(bytes(ip + icmp))
poller = select.poll()
poller.register(tun.fileno(), select.POLLIN)
buf = bytearray(2048)
while poller.poll(5000):
    n = tun.read_into(buf)
    if buf[9] == 1 and buf[20] == 0:
        print("reply", os.getuid(), bytes(buf[16:20]).hex(), bytes(buf[28:n]).decode())
        break
"""


def test_tun_keeps_working_after_dropping_privileges(lab_host: tuple[NetLab, Host]) -> None:
    lab, host = lab_host
    out = lab.python(host, DROP_AND_ECHO, f"tnl{secrets.token_hex(4)}", timeout=10)
    nobody = pwd.getpwnam("nobody").pw_uid
    assert out.strip() == f"reply {nobody} 0ac80002 after-drop"


# Drop to nobody, keeping only CAP_NET_ADMIN or nothing, then try to add another address.
DROP_AND_RECONFIGURE = """
import os, sys
from tunnel.io.tun import TunDevice, TunError, drop_privileges
tun = TunDevice(sys.argv[1])
tun.configure(["10.200.0.1/24"])
drop_privileges("nobody", keep_net_admin=sys.argv[2] == "keep")
try:
    tun.configure(["10.201.0.1/24"])
    print("reconfigured", os.getuid())
except TunError as exc:
    print("refused", os.getuid())
"""


@pytest.mark.parametrize(("mode", "expected"), [("keep", "reconfigured"), ("drop", "refused")])
def test_drop_privileges_keeping_net_admin(
    lab_host: tuple[NetLab, Host], mode: str, expected: str
) -> None:
    lab, host = lab_host
    name = f"tnl{secrets.token_hex(4)}"
    out = lab.python(host, DROP_AND_RECONFIGURE, name, mode, timeout=10)
    assert out.strip() == f"{expected} {pwd.getpwnam('nobody').pw_uid}"


def test_pump_stops_when_the_interface_is_deleted(lab_host: tuple[NetLab, Host]) -> None:
    lab, host = lab_host
    name = f"tnl{secrets.token_hex(4)}"
    with TunDevice(name, netns=host.netns) as tun:
        tun.configure([f"{TUN_ADDRESS}/24"])
        pump = TunPump(tun, lambda slots: None)
        pump.start()
        lab.ip(host.netns, "link", "delete", name)
        assert pump.join(5)  # the reader ends by itself
        pump.stop()
    assert pump.failure is not None
    assert pump.statistics().read_errors == 1
