"""The Linux TUN device and the VPN data-path pump (issue 9; data-path.md).

:class:`TunDevice` opens ``/dev/net/tun`` through python-pytun in layer-3 mode without the
4-byte packet-information header (``IFF_TUN | IFF_NO_PI``: every read is one IPv4 or IPv6
packet), optionally moves it into a network namespace, and configures it with ``ip``
commands: addresses (an address with the pool's prefix length also installs the route for
the whole pool, so no per-member routes are needed later), MTU, extra routes, link up, and
no IPv6 link-local address (``addrgenmode none``: nothing for us to route). Because the pool
route is installed once, privileges can be dropped right after setup
(:func:`drop_privileges`); the open file descriptor keeps working.

:class:`TunPump` is the data path's TUN side, built from what measured fastest on this
machine kind (data-path.md "What worked"): a dedicated thread with blocking waits (``poll``
on the TUN fd and a wake-up pipe, the GIL released while waiting) that drains up to
``batch_size`` packets per wakeup with ``os.readv`` into preallocated buffers, and hands the
whole batch to one callback. Each buffer has ``headroom`` free bytes in front of the packet,
so the consumer can write its packet id and crypto header in place and encrypt without
copying. The interface the node uses:

* ``TunPump(device, on_packets)``; ``start()`` / ``stop()`` (or ``with``);
* ``on_packets(slots)`` runs on the pump thread with a list of :class:`PacketSlot` (valid
  only during the call: the buffers are reused for the next batch). ``slot.packet()`` is a
  memoryview of the IP packet, ``slot.buffer[slot.offset - k : ...]`` reaches into the
  headroom. Exceptions from the callback are counted and logged, never kill the thread;
* ``write_packets(packets)`` writes IP packets (any buffers) into the device from any
  thread; it never blocks (the fd is non-blocking), and a packet the kernel refuses is
  dropped and counted;
* ``add_reader(fd, callback)`` has the pump thread also wait for ``fd`` and call
  ``callback()`` when it is readable (the VPN reads the node's UDP socket there: a packet
  from a member goes into the TUN device and the answer the kernel puts out comes back on
  the same thread, with no thread wake-up in between). A truthy return value means the
  callback moved data packets (it starts a busy-poll window, below).

Busy polling (like Linux ``SO_BUSY_POLL``): after the pump moved packets (a TUN read, or a
reader callback that returned true), it does not block in ``poll`` at once but keeps
checking its fds without waiting (``poll`` with timeout 0, then ``sched_yield``; both
release the GIL, and a thread waking up for it gets it) for up to ``busy_poll_window_s``,
then blocks as before. A request's answer (a ping's reply through the other member) then
finds the thread running instead of asleep on an idle CPU. The cost is bounded: nothing
while no data moves (control traffic such as DHT packets does not start a window), at most
one window per burst of packets. 0 disables it. Measured (bench/README.md): ping RTT p50
through the VPN about 0.04 ms lower with 1 ms, for about 1 ms of CPU per ping (both members).
Spinning does not keep the packet path's code in the caches, though:

Keeping warm (optional, off unless ``warm`` and ``warm_interval_ms`` are given): the caches
go cold over a few milliseconds whether the thread sleeps or spins (measured: a seal + open
+ UDP round that takes 12-17 us in a loop takes 35 us after 2 ms, 65-85 us after 5 ms,
105-140 us after 20 ms; the VM's host shares the cores). So for ``warm_for_s`` after the
last data packets moved, the blocking wait times out every ``warm_interval_ms`` and
``warm()`` runs (the VPN seals and opens a dummy packet: its crypto path stays in the
caches for the next real packet). It costs CPU (up to about 100 us per tick, counting the
wake-up) only while traffic is sparse and recent.

Warming up ahead (``warm_ahead_lead_s`` > 0, with ``warm``; :mod:`tunnel.io.warm_ahead`):
when data packets move at a steady interval, the blocking wait times out shortly before the
next one is due and ``warm()`` runs then (a few times at most, while the packet is late);
one warm-up or two per period instead of ticks all the time.

The control plane stays on Trio; only the per-packet path lives on these threads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import pwd
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import pytun

from tunnel.io.warm_ahead import WarmAhead
from tunnel.vpn.ip import Buffer

DEFAULT_BATCH_SIZE = 64
DEFAULT_HEADROOM_BYTES = 64
DEFAULT_TUN_MTU_BYTES = 1372
MAX_TUN_MTU_BYTES = 65535
IP_COMMAND_TIMEOUT_S = 10.0
MAX_IFNAME_LENGTH = 15
DEFAULT_WARM_FOR_S = 0.2
"""Keep-warm ticks run this long after the last data packets moved (see module docstring)."""

_FATAL_READ_ERRNOS = frozenset({errno.EBADF, errno.EBADFD, errno.EIO, errno.ENODEV, errno.ENXIO})
"""Read errors after which the device is gone for good (fd closed, interface deleted)."""

log = logging.getLogger(__name__)


class TunError(RuntimeError):
    """The TUN device could not be created or configured (the message says which step)."""


def _ip(netns: str | None, *args: str, check: bool = True) -> None:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=IP_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TunError(f"{' '.join(argv)}: {exc}") from exc
    if check and result.returncode != 0:
        raise TunError(f"{' '.join(argv)}: {result.stderr.strip()}")


class TunDevice:
    """One layer-3 TUN interface (see module docstring). Closing it deletes the interface."""

    def __init__(self, name: str, *, netns: str | None = None) -> None:
        if not 1 <= len(name) <= MAX_IFNAME_LENGTH or "/" in name or " " in name:
            raise TunError(f"interface name {name!r}: 1-{MAX_IFNAME_LENGTH} chars, no / or space")
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=pytun.IFF_TUN | pytun.IFF_NO_PI)
        except (pytun.Error, OSError) as exc:
            raise TunError(f"cannot create TUN {name!r} (root/CAP_NET_ADMIN?): {exc}") from exc
        self.name: str = self._dev.name
        self.netns = netns
        self._fd: int = self._dev.fileno()
        self._closed = False
        if netns is not None:
            try:
                _ip(None, "link", "set", "dev", self.name, "netns", netns)
            except TunError:
                self.close()
                raise
        os.set_blocking(self._fd, False)

    def fileno(self) -> int:
        """The TUN file descriptor (non-blocking)."""
        return self._fd

    def configure(
        self,
        addresses: Sequence[str],
        *,
        mtu: int = DEFAULT_TUN_MTU_BYTES,
        routes: Sequence[str] = (),
    ) -> None:
        """Set MTU, addresses (``"10.77.1.2/16"``, ``"fd77::1/64"``), routes, and bring it up.

        Raises:
            TunError: an ``ip`` command failed (message has the command and its error).
        """
        if not 68 <= mtu <= MAX_TUN_MTU_BYTES:
            raise TunError(f"mtu {mtu} outside 68-{MAX_TUN_MTU_BYTES}")
        ns = self.netns
        _ip(ns, "link", "set", "dev", self.name, "mtu", str(mtu))
        # No IPv6 link-local address: optional (fails when IPv6 is disabled).
        _ip(ns, "link", "set", "dev", self.name, "addrgenmode", "none", check=False)
        for address in addresses:
            if ":" in address:
                _ip(ns, "-6", "addr", "add", address, "dev", self.name, "nodad")
            else:
                _ip(ns, "addr", "add", address, "dev", self.name)
        _ip(ns, "link", "set", "dev", self.name, "up")
        for route in routes:
            _ip(ns, "route", "add", route, "dev", self.name)

    def read_into(self, buffer: bytearray | memoryview) -> int:
        """One packet into ``buffer``; raises BlockingIOError when none is waiting."""
        return os.readv(self._fd, [buffer])

    def write(self, packet: Buffer) -> int:
        """Write one IP packet (may raise OSError, e.g. EINVAL for a malformed packet)."""
        return os.write(self._fd, packet)

    def close(self) -> None:
        """Close the fd; the kernel then deletes the (non-persistent) interface."""
        if not self._closed:
            self._closed = True
            self._dev.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PacketSlot:
    """A preallocated receive buffer: ``buffer[offset : offset + length]`` is the packet."""

    __slots__ = ("_read_view", "_view", "buffer", "length", "offset")

    def __init__(self, capacity: int, headroom: int) -> None:
        self.buffer = bytearray(headroom + capacity)
        self.offset = headroom
        self.length = 0
        self._view = memoryview(self.buffer)
        self._read_view = self._view[headroom:]

    def packet(self) -> memoryview:
        """The packet bytes (a view into the buffer, valid during the callback only)."""
        return self._view[self.offset : self.offset + self.length]


@dataclass(frozen=True)
class PumpStats:
    """Counters of a :class:`TunPump`."""

    read_packets: int
    read_batches: int
    read_errors: int
    callback_errors: int
    written_packets: int
    write_errors: int
    busy_windows: int
    busy_polls: int
    blocking_polls: int
    warm_calls: int


class TunPump:
    """Moves packets between a :class:`TunDevice` and the node (see module docstring)."""

    def __init__(
        self,
        device: TunDevice,
        on_packets: Callable[[list[PacketSlot]], None],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        headroom: int = DEFAULT_HEADROOM_BYTES,
        capacity: int = MAX_TUN_MTU_BYTES,
        busy_poll_window_s: float = 0.0,
        warm: Callable[[], None] | None = None,
        warm_interval_ms: int = 0,
        warm_for_s: float = DEFAULT_WARM_FOR_S,
        warm_ahead_lead_s: float = 0.0,
    ) -> None:
        if min(busy_poll_window_s, warm_interval_ms, warm_for_s, warm_ahead_lead_s) < 0:
            raise ValueError("busy-poll window and warm-up times must be >= 0")
        self.device = device
        self.busy_poll_window_s = busy_poll_window_s
        self._warm = warm
        self._ticks = warm_interval_ms > 0 and warm_for_s > 0
        self.warm_ahead = WarmAhead(warm_ahead_lead_s) if warm_ahead_lead_s > 0 else None
        self.warm_interval_ms = warm_interval_ms
        self.warm_for_s = warm_for_s
        self._on_packets = on_packets
        self._slots = [PacketSlot(capacity, headroom) for _ in range(batch_size)]
        self._tun_poll = select.poll()  # "anything to read?" without a failing read
        self._tun_poll.register(device.fileno(), select.POLLIN)
        self._wake_r, self._wake_w = os.pipe()
        self._readers: dict[int, Callable[[], object]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.failure: OSError | None = None
        """Why the reader stopped on its own (the device went away), else None."""
        self.read_packets = 0
        self.read_batches = 0
        self.read_errors = 0
        self.callback_errors = 0
        self.written_packets = 0
        self.write_errors = 0
        self.busy_windows = 0
        """Busy-poll windows started (each after a wake-up that moved packets)."""
        self.busy_polls = 0
        """Non-blocking polls that found nothing (the CPU the windows cost, in polls)."""
        self.blocking_polls = 0
        """Blocking waits (the thread sleeps until an fd is readable or a warm tick)."""
        self.warm_calls = 0
        """Keep-warm ticks (``warm()`` calls)."""

    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._thread is not None:
            raise RuntimeError("pump already started")
        self._thread = threading.Thread(
            target=self._read_loop, name=f"tun-pump-{self.device.name}", daemon=True
        )
        self._thread.start()

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Also wait for ``fd`` on the pump thread; ``callback()`` runs there when it is
        readable (it must read until empty: the wait is level-triggered); it returns true
        when it moved data packets (that starts a busy-poll window). Any time, once."""
        self._readers[fd] = callback
        if self._thread is not None and not self._stopping:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"r")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the reader thread and wait for it (idempotent); the device stays open."""
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - a callback that never returns
                log.error("TUN pump thread did not stop within %s s", timeout)
                return  # leave the pipe open: the thread still polls it
        os.close(self._wake_r)
        os.close(self._wake_w)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the reader thread has ended (stopped, or :attr:`failure`); True if so."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _read_loop(self) -> None:
        poller = select.poll()
        poller.register(self.device.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        readers = self._readers
        polled: set[int] = set()
        window = self.busy_poll_window_s
        clock = time.perf_counter
        sched_yield = os.sched_yield
        busy_until = 0.0  # polling without blocking until then (clock time)
        warm = self._warm
        ticks = warm is not None and self._ticks
        warm_ms = self.warm_interval_ms
        warm_until = 0.0  # keep-warm ticks until then (clock time)
        ahead = self.warm_ahead if warm is not None else None
        while not self._stopping and self.failure is None:
            for extra in readers.keys() - polled:
                poller.register(extra, select.POLLIN)
                polled.add(extra)
            try:
                if busy_until:
                    ready = poller.poll(0)
                    if not ready:
                        self.busy_polls += 1
                        if clock() >= busy_until:
                            busy_until = 0.0  # the window is over: block again
                        else:
                            sched_yield()  # let a thread waiting for this CPU run
                        continue
                elif ticks and warm_until:
                    self.blocking_polls += 1
                    ready = poller.poll(warm_ms)
                    if not ready:
                        if clock() >= warm_until:
                            warm_until = 0.0  # traffic stopped: block without ticks
                        elif warm is not None:
                            self._warm_up(warm)
                        continue
                elif ahead is not None and (wait_s := ahead.wait_s(clock())) is not None:
                    self.blocking_polls += 1
                    ready = poller.poll(int(wait_s * 1000))  # ms, rounded down: early
                    if not ready and warm is not None:
                        ahead.fired(clock())
                        self._warm_up(warm)
                        continue
                else:
                    self.blocking_polls += 1
                    ready = poller.poll()
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            tun_ready = moved = False
            for ready_fd, _ in ready:
                if ready_fd == self._wake_r:  # stop (the loop ends) or a new reader
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 64)
                elif ready_fd in readers:
                    try:
                        if readers[ready_fd]():
                            moved = True
                    except Exception:
                        self.callback_errors += 1
                        log.exception("pump reader callback failed")
                else:
                    tun_ready = True
            if tun_ready and not self._stopping and self.read_now():
                moved = True
            if moved:
                now = clock()
                if window > 0:
                    if not busy_until:
                        self.busy_windows += 1
                    busy_until = now + window
                if ticks:
                    warm_until = now + self.warm_for_s
                if ahead is not None:
                    ahead.moved(now)

    def _warm_up(self, warm: Callable[[], None]) -> None:
        self.warm_calls += 1
        try:
            warm()
        except Exception:
            self.callback_errors += 1
            log.exception("pump warm callback failed")

    def read_now(self) -> int:
        """Pump thread only: read what the device has and hand it to the callback; returns
        how many packets it read.

        The first packet goes to the callback alone, before the device is read again: a
        lone packet (a ping, a request, its answer) goes out without waiting for the read
        that finds the device empty. Then the rest, up to ``batch_size``, if a zero-timeout
        poll says there is more: a read that fails with EAGAIN costs an exception, several
        times a poll on a cold CPU (after a lone packet the device is usually empty).
        """
        fd = self.device.fileno()
        slots = self._slots
        total = 0
        for limit in (1, len(slots)):
            if total and not self._tun_poll.poll(0):
                return total
            count = 0
            for slot in slots[:limit]:
                try:
                    slot.length = os.readv(fd, [slot._read_view])
                except BlockingIOError:
                    break
                except OSError as exc:
                    self.read_errors += 1
                    if exc.errno in _FATAL_READ_ERRNOS:
                        self.failure = exc
                        log.error("TUN %s read failed, pump stops: %s", self.device.name, exc)
                        return total
                    break
                count += 1
            if count == 0:
                return total
            total += count
            self.read_packets += count
            self.read_batches += 1
            try:
                self._on_packets(slots[:count])
            except Exception:
                self.callback_errors += 1
                log.exception("TUN packet callback failed")
            if count < limit:
                return total
        return total

    def readable(self) -> bool:
        """Pump thread: the device has a packet to read (a zero-timeout poll)."""
        return bool(self._tun_poll.poll(0))

    def write_packets(self, packets: Iterable[Buffer]) -> int:
        """Write IP packets into the device; returns how many the kernel took."""
        fd = self.device.fileno()
        written = 0
        for packet in packets:
            try:
                os.write(fd, packet)
            except OSError:
                self.write_errors += 1
                continue
            written += 1
        self.written_packets += written
        return written

    def statistics(self) -> PumpStats:
        """A frozen snapshot of the counters."""
        return PumpStats(
            self.read_packets,
            self.read_batches,
            self.read_errors,
            self.callback_errors,
            self.written_packets,
            self.write_errors,
            self.busy_windows,
            self.busy_polls,
            self.blocking_polls,
            self.warm_calls,
        )


_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_NET_ADMIN = 12


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _keep_only_net_admin(libc: ctypes.CDLL) -> None:
    """After setuid with KEEPCAPS: CAP_NET_ADMIN effective, permitted, inheritable, ambient."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    bit = 1 << CAP_NET_ADMIN
    data[0].effective = data[0].permitted = data[0].inheritable = bit
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    if libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_RAISE)")


def drop_privileges(user: str, *, keep_net_admin: bool = False) -> None:
    """Switch to ``user`` (its primary group, no supplementary groups) after TUN setup.

    The open TUN fd keeps working. Without ``keep_net_admin`` the device can no longer be
    reconfigured (install the whole pool route before dropping, as :meth:`TunDevice.configure`
    does). With it, only ``CAP_NET_ADMIN`` is kept (also as an ambient capability, so the
    ``ip`` commands of :meth:`TunDevice.configure` still work), as toxvpn's ``-u`` does: enough
    to follow an address change after a collision, nothing else of root.

    Raises:
        TunError: unknown user, or the switch failed.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise TunError(f"unknown user {user!r}") from exc
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    try:
        if keep_net_admin and libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        if keep_net_admin:
            _keep_only_net_admin(libc)
    except OSError as exc:
        raise TunError(f"cannot drop privileges to {user!r}: {exc}") from exc
