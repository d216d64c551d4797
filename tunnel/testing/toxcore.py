"""Real c-toxcore 0.2.18 peers for interop tests: :class:`ToxPeer` drives one Tox instance.

toxcore-test-peers.md sections 3, 7 and 8. A :class:`ToxPeer` owns one ``Tox *`` created from
explicit options (explicit ports, LAN discovery off, hole punching off by default), iterates it
on its own background thread following ``tox_iteration_interval``, serialises every API call
with a lock, and records what its callbacks report into a thread-safe event log.

Waiting, without sleeping in a loop:

* sync tests: ``peer.wait_for(predicate, timeout)``, ``peer.wait_event(FriendMessage, timeout)``,
  ``peer.wait_friend_connected(n, timeout)``; they wake after every ``tox_iterate``;
* Trio tests: the same as ``await peer.await_for(...)``, ``await peer.await_event(...)``,
  ``await peer.await_friend_connected(...)``, which run the sync wait in a worker thread
  (``trio.to_thread.run_sync(..., abandon_on_cancel=True)``).

Timings to expect on loopback: self status after ~7.5 s, a friend request ~7.7 s after
``friend_add``, the friend connection ~9-10 s; use timeouts of 30 s or more.

Related modules: :mod:`tunnel.testing.toxcore_waiting` (the waiting helpers, a mixin),
:mod:`tunnel.testing.toxcore_factory` (peers on pool ports, bootstrapped off a
:class:`~tunnel.testing.bootstrapd.Bootstrapd`; the ``tox_peer_factory`` fixture),
:mod:`tunnel.testing.toxcore_bulk` (``pump_lossless``/``pump_lossy`` numbered packet streams),
:mod:`tunnel.testing.toxcore_process` (the same peer in a child process, optionally inside a
network namespace). Typical test::

    def test_x(bootstrapd, tox_peer_factory):
        peer = tox_peer_factory("c", bootstrap=bootstrapd)     # UDP on pool ports + TCP relay
        number = peer.friend_add_norequest(our_public_key)
        peer.wait_friend_connected(number, 60)
        peer.send_lossless(number, b"\xa0hello")
"""

from __future__ import annotations

import collections
import ctypes
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from tunnel.testing import libtoxcore as _c
from tunnel.testing.event_log import EventLog
from tunnel.testing.libtoxcore import (
    TOX_ADDRESS_SIZE,
    TOX_PUBLIC_KEY_SIZE,
    TOX_SECRET_KEY_SIZE,
    Connection,
    LogLevel,
    MessageType,
    SavedataType,
    load_libtoxcore,
)
from tunnel.testing.toxcore_events import (
    FriendConnectionStatus,
    FriendLosslessPacket,
    FriendLossyPacket,
    FriendMessage,
    FriendName,
    FriendReadReceipt,
    FriendRequest,
    LogRecord,
    PumpResult,
    SelfConnectionStatus,
    ToxError,
    ToxEvent,
    ToxPeerStats,
)
from tunnel.testing.toxcore_waiting import ToxPeerWaiting

__all__ = [
    "Connection",
    "FriendConnectionStatus",
    "FriendLosslessPacket",
    "FriendLossyPacket",
    "FriendMessage",
    "FriendName",
    "FriendReadReceipt",
    "FriendRequest",
    "LogLevel",
    "LogRecord",
    "MessageType",
    "PumpResult",
    "SelfConnectionStatus",
    "ToxError",
    "ToxEvent",
    "ToxPeer",
    "ToxPeerStats",
]


LOG_RECORDS_KEPT = 5000
KILL_JOIN_TIMEOUT_S = 10.0
_SENDQ = _c.ERR_FRIEND_CUSTOM_PACKET.index("TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ")


def _buf(n: int) -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(n)


class _PacketCounter:
    __slots__ = ("bytes", "first_at", "last_at", "packets")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.first_at = 0.0
        self.last_at = 0.0

    def count(self, length: int, now: float) -> None:
        if not self.packets:
            self.first_at = now
        self.packets += 1
        self.bytes += length
        self.last_at = now


def _check_key(public_key: bytes) -> None:
    if len(public_key) != TOX_PUBLIC_KEY_SIZE:
        raise ValueError(f"a public key is {TOX_PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")


