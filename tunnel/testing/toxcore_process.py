"""A :class:`~tunnel.testing.toxcore.ToxPeer` in a child process, for throughput tests.

toxcore-test-peers.md 8.13: run each real Tox in its own process when measuring throughput, so
toxcore's iteration and ctypes callbacks do not compete with the node under test for the GIL.

:class:`ToxPeerProcess` starts ``python -m tunnel.testing.toxcore_process``, which builds a
``ToxPeer`` from the same keyword arguments and then serves calls: each request is
``(method, args, kwargs)`` and each reply ``("ok", value)`` or ``("error", exception)``, both
pickled with a 4-byte big-endian length prefix over the child's stdin/stdout. Calls are
serialised; arguments and results must pickle (so ``wait_event`` takes no ``match`` callable:
use ``since=`` instead). The child dies with the test runner (PDEATHSIG) and on EOF.
"""

from __future__ import annotations

import functools
import os
import pickle
import struct
import subprocess
import sys
import threading
from types import TracebackType
from typing import IO, Any, Self, TypeVar

import trio

from tunnel.testing.bootstrapd import popen_dies_with_parent
from tunnel.testing.libtoxcore import Connection
from tunnel.testing.toxcore_events import PumpResult, ToxPeerStats

_E = TypeVar("_E")

_FRAME_HEADER = struct.Struct(">I")  # [length: 4 BE][pickle: length]
START_TIMEOUT_S = 30.0
KILL_TIMEOUT_S = 10.0
_BULK_FUNCTIONS = ("pump_lossless", "pump_lossy")


class ToxPeerProcessError(RuntimeError):
    """The child process died or broke the call protocol."""


