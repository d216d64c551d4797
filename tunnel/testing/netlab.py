"""A network-namespace test lab: an "internet", hosts on it and hosts behind NAT routers.

Used by the root-only end-to-end tests (VPN, TCP relays, NAT traversal against real toxcore).
toxcore treats 10/8, 172.16/12, 192.168/16 and loopback as LAN and then never reports UDP
self-connectivity (toxcore-test-peers.md, "Addendum: LAN ranges and test networks"), so the
"internet" side uses 198.18.0.0/15 (RFC 2544 benchmarking range), which toxcore does not treat
as LAN. Private sides behind NAT routers use ``10.<n>.0.0/24``.

Topology::

                        <run>-inet  (bridge br0, the "internet", 198.18.0.0/24)
            +-------------+----------------+-----------------+
       eth0 |198.18.0.1   wan|198.18.0.2   wan|198.18.0.3
        <run>-srv        <run>-ra (NAT)    <run>-rb (NAT)
                          lan|10.1.0.1      lan|10.2.0.1
                         eth0|10.1.0.2     eth0|10.2.0.2
                          <run>-a           <run>-b

Every namespace is named ``<prefix>-<pid>-<4 hex>-<name>``: unique per run, and the pid lets
:func:`sweep_stale` (run when a lab starts) delete namespaces left behind by a crashed run
whose process is gone, without touching those of a run that is still alive. Veth pairs are
created directly inside their namespaces (never in the caller's namespace), so deleting the
namespaces deletes every link the lab made. NAT routers run one nftables ``masquerade`` rule:
``NatMode.ENDPOINT_INDEPENDENT`` keeps the source port when it can (Linux conntrack: one mapping
per inside socket, address-and-port-dependent filtering), ``NatMode.RANDOM`` adds
``random,fully-random`` (a new random public port per flow: port prediction fails). Routers
drop unsolicited inbound packets to themselves (a home router's firewall), so simultaneous
UDP hole punching between two endpoint-independent NATs works (see ``set_nat_mode``).

Teardown (``__exit__`` or :meth:`NetLab.close`, also after failures) kills every process the
lab started (and anything else still running in its namespaces), then deletes the namespaces.

Example::

    with NetLab() as lab:
        server = lab.add_public_host("srv")
        a = lab.add_nat_host("a")
        lab.run(a, ["ping", "-c1", server.address])
        proc = lab.popen(server, [sys.executable, "-m", "something"])
        sock = lab.call_in(a, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        lab.call_in(a, lambda: trio.run(node_main))     # a whole Trio node inside ``a``
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import enum
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Self, TypeVar

from tunnel.testing.bootstrapd import popen_dies_with_parent

DEFAULT_PREFIX = "tnl"
INTERNET_SUBNET = "198.18.0.0/24"
INTERNET_PREFIX_LEN = 24
FIRST_INTERNET_HOST = 1
MAX_INTERNET_HOSTS = 250
PRIVATE_SUBNET_TEMPLATE = "10.{n}.0.0/24"
MAX_NAT_ROUTERS = 250
COMMAND_TIMEOUT_S = 15.0
PROCESS_STOP_TIMEOUT_S = 3.0
NAT_TABLE = "tnlnat"
FILTER_TABLE = "tnlfilter"

_VETH = ("ip", "link", "add")
_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")


class NetLabError(RuntimeError):
    """A lab command failed; the message has the command and its stderr."""


class NatMode(enum.Enum):
    """How a NAT router maps inside flows to public ports."""

    ENDPOINT_INDEPENDENT = "masquerade"
    """Plain masquerade: the source port is kept when free (one mapping per inside socket)."""
    RANDOM = "masquerade random,fully-random"
    """A random public port for every new flow (symmetric-like: port prediction fails)."""


@dataclass(frozen=True)
class Router:
    """A NAT router namespace: ``wan`` on the internet bridge, ``lan`` towards its host."""

    name: str
    netns: str
    public_address: str
    lan_address: str
    subnet: str


@dataclass(frozen=True)
class Host:
    """A host namespace. ``address`` is on its own ``eth0``; ``public_address`` is what the
    internet sees (the router's address for a host behind NAT)."""

    name: str
    netns: str
    address: str
    public_address: str
    router: Router | None = None


def _run_checked(argv: Sequence[str], *, input_text: str | None = None) -> str:
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetLabError(f"{' '.join(argv)}: timed out after {COMMAND_TIMEOUT_S} s") from exc
    if result.returncode != 0:
        raise NetLabError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def unavailable_reason() -> str | None:
    """Why a lab cannot be built here (not root, ``ip``/``nft`` missing), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "sysctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def run_in_netns(netns: str, fn: Callable[[], T], *, timeout: float | None = None) -> T:
    """Run ``fn()`` on a new thread that has entered network namespace ``netns``.

    Network namespaces are per thread in Linux: sockets that ``fn`` creates (and threads it
    starts) live in ``netns``, and keep working from any thread afterwards. So a whole Trio
    node can run inside a lab host, in process: ``run_in_netns(host.netns, lambda:
    trio.run(main))``. Returns ``fn``'s result or re-raises its exception.

    Raises:
        NetLabError: the namespace cannot be entered, or ``timeout`` passed.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            error.append(NetLabError(f"cannot open netns {netns}: {exc}"))
            return
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                error.append(NetLabError(f"setns {netns}: {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise NetLabError(f"function in netns {netns} still running after {timeout} s")
    if error:
        raise error[0]
    return result[0]


def list_netns() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = _run_checked(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL whatever still runs in ``netns`` (only namespaces a lab created)."""
    with contextlib.suppress(NetLabError):
        for line in _run_checked(["ip", "netns", "pids", netns]).split():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(line), 9)


def _delete_netns(netns: str) -> None:
    _kill_netns_processes(netns)
    with contextlib.suppress(NetLabError):
        _run_checked(["ip", "netns", "delete", netns])


def sweep_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces ``<prefix>-<pid>-...`` whose creating process no longer exists.

    Returns the names deleted. Namespaces of live runs (another pytest, say) are left alone.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-[0-9a-f]{{4}}-")
    deleted: list[str] = []
    for name in list_netns():
        match = pattern.match(name)
        if match and not _pid_alive(int(match.group(1))):
            _delete_netns(name)
            deleted.append(name)
    return deleted


class NetLab:
    """Builder and owner of one run's namespaces; a context manager (see module docstring)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not re.fullmatch(r"[a-z]{1,8}", prefix):
            raise ValueError("prefix: 1-8 lower-case letters")
        self.prefix = prefix
        self.run_id = f"{prefix}-{os.getpid()}-{secrets.token_hex(2)}"
        self._namespaces: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._hosts: dict[str, Host] = {}
        self._routers: dict[str, Router] = {}
        self._next_internet_host = FIRST_INTERNET_HOST
        self._next_subnet = 1
        self._inet: str | None = None
        self._closed = False
        self._udp_blocks: list[tuple[str, str | None]] = []
        self._fragment_blocks: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            sweep_stale(self.prefix)
            self._inet = self._add_netns("inet")
            self.ip(self._inet, "link", "add", "br0", "type", "bridge")
            self.ip(self._inet, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process and delete every namespace of this lab (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=PROCESS_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=PROCESS_STOP_TIMEOUT_S)
        for proc in self._procs:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for netns in reversed(self._namespaces):
            _delete_netns(netns)
        self._namespaces.clear()

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace this lab created (the internet switch first)."""
        return tuple(self._namespaces)

    # -- building ----------------------------------------------------------------------------

    def _add_netns(self, name: str) -> str:
        if self._closed:
            raise NetLabError("lab is closed")
        netns = f"{self.run_id}-{name}"
        _run_checked(["ip", "netns", "add", netns])
        self._namespaces.append(netns)
        self.ip(netns, "link", "set", "lo", "up")
        return netns

    def _check_name(self, name: str) -> None:
        if not _NAME_RE.match(name) or name == "inet":
            raise ValueError(f"name {name!r}: 1-12 lower-case letters/digits, not 'inet'")
        if name in self._hosts or name in self._routers:
            raise ValueError(f"name {name!r} already used in this lab")

    def _attach_to_internet(self, netns: str, ifname: str) -> str:
        """A veth from ``netns``'s ``ifname`` to the bridge; returns the address given."""
        assert self._inet is not None
        if self._next_internet_host > MAX_INTERNET_HOSTS:
            raise NetLabError("internet segment is full")
        index = self._next_internet_host
        self._next_internet_host += 1
        address = f"198.18.0.{index}"
        port = f"p{index}"
        _run_checked(
            [
                *_VETH,
                port,
                "netns",
                self._inet,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                netns,
            ]
        )
        self.ip(self._inet, "link", "set", port, "master", "br0", "up")
        self.ip(netns, "addr", "add", f"{address}/{INTERNET_PREFIX_LEN}", "dev", ifname)
        self.ip(netns, "link", "set", ifname, "up")
        return address

    def add_public_host(self, name: str) -> Host:
        """A host directly on the internet segment (a bootstrap node, a server)."""
        self._check_name(name)
        netns = self._add_netns(name)
        address = self._attach_to_internet(netns, "eth0")
        host = Host(name, netns, address, address)
        self._hosts[name] = host
        return host

    def add_nat_host(self, name: str, nat: NatMode = NatMode.ENDPOINT_INDEPENDENT) -> Host:
        """A host alone on a private /24 behind its own NAT router ``r<name>``."""
        self._check_name(name)
        router_name = f"r{name}"[:12]
        self._check_name(router_name)
        if self._next_subnet > MAX_NAT_ROUTERS:
            raise NetLabError("too many NAT routers")
        n = self._next_subnet
        self._next_subnet += 1
        router_ns = self._add_netns(router_name)
        public = self._attach_to_internet(router_ns, "wan")
        lan_address, host_address = f"10.{n}.0.1", f"10.{n}.0.2"
        host_ns = self._add_netns(name)
        _run_checked(
            [
                *_VETH,
                "lan",
                "netns",
                router_ns,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host_ns,
            ]
        )
        self.ip(router_ns, "addr", "add", f"{lan_address}/24", "dev", "lan")
        self.ip(router_ns, "link", "set", "lan", "up")
        self.ip(host_ns, "addr", "add", f"{host_address}/24", "dev", "eth0")
        self.ip(host_ns, "link", "set", "eth0", "up")
        self.ip(host_ns, "route", "add", "default", "via", lan_address)
        self.exec(router_ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        router = Router(
            router_name, router_ns, public, lan_address, PRIVATE_SUBNET_TEMPLATE.format(n=n)
        )
        self._routers[router_name] = router
        self.set_nat_mode(router, nat)
        host = Host(name, host_ns, host_address, public, router)
        self._hosts[name] = host
        return host

    def set_nat_mode(self, router: Router, nat: NatMode) -> None:
        """(Re)write the router's rules; existing conntrack entries are kept.

        Besides the masquerade rule, unsolicited packets from the internet to the router
        itself are dropped in its ``input`` hook, as a home router's firewall does. That
        matters for hole punching: without it, the first punch packet from a peer (arriving
        before our own outbound packet) would leave a confirmed conntrack entry for
        ``peer -> router:port`` and force masquerade to pick another port for our flow to
        that peer, so simultaneous punching would never meet. Dropped in ``input``, the
        entry is never confirmed.
        """
        ruleset = (
            f"table ip {NAT_TABLE}\n"
            f"delete table ip {NAT_TABLE}\n"
            f"table ip {NAT_TABLE} {{\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "wan" ip saddr {router.subnet} {nat.value}\n'
            "  }\n"
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            '    iifname "wan" ct state new counter drop\n'
            "  }\n"
            "}\n"
        )
        self.nft(router.netns, ruleset)

    # -- commands ----------------------------------------------------------------------------

    def ip(self, netns: str, *args: str) -> str:
        """``ip -n netns ARGS``; raises :class:`NetLabError` on failure."""
        return _run_checked(["ip", "-n", netns, *args])

    def nft(self, netns: str, ruleset: str) -> None:
        """Load an nftables script (``nft -f -``) inside ``netns``."""
        _run_checked(["ip", "netns", "exec", netns, "nft", "-f", "-"], input_text=ruleset)

    def exec(self, netns: str, argv: Sequence[str]) -> str:
        """Run ``argv`` inside ``netns``, check it succeeds, return its stdout."""
        return _run_checked(["ip", "netns", "exec", netns, *argv])

    def run(
        self,
        host: Host | Router,
        argv: Sequence[str],
        *,
        timeout: float = COMMAND_TIMEOUT_S,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host's namespace and wait (text output captured)."""
        full = ["ip", "netns", "exec", host.netns, *argv]
        result = subprocess.run(
            full, input=input_text, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise NetLabError(
                f"{' '.join(argv)} in {host.name}: exit {result.returncode}: "
                f"{result.stderr.strip()}"
            )
        return result

    def python(
        self, host: Host | Router, code: str, *args: str, timeout: float = COMMAND_TIMEOUT_S
    ) -> str:
        """Run a Python snippet (this interpreter) inside the host; return its stdout."""
        return self.run(host, [sys.executable, "-c", code, *args], timeout=timeout).stdout

    def popen(
        self,
        host: Host | Router,
        argv: Sequence[str],
        *,
        stdout: int | IO[bytes] | None = subprocess.PIPE,
        stderr: int | IO[bytes] | None = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the host; it is stopped at teardown (and dies with us)."""
        if self._closed:
            raise NetLabError("lab is closed")
        proc = popen_dies_with_parent(
            ["ip", "netns", "exec", host.netns, *argv], stdout=stdout, stderr=stderr
        )
        self._procs.append(proc)
        return proc

    # -- faults ------------------------------------------------------------------------------

    def _write_filter(self) -> None:
        assert self._inet is not None
        rules: list[str] = []
        for address, peer_address in self._udp_blocks:
            if peer_address is None:
                rules.append(f"ip saddr {address} meta l4proto udp counter drop")
                rules.append(f"ip daddr {address} meta l4proto udp counter drop")
            else:
                for src, dst in ((address, peer_address), (peer_address, address)):
                    rules.append(f"ip saddr {src} ip daddr {dst} meta l4proto udp counter drop")
        for address in self._fragment_blocks:
            for direction in ("saddr", "daddr"):
                rules.append(f"ip {direction} {address} ip frag-off & 0x3fff != 0 counter drop")
        ruleset = (
            f"table bridge {FILTER_TABLE}\n"
            f"delete table bridge {FILTER_TABLE}\n"
            f"table bridge {FILTER_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy accept;\n"
            + "".join(f"    {rule}\n" for rule in rules)
            + "  }\n"
            "}\n"
        )
        self.nft(self._inet, ruleset)

    def block_udp(self, host: Host, peer: Host | None = None) -> None:
        """Silently drop UDP between ``host`` and ``peer`` on the internet (both directions).

        Without ``peer``: drop all of ``host``'s UDP to and from the internet (TCP still
        works, so toxcore must fall back to TCP relays). The rules sit in the internet
        switch (an nftables ``bridge`` table), so senders see no error, exactly like loss on
        the way; they match public addresses, so they work for hosts behind NAT too.
        """
        peer_address = None if peer is None else peer.public_address
        self._udp_blocks.append((host.public_address, peer_address))
        self._write_filter()

    def drop_ip_fragments(self, host: Host, drop: bool = True) -> None:
        """Silently drop IP fragments to and from ``host``'s public address on the internet
        (a path that black-holes datagrams larger than its MTU); ``drop=False`` lets them
        through again. The internet switch sees them before any reassembly."""
        address = host.public_address
        if drop and address not in self._fragment_blocks:
            self._fragment_blocks.append(address)
        elif not drop and address in self._fragment_blocks:
            self._fragment_blocks.remove(address)
        self._write_filter()

    def unblock_udp(self, host: Host, peer: Host | None = None) -> None:
        """Remove the UDP blocks that involve ``host`` (only those with ``peer`` if given)."""
        self._udp_blocks = [
            (address, other)
            for address, other in self._udp_blocks
            if host.public_address not in (address, other)
            or (peer is not None and peer.public_address not in (address, other))
        ]
        self._write_filter()

    def udp_drop_count(self) -> int:
        """UDP packets the block rules dropped so far (sum of the nft counters)."""
        assert self._inet is not None
        if not self._udp_blocks:
            return 0
        out = self.exec(self._inet, ["nft", "list", "table", "bridge", FILTER_TABLE])
        return sum(int(m) for m in re.findall(r"counter packets (\d+)", out))

    def flush_conntrack(self, router: Router) -> None:
        """Forget every NAT mapping of ``router`` (``conntrack -F``): flows get new ones."""
        self.exec(router.netns, ["conntrack", "-F"])

    def renumber(self, router: Router) -> Router:
        """Give ``router`` a new public address (a new lease from the ISP) and flush conntrack.

        Returns the updated router; hosts behind it are updated in :meth:`host`.
        """
        if self._next_internet_host > MAX_INTERNET_HOSTS:
            raise NetLabError("internet segment is full")
        index = self._next_internet_host
        self._next_internet_host += 1
        new_address = f"198.18.0.{index}"
        self.ip(router.netns, "addr", "flush", "dev", "wan")
        self.ip(router.netns, "addr", "add", f"{new_address}/{INTERNET_PREFIX_LEN}", "dev", "wan")
        self.flush_conntrack(router)
        updated = Router(router.name, router.netns, new_address, router.lan_address, router.subnet)
        self._routers[router.name] = updated
        for name, host in list(self._hosts.items()):
            if host.router is not None and host.router.name == router.name:
                self._hosts[name] = Host(host.name, host.netns, host.address, new_address, updated)
        return updated

    def call_in(
        self, host: Host | Router, fn: Callable[[], T], *, timeout: float | None = None
    ) -> T:
        """``fn()`` on a thread inside the host's namespace (see :func:`run_in_netns`)."""
        return run_in_netns(host.netns, fn, timeout=timeout)

    def host(self, name: str) -> Host:
        """The current description of host ``name`` (after :meth:`renumber`, say)."""
        return self._hosts[name]