# ---------------------------------------------------------------------------- the peer


class ToxPeer(ToxPeerWaiting):
    """One real libtoxcore instance iterated on a background thread.

    ``start_port``/``end_port`` give the UDP port range (explicit ports are required with UDP
    on; ``end_port`` defaults to ``start_port``). ``tcp_port`` > 0 runs a TCP relay server.
    ``savedata`` loads a ``tox_get_savedata`` blob (``TOX_SAVEDATA_TYPE_TOX_SAVE``);
    ``secret_key`` instead loads just a secret key. With ``auto_accept`` every friend request
    is accepted (``tox_friend_add_norequest``) from the callback. With ``record_packets``
    off, custom packets are only counted (for throughput tests).
    """

    def __init__(
        self,
        name: str = "tox",
        *,
        start_port: int = 0,
        end_port: int | None = None,
        tcp_port: int = 0,
        udp: bool = True,
        ipv6: bool = False,
        local_discovery: bool = False,
        hole_punching: bool = False,
        dht_announcements: bool = True,
        savedata: bytes | None = None,
        secret_key: bytes | None = None,
        auto_accept: bool = True,
        record_packets: bool = True,
        start: bool = True,
    ) -> None:
        if udp and start_port <= 0:
            raise ValueError("give explicit UDP ports (start_port): never toxcore's 33445 default")
        if savedata is not None and secret_key is not None:
            raise ValueError("give savedata or secret_key, not both")
        self.name = name
        self.auto_accept = auto_accept
        self.record_packets = record_packets
        self._lib = load_libtoxcore()
        self._api = threading.RLock()
        self._log_events = EventLog(name)
        self._pending: list[ToxEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: collections.deque[LogRecord] = collections.deque(maxlen=LOG_RECORDS_KEPT)
        self._iterations = 0
        self._lossless = _PacketCounter()
        self._lossy = _PacketCounter()
        self._hooks: list[Callable[[], bool]] = []
        self._callbacks: list[Any] = []  # keeps the CFUNCTYPE objects alive
        self._tox: int | None = self._create(
            start_port=start_port,
            end_port=start_port if end_port is None else end_port,
            tcp_port=tcp_port,
            udp=udp,
            ipv6=ipv6,
            local_discovery=local_discovery,
            hole_punching=hole_punching,
            dht_announcements=dht_announcements,
            savedata=savedata,
            secret_key=secret_key,
        )
        self._register_callbacks()
        if start:
            self.start()

    # ------------------------------------------------------------------ creation

    def _create(
        self,
        *,
        start_port: int,
        end_port: int,
        tcp_port: int,
        udp: bool,
        ipv6: bool,
        local_discovery: bool,
        hole_punching: bool,
        dht_announcements: bool,
        savedata: bytes | None,
        secret_key: bytes | None,
    ) -> int:
        lib = self._lib
        err = ctypes.c_int(0)
        opts = lib.tox_options_new(ctypes.byref(err))
        if not opts:
            raise ToxError("tox_options_new", err.value, _c.err_name(_c.ERR_OPTIONS_NEW, err.value))
        try:
            lib.tox_options_set_ipv6_enabled(opts, ipv6)
            lib.tox_options_set_udp_enabled(opts, udp)
            lib.tox_options_set_local_discovery_enabled(opts, local_discovery)
            lib.tox_options_set_dht_announcements_enabled(opts, dht_announcements)
            lib.tox_options_set_hole_punching_enabled(opts, hole_punching)
            lib.tox_options_set_start_port(opts, start_port)
            lib.tox_options_set_end_port(opts, end_port)
            lib.tox_options_set_tcp_port(opts, tcp_port)
            log_cb = _c.LOG_CB(self._on_log)
            self._callbacks.append(log_cb)
            lib.tox_options_set_log_callback(opts, log_cb)
            data: bytes | None = None
            if savedata is not None:
                data = bytes(savedata)
                lib.tox_options_set_savedata_type(opts, SavedataType.TOX_SAVE)
            elif secret_key is not None:
                if len(secret_key) != TOX_SECRET_KEY_SIZE:
                    raise ValueError("secret_key must be 32 bytes")
                data = bytes(secret_key)
                lib.tox_options_set_savedata_type(opts, SavedataType.SECRET_KEY)
            if data is not None:
                lib.tox_options_set_savedata_data(opts, data, len(data))
            tox = lib.tox_new(opts, ctypes.byref(err))
        finally:
            lib.tox_options_free(opts)
        if not tox:
            raise ToxError(
                "tox_new",
                err.value,
                _c.err_name(_c.ERR_NEW, err.value),
                f"{self.name}, UDP ports {start_port}-{end_port}, tcp_port {tcp_port}",
            )
        return int(tox)

    def _register_callbacks(self) -> None:
        lib = self._lib
        pairs: list[tuple[str, Any]] = [
            ("tox_callback_self_connection_status", _c.SELF_CONNECTION_STATUS_CB(self._on_self)),
            ("tox_callback_friend_request", _c.FRIEND_REQUEST_CB(self._on_request)),
            (
                "tox_callback_friend_connection_status",
                _c.FRIEND_CONNECTION_STATUS_CB(self._on_friend_status),
            ),
            ("tox_callback_friend_message", _c.FRIEND_MESSAGE_CB(self._on_message)),
            ("tox_callback_friend_read_receipt", _c.FRIEND_READ_RECEIPT_CB(self._on_receipt)),
            ("tox_callback_friend_lossless_packet", _c.FRIEND_PACKET_CB(self._on_lossless)),
            ("tox_callback_friend_lossy_packet", _c.FRIEND_PACKET_CB(self._on_lossy)),
            ("tox_callback_friend_name", _c.FRIEND_PACKET_CB(self._on_name)),
        ]
        for func_name, cb in pairs:
            self._callbacks.append(cb)
            getattr(lib, func_name)(self._tox, cb)

    # ------------------------------------------------------------------ callbacks
    # They run inside tox_iterate on the iteration thread with the API lock held. They only
    # append to self._pending; the loop publishes the batch after releasing the API lock.

    def _on_log(
        self,
        _tox: int | None,
        level: int,
        file: bytes | None,
        line: int,
        func: bytes | None,
        message: bytes | None,
        _user: int | None,
    ) -> None:
        self._log.append(
            LogRecord(
                LogLevel(level) if 0 <= level <= LogLevel.ERROR else LogLevel.ERROR,
                (file or b"").decode("utf-8", "replace"),
                line,
                (func or b"").decode("utf-8", "replace"),
                (message or b"").decode("utf-8", "replace"),
            )
        )

    def _on_self(self, _tox: int | None, status: int, _user: int | None) -> None:
        self._pending.append(SelfConnectionStatus(Connection(status), time.monotonic()))

    def _on_request(
        self, _tox: int | None, pk: int | None, msg: int | None, length: int, _user: int | None
    ) -> None:
        public_key = ctypes.string_at(pk or 0, TOX_PUBLIC_KEY_SIZE)
        message = ctypes.string_at(msg, length) if msg and length else b""
        self._pending.append(FriendRequest(public_key, message, time.monotonic()))
        if self.auto_accept:
            err = ctypes.c_int(0)
            self._lib.tox_friend_add_norequest(self._tox, public_key, ctypes.byref(err))

    def _on_friend_status(
        self, _tox: int | None, friend: int, status: int, _user: int | None
    ) -> None:
        self._pending.append(FriendConnectionStatus(friend, Connection(status), time.monotonic()))

    def _on_message(
        self,
        _tox: int | None,
        friend: int,
        kind: int,
        msg: int | None,
        length: int,
        _user: int | None,
    ) -> None:
        text = ctypes.string_at(msg, length) if msg and length else b""
        self._pending.append(FriendMessage(friend, MessageType(kind), text, time.monotonic()))

    def _on_receipt(
        self, _tox: int | None, friend: int, message_id: int, _user: int | None
    ) -> None:
        self._pending.append(FriendReadReceipt(friend, message_id, time.monotonic()))

    def _on_lossless(
        self, _tox: int | None, friend: int, data: int | None, length: int, _user: int | None
    ) -> None:
        now = time.monotonic()
        self._lossless.count(length, now)
        if self.record_packets:
            payload = ctypes.string_at(data, length) if data and length else b""
            self._pending.append(FriendLosslessPacket(friend, payload, now))

    def _on_lossy(
        self, _tox: int | None, friend: int, data: int | None, length: int, _user: int | None
    ) -> None:
        now = time.monotonic()
        self._lossy.count(length, now)
        if self.record_packets:
            payload = ctypes.string_at(data, length) if data and length else b""
            self._pending.append(FriendLossyPacket(friend, payload, now))

    def _on_name(
        self, _tox: int | None, friend: int, name: int | None, length: int, _user: int | None
    ) -> None:
        text = ctypes.string_at(name, length) if name and length else b""
        self._pending.append(FriendName(friend, text, time.monotonic()))

    # ------------------------------------------------------------------ iteration thread

    def start(self) -> None:
        """Start the iteration thread (done by the constructor unless ``start=False``)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=f"tox-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lib = self._lib
        try:
            while not self._stop.is_set():
                with self._api:
                    if self._tox is None:
                        break
                    lib.tox_iterate(self._tox, None)
                    if self._hooks:
                        self._hooks = [hook for hook in self._hooks if hook()]
                    interval_ms = int(lib.tox_iteration_interval(self._tox))
                    batch, self._pending = self._pending, []
                    self._iterations += 1
                self._log_events.publish(batch)
                self._stop.wait(interval_ms / 1000.0)
        except BaseException as exc:  # pragma: no cover - reported to waiters
            self._log_events.fail(exc)
            raise
        finally:
            self._log_events.tick()

    def _handle(self) -> int:
        if self._tox is None:
            raise RuntimeError(f"ToxPeer {self.name} has been killed")
        return self._tox

    def kill(self) -> None:
        """Stop iterating and ``tox_kill`` the instance. Idempotent.

        Not from a callback or iteration hook (that would free the Tox inside tox_iterate).
        """
        thread = self._thread
        if thread is threading.current_thread():
            raise RuntimeError("ToxPeer.kill() called from its own iteration thread")
        self._stop.set()
        if thread is not None:
            thread.join(KILL_JOIN_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"{self.name}: iteration thread did not stop")
        with self._api:
            if self._tox is not None:
                self._lib.tox_kill(self._tox)
                self._tox = None
        self._log_events.close()

    @property
    def alive(self) -> bool:
        """False once :meth:`kill` ran."""
        return self._tox is not None

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
        state = "alive" if self.alive else "killed"
        return f"ToxPeer({self.name!r}, {state})"

    # ------------------------------------------------------------------ self info

    def _get_bytes(self, func_name: str, size: int) -> bytes:
        buf = _buf(size)
        with self._api:
            getattr(self._lib, func_name)(self._handle(), buf)
        return buf.raw[:size]

    @property
    def address(self) -> bytes:
        """The 38-byte Tox ID (``tox_self_get_address``)."""
        return self._get_bytes("tox_self_get_address", TOX_ADDRESS_SIZE)

    @property
    def public_key(self) -> bytes:
        """The long-term public key."""
        return self._get_bytes("tox_self_get_public_key", TOX_PUBLIC_KEY_SIZE)

    @property
    def secret_key(self) -> bytes:
        """The long-term secret key."""
        return self._get_bytes("tox_self_get_secret_key", TOX_SECRET_KEY_SIZE)

    @property
    def dht_id(self) -> bytes:
        """The (temporary, per-instance) DHT public key."""
        return self._get_bytes("tox_self_get_dht_id", TOX_PUBLIC_KEY_SIZE)

    @property
    def nospam(self) -> bytes:
        """The 4 nospam bytes as they appear in the address."""
        with self._api:
            value = int(self._lib.tox_self_get_nospam(self._handle()))
        return value.to_bytes(4, "big")

    def set_nospam(self, nospam: bytes | int) -> None:
        """Set nospam: 4 bytes as in the address, or the host-order ``uint32`` toxcore takes."""
        value = int.from_bytes(nospam, "big") if isinstance(nospam, bytes) else nospam
        with self._api:
            self._lib.tox_self_set_nospam(self._handle(), value)

    def _checked(self, func_name: str, errors: tuple[str, ...], *args: Any) -> Any:
        """Call ``func_name(tox, *args, &error)``; raise :class:`ToxError` unless error is OK."""
        err = ctypes.c_int(0)
        with self._api:
            result = getattr(self._lib, func_name)(self._handle(), *args, ctypes.byref(err))
        if err.value:
            raise ToxError(func_name, err.value, _c.err_name(errors, err.value))
        return result

    @property
    def udp_port(self) -> int:
        """The bound UDP port (raises :class:`ToxError` when UDP is off)."""
        return int(self._checked("tox_self_get_udp_port", _c.ERR_GET_PORT))

    @property
    def tcp_port(self) -> int:
        """The TCP relay server port (raises :class:`ToxError` without one)."""
        return int(self._checked("tox_self_get_tcp_port", _c.ERR_GET_PORT))

    def self_connection_status(self) -> Connection:
        """``tox_self_get_connection_status`` (TCP on an all-LAN DHT even when UDP works)."""
        with self._api:
            return Connection(int(self._lib.tox_self_get_connection_status(self._handle())))

    def set_name(self, name: bytes | str) -> None:
        """``tox_self_set_name``."""
        data = name.encode() if isinstance(name, str) else bytes(name)
        self._checked("tox_self_set_name", _c.ERR_SET_INFO, data, len(data))

    @property
    def name_bytes(self) -> bytes:
        """Our own name."""
        with self._api:
            size = int(self._lib.tox_self_get_name_size(self._handle()))
            buf = _buf(max(size, 1))
            self._lib.tox_self_get_name(self._handle(), buf)
        return buf.raw[:size]

    def set_status_message(self, message: bytes | str) -> None:
        """``tox_self_set_status_message``."""
        data = message.encode() if isinstance(message, str) else bytes(message)
        self._checked("tox_self_set_status_message", _c.ERR_SET_INFO, data, len(data))

    def get_savedata(self) -> bytes:
        """``tox_get_savedata``: the whole state as toxcore saves it."""
        with self._api:
            size = int(self._lib.tox_get_savedata_size(self._handle()))
            buf = _buf(size)
            self._lib.tox_get_savedata(self._handle(), buf)
        return buf.raw[:size]

    # ------------------------------------------------------------------ network

    def bootstrap(self, host: str, port: int, public_key: bytes) -> None:
        """``tox_bootstrap`` off a DHT node (UDP ``host:port``, its DHT public key)."""
        _check_key(public_key)
        self._checked("tox_bootstrap", _c.ERR_BOOTSTRAP, host.encode(), port, bytes(public_key))

    def add_tcp_relay(self, host: str, port: int, public_key: bytes) -> None:
        """``tox_add_tcp_relay`` (a tox-bootstrapd relay uses its DHT key)."""
        _check_key(public_key)
        self._checked("tox_add_tcp_relay", _c.ERR_BOOTSTRAP, host.encode(), port, bytes(public_key))

    # ------------------------------------------------------------------ friends

    def friend_add(self, address: bytes, message: bytes | str) -> int:
        """``tox_friend_add``: send a friend request; returns the friend number.

        Raises :class:`ToxError` with the ``TOX_ERR_FRIEND_ADD_*`` name on failure.
        """
        if len(address) != TOX_ADDRESS_SIZE:
            raise ValueError(f"a Tox address is {TOX_ADDRESS_SIZE} bytes, got {len(address)}")
        msg = message.encode() if isinstance(message, str) else bytes(message)
        return int(
            self._checked("tox_friend_add", _c.ERR_FRIEND_ADD, bytes(address), msg, len(msg))
        )

    def friend_add_norequest(self, public_key: bytes) -> int:
        """``tox_friend_add_norequest``: add a friend without a request; the friend number."""
        _check_key(public_key)
        return int(self._checked("tox_friend_add_norequest", _c.ERR_FRIEND_ADD, bytes(public_key)))

    def friend_delete(self, friend: int) -> None:
        """``tox_friend_delete``."""
        self._checked("tox_friend_delete", _c.ERR_FRIEND_DELETE, friend)

    def friend_by_public_key(self, public_key: bytes) -> int:
        """The friend number of ``public_key``."""
        _check_key(public_key)
        return int(
            self._checked(
                "tox_friend_by_public_key", _c.ERR_FRIEND_BY_PUBLIC_KEY, bytes(public_key)
            )
        )

    def friend_public_key(self, friend: int) -> bytes:
        """The long-term public key of ``friend``."""
        buf = _buf(TOX_PUBLIC_KEY_SIZE)
        self._checked("tox_friend_get_public_key", _c.ERR_FRIEND_GET_PUBLIC_KEY, friend, buf)
        return buf.raw[:TOX_PUBLIC_KEY_SIZE]

    def friend_list(self) -> list[int]:
        """All friend numbers."""
        with self._api:
            size = int(self._lib.tox_self_get_friend_list_size(self._handle()))
            array = (ctypes.c_uint32 * max(size, 1))()
            self._lib.tox_self_get_friend_list(self._handle(), array)
        return [int(array[i]) for i in range(size)]

    def friend_connection_status(self, friend: int) -> Connection:
        """``tox_friend_get_connection_status``."""
        status = self._checked("tox_friend_get_connection_status", _c.ERR_FRIEND_QUERY, friend)
        return Connection(int(status))

    def send_message(self, friend: int, text: bytes | str, *, action: bool = False) -> int:
        """``tox_friend_send_message``; returns the message id (see :class:`FriendReadReceipt`)."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        kind = MessageType.ACTION if action else MessageType.NORMAL
        return int(
            self._checked(
                "tox_friend_send_message", _c.ERR_FRIEND_SEND_MESSAGE, friend, kind, data, len(data)
            )
        )

    def send_lossless(self, friend: int, data: bytes) -> None:
        """``tox_friend_send_lossless_packet``: ``data[0]`` in 160-191, at most 1373 bytes.

        Raises :class:`ToxError` (``code_name`` ``..._SENDQ`` when the queue is full).
        """
        self._checked(
            "tox_friend_send_lossless_packet",
            _c.ERR_FRIEND_CUSTOM_PACKET,
            friend,
            bytes(data),
            len(data),
        )

    def send_lossy(self, friend: int, data: bytes) -> None:
        """``tox_friend_send_lossy_packet``: ``data[0]`` in 200-254, at most 1373 bytes."""
        self._checked(
            "tox_friend_send_lossy_packet",
            _c.ERR_FRIEND_CUSTOM_PACKET,
            friend,
            bytes(data),
            len(data),
        )

    # ------------------------------------------------------------------ bulk sending

    def add_iteration_hook(self, hook: Callable[[], bool]) -> None:
        """Run ``hook()`` on the iteration thread after every ``tox_iterate``, API lock held.

        The hook is dropped once it returns False. Keep it short: it delays iteration.
        """
        with self._api:
            self._handle()
            self._hooks.append(hook)

    def remove_iteration_hook(self, hook: Callable[[], bool]) -> None:
        """Drop ``hook`` if it is still installed."""
        with self._api:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def try_send_lossless(self, friend: int, data: bytes) -> bool:
        """Like :meth:`send_lossless`, but returns False instead of raising on SENDQ."""
        return self._try_send("tox_friend_send_lossless_packet", friend, data)

    def try_send_lossy(self, friend: int, data: bytes) -> bool:
        """Like :meth:`send_lossy`, but returns False instead of raising on SENDQ."""
        return self._try_send("tox_friend_send_lossy_packet", friend, data)

    def _try_send(self, func_name: str, friend: int, data: bytes) -> bool:
        try:
            self._checked(func_name, _c.ERR_FRIEND_CUSTOM_PACKET, friend, data, len(data))
        except ToxError as exc:
            if exc.code == _SENDQ:
                return False
            raise
        return True

    # ------------------------------------------------------------------ event log

    def log_records(self, min_level: LogLevel = LogLevel.TRACE) -> list[LogRecord]:
        """toxcore's recent log messages at ``min_level`` or above."""
        return [r for r in list(self._log) if r.level >= min_level]

    def stats(self) -> ToxPeerStats:
        """Iteration and custom-packet counters."""
        with self._api:
            a, b = self._lossless, self._lossy
            return ToxPeerStats(
                self._iterations,
                a.packets,
                a.bytes,
                b.packets,
                b.bytes,
                a.first_at,
                a.last_at,
                b.first_at,
                b.last_at,
            )
