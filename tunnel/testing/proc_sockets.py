"""Which Internet sockets does this process own? (Linux ``/proc``; for tests that prove what a
node did NOT open, e.g. "Tor mode opened no UDP socket and no direct TCP connection".)

:func:`own_sockets` maps the socket inodes in ``/proc/self/fd`` to the rows of
``/proc/self/net/{tcp,tcp6,udp,udp6}``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


@dataclass(frozen=True, slots=True)
class ProcSocket:
    """One socket of this process."""

    proto: str  # "tcp" or "udp" (IPv6 sockets too)
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    inode: int
    tx_queue_bytes: int = 0
    """Bytes written and not yet acknowledged by the peer (TCP) / queued (UDP)."""
    rx_queue_bytes: int = 0
    """Bytes received and not yet read by us."""


def _addr(text: str) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        host = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four host-order 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        host = socket.inet_ntop(socket.AF_INET6, words)
        if host.startswith("::ffff:") and "." in host:
            host = host[len("::ffff:") :]
    return host, int(port_hex, 16)


def _own_inodes() -> set[int]:
    inodes: set[int] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def own_sockets() -> list[ProcSocket]:
    """Every TCP/UDP socket (v4 and v6) this process holds open right now."""
    inodes = _own_inodes()
    out: list[ProcSocket] = []
    for name in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/self/net") / name
        try:
            lines = path.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            inode = int(fields[9])
            if inode not in inodes:
                continue
            proto = name.rstrip("6")
            state = TCP_STATES.get(fields[3], fields[3]) if proto == "tcp" else fields[3]
            tx_hex, _, rx_hex = fields[4].partition(":")
            out.append(
                ProcSocket(
                    proto,
                    _addr(fields[1]),
                    _addr(fields[2]),
                    state,
                    inode,
                    int(tx_hex, 16),
                    int(rx_hex or "0", 16),
                )
            )
    return out


__all__ = ["ProcSocket", "own_sockets"]