def _write_frame(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(_FRAME_HEADER.size)
    if len(header) < _FRAME_HEADER.size:
        raise EOFError("peer closed the pipe")
    (length,) = _FRAME_HEADER.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise EOFError("peer closed the pipe mid-frame")
    return pickle.loads(data)


class ToxPeerProcess:
    """A ToxPeer living in a child process; the common ToxPeer methods are proxied.

    Anything else: ``call("method_name", *args)`` (properties too: ``call("udp_port")``).
    With ``netns`` the child runs under ``ip netns exec NETNS``, so every socket toxcore
    opens (UDP, TCP relay connections) lives in that network namespace.
    """

    def __init__(self, name: str = "tox", *, netns: str | None = None, **peer_kwargs: Any) -> None:
        self.name = name
        self.netns = netns
        self._lock = threading.Lock()
        argv = [sys.executable, "-m", "tunnel.testing.toxcore_process"]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        self._proc = popen_dies_with_parent(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._in: IO[bytes] | None = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout
        self._closed = False
        try:
            self._summary: dict[str, Any] = self._request("__init__", (name,), peer_kwargs)
        except BaseException:
            self.kill()
            raise

    # ------------------------------------------------------------------ protocol

    def _request(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            if self._closed or self._in is None:
                raise ToxPeerProcessError(f"{self.name}: process already killed")
            try:
                _write_frame(self._in, (method, args, kwargs))
                status, value = _read_frame(self._out)
            except (EOFError, BrokenPipeError, OSError) as exc:
                raise ToxPeerProcessError(
                    f"{self.name}: child process died (exit status {self._proc.poll()})"
                ) from exc
        if status == "error":
            raise value
        return value

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``ToxPeer.method(*args, **kwargs)`` in the child (or read a property)."""
        return self._request(method, args, kwargs)

    async def acall(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`call` from Trio (in a worker thread; a cancelled call still completes)."""
        return await trio.to_thread.run_sync(
            functools.partial(self._request, method, args, kwargs), abandon_on_cancel=True
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited."""
        return self._proc.poll()

    def kill(self) -> None:
        """Kill the Tox and end the child (SIGKILL if it does not exit in time). Idempotent."""
        if not self._closed:
            try:
                self._request("kill", (), {})
            except (ToxPeerProcessError, RuntimeError):
                pass
            self._closed = True
        if self._in is not None:
            try:
                self._in.close()
            except OSError:
                pass
        try:
            self._proc.wait(KILL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(KILL_TIMEOUT_S)
        self._out.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"ToxPeerProcess({self.name!r}, pid={self.pid})"

    # ------------------------------------------------------------------ cached identity

    @property
    def address(self) -> bytes:
        """The 38-byte Tox ID (as of start; see ``call("address")`` after set_nospam)."""
        return bytes(self._summary["address"])

    @property
    def public_key(self) -> bytes:
        """The long-term public key."""
        return bytes(self._summary["public_key"])

    @property
    def dht_id(self) -> bytes:
        """The DHT public key."""
        return bytes(self._summary["dht_id"])

    @property
    def udp_port(self) -> int | None:
        """The bound UDP port (None with UDP off)."""
        port = self._summary["udp_port"]
        return None if port is None else int(port)

    # ------------------------------------------------------------------ proxied methods

    def bootstrap(self, host: str, port: int, public_key: bytes) -> None:
        """``ToxPeer.bootstrap``."""
        self.call("bootstrap", host, port, public_key)

    def add_tcp_relay(self, host: str, port: int, public_key: bytes) -> None:
        """``ToxPeer.add_tcp_relay``."""
        self.call("add_tcp_relay", host, port, public_key)

    def friend_add(self, address: bytes, message: bytes | str) -> int:
        """``ToxPeer.friend_add``."""
        return int(self.call("friend_add", address, message))

    def friend_add_norequest(self, public_key: bytes) -> int:
        """``ToxPeer.friend_add_norequest``."""
        return int(self.call("friend_add_norequest", public_key))

    def friend_by_public_key(self, public_key: bytes) -> int:
        """``ToxPeer.friend_by_public_key``."""
        return int(self.call("friend_by_public_key", public_key))

    def friend_connection_status(self, friend: int) -> Connection:
        """``ToxPeer.friend_connection_status``."""
        return Connection(self.call("friend_connection_status", friend))

    def send_message(self, friend: int, text: bytes | str) -> int:
        """``ToxPeer.send_message``."""
        return int(self.call("send_message", friend, text))

    def send_lossless(self, friend: int, data: bytes) -> None:
        """``ToxPeer.send_lossless``."""
        self.call("send_lossless", friend, data)

    def send_lossy(self, friend: int, data: bytes) -> None:
        """``ToxPeer.send_lossy``."""
        self.call("send_lossy", friend, data)

    def get_savedata(self) -> bytes:
        """``ToxPeer.get_savedata``."""
        return bytes(self.call("get_savedata"))

    def stats(self) -> ToxPeerStats:
        """``ToxPeer.stats``."""
        result: ToxPeerStats = self.call("stats")
        return result

    def events(self, kind: type[_E] | None = None) -> list[Any]:
        """``ToxPeer.events`` (copied over the pipe: use ``record_packets=False`` for bulk)."""
        return list(self.call("events", kind))

    def event_count(self) -> int:
        """``ToxPeer.event_count``."""
        return int(self.call("event_count"))

    def wait_event(self, kind: type[_E], timeout: float, since: int = 0) -> _E:
        """``ToxPeer.wait_event`` without ``match``."""
        event: _E = self.call("wait_event", kind, timeout, None, since)
        return event

    def wait_friend_connected(
        self, friend: int, timeout: float, via: Connection | None = None
    ) -> Connection:
        """``ToxPeer.wait_friend_connected``."""
        return Connection(self.call("wait_friend_connected", friend, timeout, via))

    def pump_lossless(self, friend: int, count: int, **kwargs: Any) -> PumpResult:
        """:func:`tunnel.testing.toxcore_bulk.pump_lossless` in the child."""
        result: PumpResult = self.call("pump_lossless", friend, count, **kwargs)
        return result

    def pump_lossy(self, friend: int, count: int, **kwargs: Any) -> PumpResult:
        """:func:`tunnel.testing.toxcore_bulk.pump_lossy` in the child."""
        result: PumpResult = self.call("pump_lossy", friend, count, **kwargs)
        return result


# ---------------------------------------------------------------------------- child side


def _serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    from tunnel.testing import toxcore_bulk
    from tunnel.testing.toxcore import ToxPeer

    peer: ToxPeer | None = None
    while True:
        try:
            method, args, kwargs = _read_frame(requests)
        except EOFError:
            break
        try:
            if method == "__init__":
                peer = ToxPeer(*args, **kwargs)
                try:
                    udp_port: int | None = peer.udp_port
                except RuntimeError:
                    udp_port = None
                value: Any = {
                    "address": peer.address,
                    "public_key": peer.public_key,
                    "dht_id": peer.dht_id,
                    "udp_port": udp_port,
                }
            elif peer is None:
                raise ToxPeerProcessError("no peer yet")
            elif method == "kill":
                peer.kill()
                _write_frame(replies, ("ok", None))
                break
            elif method in _BULK_FUNCTIONS:
                value = getattr(toxcore_bulk, method)(peer, *args, **kwargs)
            elif method.startswith("_"):
                raise ToxPeerProcessError(f"private method {method!r}")
            else:
                attr = getattr(peer, method)
                value = attr(*args, **kwargs) if callable(attr) else attr
            reply: tuple[str, Any] = ("ok", value)
        except Exception as exc:
            reply = ("error", exc)
        try:
            _write_frame(replies, reply)
        except pickle.PicklingError as exc:
            _write_frame(replies, ("error", ToxPeerProcessError(f"unpicklable reply: {exc}")))
    if peer is not None:
        peer.kill()


def main() -> None:
    """Child entry point: frames on the original stdout; stray prints go to stderr."""
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
