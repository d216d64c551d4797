"""Hand out blocks of free local ports to tests, so parallel test runs never collide.

Every helper and CI job owns its own port range; a :class:`PortPool` walks that range and
returns blocks of consecutive ports that are free for both UDP and TCP at the moment they are
handed out. Ports in toxcore's default range (33445-33545, where LAN discovery and other toxcore
processes on the host live) are never handed out.
"""

from __future__ import annotations

import errno
import socket
import threading

TOXCORE_DEFAULT_PORTS = range(33445, 33546)
"""toxcore's default UDP range (also where LAN discovery sends): tests never use it."""


class PortPoolExhaustedError(RuntimeError):
    """No block of the requested size is free in the pool's whole range."""


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when both a UDP and a TCP socket can bind ``host:port`` right now.

    Binding the wildcard address (the default) also conflicts with sockets bound to any
    specific local address, so it is the stricter check (toxcore binds the wildcard).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
    return True


class PortPool:
    """Blocks of consecutive free ports from ``start`` to ``end`` inclusive.

    Thread-safe. The pool remembers what it handed out and does not hand it out again until it
    has walked the whole range once; then it wraps around, still checking every port is free,
    so a long test session reuses ports whose processes have exited.
    """

    def __init__(self, start: int, end: int) -> None:
        if not 1024 <= start <= end <= 65535:
            raise ValueError(f"bad port range {start}-{end}")
        overlap = range(max(start, TOXCORE_DEFAULT_PORTS.start), min(end + 1, 33546))
        if len(overlap) == end - start + 1:
            raise ValueError("the port range lies inside toxcore's default range 33445-33545")
        self.start = start
        self.end = end
        self._next = start
        self._lock = threading.Lock()

    def allocate(self, count: int = 1) -> list[int]:
        """``count`` consecutive ports, each free for UDP and TCP when returned.

        Raises:
            PortPoolExhaustedError: no such block anywhere in the range.
        """
        if not 1 <= count <= self.end - self.start + 1:
            raise ValueError(f"cannot allocate {count} ports from {self.start}-{self.end}")
        with self._lock:
            candidate = self._next
            scanned = 0
            span = self.end - self.start + 1
            while scanned < span:
                if candidate + count - 1 > self.end:
                    scanned += self.end - candidate + 1
                    candidate = self.start
                    continue
                block = list(range(candidate, candidate + count))
                bad = next((p for p in block if not self._usable(p)), None)
                if bad is None:
                    self._next = candidate + count
                    if self._next > self.end:
                        self._next = self.start
                    return block
                scanned += bad - candidate + 1
                candidate = bad + 1
            raise PortPoolExhaustedError(
                f"no {count} consecutive free ports in {self.start}-{self.end}"
            )

    def allocate_one(self) -> int:
        """One free port."""
        return self.allocate(1)[0]

    @staticmethod
    def _usable(port: int) -> bool:
        return port not in TOXCORE_DEFAULT_PORTS and port_is_free(port)
