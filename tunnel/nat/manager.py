"""Issue 11: direct paths to every friend of one node (sans-IO), and the extension's negotiation.

:class:`DirectPaths` owns one :class:`~tunnel.nat.probe.DirectPathCore` per friend that speaks
the extension. It is the :class:`tunnel.core.DatagramCore` for UDP kind ``0xB8`` (probes are
matched to their friend by the token they carry, our own per-friend token), and it produces
the friend-connection messages the Node carries:

* **negotiation**: when a friend comes online we send :class:`~tunnel.nat.wire.Hello` as a
  lossless packet with an id toxcore 0.2.18 drops without telling the application
  (``0x9E``, :data:`tunnel.friends.messenger.EXTENSION_LOSSLESS_FIRST`); only a friend whose
  Hello arrived gets a core, and only then does ``0xB8`` (custom lossless Endpoints, UDP
  probes) go to it. A toxcore friend never answers, so it never sees ``0xB8`` traffic and keeps
  toxcore's own DHT NAT-ping hole punching, which the DHT does anyway;
* the cores' :class:`~tunnel.nat.wire.Endpoints` (custom lossless ``0xB8``).

Our candidates come from the caller (:meth:`set_local`: interface addresses and the public
addresses DHT nodes report for us, :func:`local_candidates`), and the path events
(:meth:`events`) tell the caller when to point the friend's net_crypto session at a direct
address (up, moved) or let it fall back to a relay (down).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.crypto import Rng
from tunnel.errors import BadPacket
from tunnel.nat.probe import DirectPathCore, DirectPathEvent, classify_nat
from tunnel.nat.wire import (
    EXTENSION_PACKET_ID,
    HELLO_PACKET_ID,
    Candidate,
    CandidateSource,
    Hello,
    NatBehaviour,
    Probe,
)
from tunnel.wire.ip_port import Addr, IPPort

MAX_OBSERVED_CANDIDATES = 4
OBSERVATION_WINDOW_S = 30.0
"""Public addresses reported for us within this long of the newest report count as current
(a rebinding NAT leaves old reports behind; they age out of the candidates)."""


@dataclass(frozen=True, slots=True)
class ToFriend:
    """A lossless packet for the friend connection of ``public_key`` (``extension``: send with
    :meth:`tunnel.friends.messenger.Messenger.send_extension`, else as custom lossless)."""

    public_key: bytes
    data: bytes
    extension: bool


@dataclass(slots=True)
class DirectPathsStats:
    hellos_sent: int = 0
    hellos_received: int = 0
    bad_packets: int = 0
    unknown_token: int = 0
    send_failures: int = 0
    """Friend-connection messages the caller could not queue (friend just went offline)."""


def local_candidates(
    local: list[Addr], observed: list[tuple[float, Addr]]
) -> tuple[list[Candidate], NatBehaviour]:
    """Our candidates and NAT behaviour from interface addresses (``local``, with our UDP
    port) and ``(when, public address)`` reports from DHT nodes (one per node, newest)."""
    candidates = [Candidate(CandidateSource.LOCAL, IPPort.from_addr(a)) for a in local]
    if not observed:
        return candidates, NatBehaviour.UNKNOWN
    newest, (newest_ip, _) = max(observed)
    # A report with another IP is from before a renumbering (an old lease), not a symmetric
    # mapping (those keep the IP and change the port): leave it out.
    current = sorted(
        (
            (when, addr)
            for when, addr in observed
            if when >= newest - OBSERVATION_WINDOW_S and addr[0] == newest_ip
        ),
        reverse=True,
    )
    addrs: list[Addr] = []
    for _, addr in current:
        if addr not in addrs:
            addrs.append(addr)
    chronological = [addr for _, addr in reversed(current)]  # port sequences run forward
    nat = classify_nat(local[0] if local else ("", 0), chronological)
    if nat is NatBehaviour.OPEN:
        return candidates, nat
    seen = {c.address.to_addr() for c in candidates}
    for addr in addrs[:MAX_OBSERVED_CANDIDATES]:
        if addr not in seen:
            candidates.append(Candidate(CandidateSource.OBSERVED, IPPort.from_addr(addr)))
    return candidates, nat


class DirectPaths:
    """Direct-path cores for every friend speaking the extension (module docstring)."""

    def __init__(
        self, rng: Rng, now: float, *, probing: bool = True, large_lossless: int = 0
    ) -> None:
        self._rng = rng
        self._now = now
        self.probing = probing
        self.large_lossless = large_lossless
        """The largest lossless payload we announce in our Hello (0: none beyond 1373)."""
        self.peer_large_lossless: dict[bytes, int] = {}
        """Extension peers' announced large lossless limits (absent: none)."""
        """False (UDP off): Hellos are still exchanged, so :attr:`extension_peers` is known,
        but no direct path is probed."""
        self.extension_peers: set[bytes] = set()
        """Online friends whose Hello arrived: ``tunnel`` nodes, not toxcore clients."""
        self.stats = DirectPathsStats()
        self.cores: dict[bytes, DirectPathCore] = {}
        self._by_token: dict[bytes, bytes] = {}
        self._online: set[bytes] = set()
        self._to_friend: list[ToFriend] = []
        self._events: list[tuple[bytes, DirectPathEvent]] = []
        self._local: list[Candidate] = []
        self._nat = NatBehaviour.UNKNOWN

    # ----------------------------------------------------------------- friend connection

    def friend_online(self, public_key: bytes, now: float) -> None:
        """The friend's Messenger connection is up: offer the extension."""
        self._online.add(public_key)
        hello = Hello(large_lossless=self.large_lossless)
        self._to_friend.append(ToFriend(public_key, hello.encode(), extension=True))
        self.stats.hellos_sent += 1

    def friend_offline(self, public_key: bytes) -> None:
        """Forget the friend's core (a new one is negotiated when it is back)."""
        self._online.discard(public_key)
        self.extension_peers.discard(public_key)
        self.peer_large_lossless.pop(public_key, None)
        core = self.cores.pop(public_key, None)
        if core is not None:
            self._by_token.pop(core.token, None)

    def on_extension(self, public_key: bytes, data: bytes, now: float) -> None:
        """An extension packet (``0x90..0x9F``) from the friend."""
        self._now = now
        if not data or data[0] != HELLO_PACKET_ID:
            return
        try:
            hello = Hello.decode(data)
        except BadPacket:
            self.stats.bad_packets += 1
            return
        self.stats.hellos_received += 1
        if public_key in self._online:
            self.extension_peers.add(public_key)
            if hello.large_lossless:
                self.peer_large_lossless[public_key] = hello.large_lossless
            else:
                self.peer_large_lossless.pop(public_key, None)
            if self.probing:
                self._core(public_key, now)

    def on_friend_message(self, public_key: bytes, data: bytes, now: float) -> None:
        """A custom lossless ``0xB8`` packet from the friend."""
        self._now = now
        core = self.cores.get(public_key)
        if core is None:
            self.stats.bad_packets += 1  # 0xB8 before Hello: not negotiated
            return
        core.on_friend_message(data, now)
        self._collect(public_key, core)

    def _core(self, public_key: bytes, now: float) -> DirectPathCore:
        core = self.cores.get(public_key)
        if core is None:
            core = DirectPathCore(self._rng, now)
            self.cores[public_key] = core
            self._by_token[core.token] = public_key
            if self._local:
                core.set_local(self._local, self._nat, now)
                self._collect(public_key, core)
        return core

    def set_local(self, candidates: list[Candidate], nat: NatBehaviour, now: float) -> None:
        """Our current candidates (each core sends them to its friend when they change)."""
        self._now = now
        if not candidates:
            return
        self._local = list(candidates)
        self._nat = nat
        for public_key, core in self.cores.items():
            core.set_local(self._local, nat, now)
            self._collect(public_key, core)

    @property
    def local(self) -> list[Candidate]:
        """Our candidates as last set."""
        return list(self._local)

    @property
    def nat(self) -> NatBehaviour:
        """Our own NAT behaviour as last classified."""
        return self._nat

    def messages_to_friends(self) -> list[ToFriend]:
        """Drain the friend-connection packets to send."""
        out, self._to_friend = self._to_friend, []
        return out

    def events(self) -> list[tuple[bytes, DirectPathEvent]]:
        """Drain ``(friend public key, path event)`` pairs."""
        out, self._events = self._events, []
        return out

    def status(self, public_key: bytes) -> str | None:
        """The friend's direct-path line for ``tunnel status`` (None: not negotiated)."""
        core = self.cores.get(public_key)
        return None if core is None else core.status()

    def direct_addr(self, public_key: bytes) -> Addr | None:
        core = self.cores.get(public_key)
        return None if core is None else core.addr

    def _collect(self, public_key: bytes, core: DirectPathCore) -> None:
        for data in core.messages_to_friend():
            self._to_friend.append(ToFriend(public_key, data, extension=False))
        for event in core.events():
            self._events.append((public_key, event))

    # ----------------------------------------------------------------- DatagramCore (0xB8)

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self._now = now
        try:
            probe = Probe.decode(data)
        except BadPacket:
            self.stats.bad_packets += 1
            return
        public_key = self._by_token.get(probe.token)
        if public_key is None:
            self.stats.unknown_token += 1
            return
        core = self.cores[public_key]
        core.receive(data, addr, now)
        self._collect(public_key, core)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out: list[tuple[Addr, bytes]] = []
        for core in self.cores.values():
            out.extend(core.datagrams_to_send())
        return out

    def next_deadline(self) -> float | None:
        deadlines = [d for core in self.cores.values() if (d := core.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        for public_key, core in self.cores.items():
            deadline = core.next_deadline()
            if deadline is not None and deadline <= now:
                core.handle_timer(now)
            self._collect(public_key, core)


__all__ = [
    "EXTENSION_PACKET_ID",
    "DirectPaths",
    "DirectPathsStats",
    "ToFriend",
    "local_candidates",
]
