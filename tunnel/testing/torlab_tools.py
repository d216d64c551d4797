"""Blocking probes for the private Tor lab: control-port queries, a threaded echo server,
SOCKS echo checks and the raw Tor SOCKS baseline benchmark (:func:`bench_socks_echo`).

Used by :mod:`tunnel.testing.torlab` (readiness checks) and by tests and benchmarks that
compare a tunnel over Tor with plain Tor streams.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from python_socks.sync import Proxy

from tunnel.errors import BadPacket
from tunnel.tor.protocol import (
    BootstrapStatus,
    Reply,
    ReplyParser,
    authenticate_command,
    getinfo_command,
    parse_bootstrap_phase,
    parse_getinfo,
)

PROBE_TIMEOUT_S = 10.0
"""Per-attempt bound on one SOCKS connect + echo during the readiness check."""


# ------------------------------------------------------------------ blocking control helper


def control_query(
    port: int, cookie_path: Path, commands: Sequence[bytes], *, timeout_s: float = 5.0
) -> list[Reply]:
    """Blocking: authenticate with the cookie, send ``commands``, return their replies.

    Raises:
        OSError: connection problems or timeout.
        BadPacket: malformed replies.
    """
    cookie = cookie_path.read_bytes()
    parser = ReplyParser()
    replies: list[Reply] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        for line in (authenticate_command(cookie=cookie), *commands):
            sock.sendall(line)
            while (reply := parser.next_reply()) is None or reply.is_event:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("control connection closed")
                parser.feed(data)
            replies.append(reply)
        if not replies[0].ok:
            raise BadPacket(f"AUTHENTICATE refused: {replies[0].message}")
    return replies[1:]


def bootstrap_status(port: int, cookie_path: Path, *, timeout_s: float = 5.0) -> BootstrapStatus:
    """Blocking ``GETINFO status/bootstrap-phase``."""
    (reply,) = control_query(
        port, cookie_path, [getinfo_command("status/bootstrap-phase")], timeout_s=timeout_s
    )
    return parse_bootstrap_phase(parse_getinfo(reply)["status/bootstrap-phase"])


# -------------------------------------------------------------------------- echo server


class EchoServer:
    """Threaded TCP echo server on 127.0.0.1:port (readiness checks, sync fixtures)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.port = self._sock.getsockname()[1]
        self._stopped = False
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, name=f"echo-{port}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60.0)
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    conn.sendall(data)

    def close(self) -> None:
        """Stop accepting (open echo connections finish on their own)."""
        self._stopped = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(2.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def socks_echo(
    socks_port: int,
    target_host: str,
    target_port: int,
    payload: bytes,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    username: str | None = None,
) -> bytes:
    """Blocking: connect through a SOCKS5 port, send ``payload``, read as many bytes back.

    Raises:
        OSError, ProxyError, ProxyTimeoutError: the connection failed.
    """
    cred = f"{username}:x@" if username else ""
    proxy = Proxy.from_url(f"socks5://{cred}127.0.0.1:{socks_port}", rdns=True)
    sock = proxy.connect(target_host, target_port, timeout=timeout_s)
    with sock:
        sock.settimeout(timeout_s)
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
    return got


@dataclass(frozen=True, slots=True)
class SocksBenchResult:
    """Raw Tor SOCKS baseline: stream set-up time, round trips of 32-byte messages, echo
    throughput (bytes sent and echoed back, counted once)."""

    connect_s: float
    rtt_median_s: float
    rtt_p90_s: float
    echo_bytes_per_s: float

    def describe(self) -> str:
        """One line for logs and reports."""
        return (
            f"connect {self.connect_s * 1000:.0f} ms, RTT median {self.rtt_median_s * 1000:.1f} ms"
            f" / p90 {self.rtt_p90_s * 1000:.1f} ms, echo {self.echo_bytes_per_s / 1e6:.2f} MB/s"
        )


def bench_socks_echo(
    socks_port: int,
    target_host: str,
    target_port: int,
    *,
    payload_bytes: int = 4 * 1024 * 1024,
    rtt_samples: int = 50,
    timeout_s: float = 60.0,
    username: str | None = None,
) -> SocksBenchResult:
    """Measure one SOCKS stream to an echo server: the baseline a tunnel over Tor is
    compared with ("benchmark vs raw Tor SOCKS").

    Blocking; the upload runs on a helper thread while this thread reads the echo.

    Raises:
        OSError, ProxyError, ProxyTimeoutError: the stream failed; TimeoutError: too slow.
    """
    cred = f"{username}:x@" if username else ""
    proxy = Proxy.from_url(f"socks5://{cred}127.0.0.1:{socks_port}", rdns=True)
    t0 = time.monotonic()
    sock = proxy.connect(target_host, target_port, timeout=timeout_s)
    connect_s = time.monotonic() - t0
    with sock:
        sock.settimeout(timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts: list[float] = []
        for i in range(rtt_samples):
            msg = i.to_bytes(4, "big") * 8
            t = time.monotonic()
            sock.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = sock.recv(len(msg) - len(got))
                if not chunk:
                    raise ConnectionResetError("echo closed during RTT probe")
                got += chunk
            rtts.append(time.monotonic() - t)
        block = bytes(range(256)) * 256  # 64 KiB
        errors: list[BaseException] = []

        def upload() -> None:
            try:
                left = payload_bytes
                while left > 0:
                    n = min(left, len(block))
                    sock.sendall(block[:n])
                    left -= n
            except BaseException as exc:  # reported by the reader
                errors.append(exc)

        t = time.monotonic()
        writer = threading.Thread(target=upload, name="socks-bench-upload", daemon=True)
        writer.start()
        received = 0
        while received < payload_bytes:
            chunk = sock.recv(1024 * 1024)
            if not chunk:
                break
            received += len(chunk)
            if errors:
                raise errors[0]
        elapsed = time.monotonic() - t
        writer.join(timeout_s)
        if received < payload_bytes:
            raise ConnectionResetError(f"echo stopped after {received} of {payload_bytes} bytes")
    rtts.sort()
    return SocksBenchResult(
        connect_s=connect_s,
        rtt_median_s=rtts[len(rtts) // 2] if rtts else 0.0,
        rtt_p90_s=rtts[min(len(rtts) - 1, (len(rtts) * 9) // 10)] if rtts else 0.0,
        echo_bytes_per_s=payload_bytes / elapsed if elapsed > 0 else 0.0,
    )
