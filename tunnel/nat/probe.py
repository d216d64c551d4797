"""Issue 11: finding and keeping a direct UDP path to one friend (sans-IO, ICE-like, small).

One :class:`DirectPathCore` per friend. It is a :class:`tunnel.core.DatagramCore` for the
probe datagrams (:class:`tunnel.nat.wire.Probe`) and, besides, produces and consumes the
:class:`~tunnel.nat.wire.Endpoints` messages the caller carries over the (already working,
authenticated) friend connection: ``messages_to_friend()`` / ``on_friend_message()``.

Coordination. Whoever has candidates first sends its Endpoints; the friend answers with its
own at once and starts probing; we start probing when its answer arrives, one relay RTT
later. Both sides then probe every ``PROBE_INTERVAL_S`` for ``PROBE_WINDOW_S``, so the two
bursts overlap and each side's outgoing probes open its own NAT for the other's (simultaneous
open). A probe from an address we had not probed yet (a peer-reflexive candidate: a
symmetric NAT's fresh mapping) is answered with an ack *and* a probe of our own, so both
sides confirm. Against a symmetric NAT with sequential ports we also probe the next
``PREDICT_SPAN`` ports above its observed one (port prediction); fully random mappings cannot
be predicted and then the friend stays on the relay (``status()`` says so).

Keeping the path. While direct, a probe goes out every ``KEEPALIVE_INTERVAL_S`` (NAT
mappings live >= 30 s for UDP in Linux conntrack; the acks prove the path both ways); traffic
the caller reports through :meth:`heard_from` counts as well. Nothing heard for
``PATH_DEAD_AFTER_S``: the path is down (the caller falls back to a relay; the stream itself
is net_crypto's and survives), and a new exchange starts after ``RETRY_INTERVALS_S``
(backing off). A token-valid packet from a new address while direct moves the path there
(the friend's NAT rebound).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from tunnel.crypto import Rng
from tunnel.errors import BadPacket
from tunnel.nat.wire import (
    TOKEN_BYTES,
    Candidate,
    CandidateSource,
    Endpoints,
    NatBehaviour,
    Probe,
)
from tunnel.wire.ip_port import Addr

PROBE_INTERVAL_S = 0.1
PROBE_WINDOW_S = 5.0
PREDICT_SPAN = 8
KEEPALIVE_INTERVAL_S = 2.0
"""Also the liveness check: a 14-byte probe each way every 2 s per direct friend."""
PATH_DEAD_AFTER_S = 5.0
"""Two keepalives unanswered: the path is down (net_crypto itself leaves UDP after 8 s; a
false alarm on a congested path costs one probing round, net_crypto keeps its UDP path)."""
RETRY_INTERVALS_S = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0)
"""After a failed probing round (a new candidate of either side starts a round at once)."""
PATH_DOWN_RETRY_S = 0.5
"""After a dead path: a fresh exchange almost at once (a NAT that just rebound)."""
START_DELAY_MS = 0


@dataclass(frozen=True, slots=True)
class DirectPathUp:
    addr: Addr
    rtt_s: float
    predicted: bool


@dataclass(frozen=True, slots=True)
class DirectPathDown:
    addr: Addr


@dataclass(frozen=True, slots=True)
class DirectPathMoved:
    old: Addr
    new: Addr


DirectPathEvent = DirectPathUp | DirectPathDown | DirectPathMoved


@dataclass(slots=True)
class DirectPathStats:
    probes_sent: int = 0
    probes_received: int = 0
    bad_packets: int = 0
    wrong_token: int = 0
    rounds: int = 0
    paths_up: int = 0
    paths_down: int = 0
    moves: int = 0


def classify_nat(local: Addr, observed: list[Addr]) -> NatBehaviour:
    """Our NAT's mapping from one socket's public address as seen by different servers."""
    if not observed:
        return NatBehaviour.UNKNOWN
    if all(addr == local for addr in observed):
        return NatBehaviour.OPEN
    if len({addr for addr in observed}) == 1:
        return NatBehaviour.ENDPOINT_INDEPENDENT
    ports = [port for _, port in observed]
    steps = [b - a for a, b in itertools.pairwise(ports)]
    if steps and all(0 < step <= PREDICT_SPAN for step in steps):
        return NatBehaviour.SYMMETRIC_SEQUENTIAL
    return NatBehaviour.SYMMETRIC_RANDOM


class DirectPathCore:
    """The direct-path state machine for one friend (see the module docstring)."""

    def __init__(self, rng: Rng, now: float) -> None:
        self._rng = rng
        self.token = rng(TOKEN_BYTES)
        self.stats = DirectPathStats()
        self._out: list[tuple[Addr, bytes]] = []
        self._to_friend: list[bytes] = []
        self._events: list[DirectPathEvent] = []
        self._local: tuple[Candidate, ...] = ()
        self._nat = NatBehaviour.UNKNOWN
        self._generation = 0
        self._sent_generation = -1
        self._remote: Endpoints | None = None
        self._remote_generation = -1
        self._targets: dict[Addr, bool] = {}  # addr -> predicted
        self._probe_until = -1.0
        self._next_probe = float("inf")
        self._sent_at: dict[int, float] = {}
        self._seq = 0
        self.addr: Addr | None = None
        self._predicted = False
        self._last_heard = -1e18
        self._next_keepalive = float("inf")
        self._retry_at = float("inf")
        self._retries = 0
        self._now = now

    # ----------------------------------------------------------------- friend-connection side

    def set_local(self, candidates: list[Candidate], nat: NatBehaviour, now: float) -> None:
        """Our current candidates; sends them to the friend if they changed (or first time)."""
        self._now = now
        if tuple(candidates) == self._local and nat == self._nat and self._sent_generation >= 0:
            return
        self._local = tuple(candidates)
        self._nat = nat
        self._generation += 1
        self._send_endpoints()

    def _send_endpoints(self) -> None:
        message = Endpoints(self._generation, self.token, self._nat, START_DELAY_MS, self._local)
        self._to_friend.append(message.encode())
        self._sent_generation = self._generation

    def messages_to_friend(self) -> list[bytes]:
        """Drain the ``0xB8`` lossless packets to send over the friend connection."""
        out, self._to_friend = self._to_friend, []
        return out

    def on_friend_message(self, data: bytes, now: float) -> None:
        """A ``0xB8`` lossless packet from the friend (bad ones are counted, dropped)."""
        self._now = now
        try:
            message = Endpoints.decode(data)
        except BadPacket:
            self.stats.bad_packets += 1
            return
        if message.generation < self._remote_generation:
            return  # stale
        fresh = message.generation > self._remote_generation
        self._remote = message
        self._remote_generation = message.generation
        if fresh and self._sent_generation == self._generation and self._local:
            # answer (set_local() sends ours if we had none): the friend starts probing when
            # ours arrives, we start now
            self._send_endpoints()
        if self._next_probe == float("inf") or (fresh and self.addr is None):
            self._start_probing(now)  # (re)start with the friend's current candidates

    def _start_probing(self, now: float) -> None:
        remote = self._remote
        if remote is None or self.addr is not None:
            return
        # Predicted ports first: a symmetric NAT with sequential ports gives our k-th new
        # destination its base+k port, so both sides walking base+1, base+2 ... in the same
        # order meet (each side's observed address is its latest mapping).
        self._targets = {}
        if remote.nat is NatBehaviour.SYMMETRIC_SEQUENTIAL:
            for candidate in remote.candidates:
                if candidate.source is CandidateSource.OBSERVED:
                    host, port = candidate.address.to_addr()
                    for step in range(1, PREDICT_SPAN + 1):
                        if port + step <= 0xFFFF:
                            self._targets.setdefault((host, port + step), True)
        for candidate in remote.candidates:
            addr = candidate.address.to_addr()
            self._targets.setdefault(addr, candidate.source is CandidateSource.PREDICTED)
        self._probe_until = now + PROBE_WINDOW_S
        self._next_probe = now
        self._retry_at = float("inf")
        self.stats.rounds += 1

    # ----------------------------------------------------------------- datagram side

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self._now = now
        try:
            probe = Probe.decode(data)
        except BadPacket:
            self.stats.bad_packets += 1
            return
        if probe.token != self.token:
            self.stats.wrong_token += 1
            return
        self.stats.probes_received += 1
        remote = self._remote
        if remote is None:
            return  # cannot answer without the friend's token
        if not probe.ack:
            self._out.append((addr, Probe(remote.token, probe.sequence, ack=True).encode()))
            if self.addr is None and addr not in self._targets:
                # peer-reflexive: probe it too, so the friend can confirm this path
                self._targets[addr] = False
                self._send_probe(addr, remote.token)
        self._heard(addr, now, probe)

    def _heard(self, addr: Addr, now: float, probe: Probe) -> None:
        if self.addr is None:
            if not probe.ack:
                return
            sent = self._sent_at.get(probe.sequence, now)
            self.addr = addr
            self._predicted = self._targets.get(addr, False)
            self._last_heard = now
            self._next_keepalive = now + KEEPALIVE_INTERVAL_S
            self._next_probe = float("inf")
            self._retries = 0
            self.stats.paths_up += 1
            self._events.append(DirectPathUp(addr, max(0.0, now - sent), self._predicted))
            return
        if addr != self.addr:
            old, self.addr = self.addr, addr
            self.stats.moves += 1
            self._events.append(DirectPathMoved(old, addr))
        self._last_heard = now

    def silent_for(self, now: float) -> float:
        """Seconds since the friend was last heard on the direct path (0 without a path)."""
        return 0.0 if self.addr is None else max(0.0, now - self._last_heard)

    def heard_from(self, addr: Addr, now: float) -> None:
        """The caller authenticated traffic from the friend at ``addr`` (e.g. net_crypto)."""
        if self.addr is not None and addr == self.addr:
            self._last_heard = max(self._last_heard, now)

    def _send_probe(self, addr: Addr, token: bytes) -> None:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._sent_at[self._seq] = self._now
        if len(self._sent_at) > 4096:
            self._sent_at.pop(next(iter(self._sent_at)))
        self._out.append((addr, Probe(token, self._seq).encode()))
        self.stats.probes_sent += 1

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        deadline = min(self._next_probe, self._next_keepalive, self._retry_at)
        if self.addr is not None:
            deadline = min(deadline, self._last_heard + PATH_DEAD_AFTER_S)
        return None if deadline == float("inf") else deadline

    def handle_timer(self, now: float) -> None:
        self._now = now
        remote = self._remote
        if self.addr is not None:
            if now - self._last_heard >= PATH_DEAD_AFTER_S:
                self._path_down(now)
            elif now >= self._next_keepalive and remote is not None:
                self._send_probe(self.addr, remote.token)
                self._next_keepalive = now + KEEPALIVE_INTERVAL_S
        elif now >= self._next_probe and remote is not None:
            if now > self._probe_until:
                self._next_probe = float("inf")
                self._schedule_retry(now)
            else:
                for addr in self._targets:
                    self._send_probe(addr, remote.token)
                self._next_probe = now + PROBE_INTERVAL_S
        if now >= self._retry_at:
            self._retry_at = float("inf")
            self._generation += 1
            self._send_endpoints()
            self._start_probing(now)

    def _schedule_retry(self, now: float) -> None:
        index = min(self._retries, len(RETRY_INTERVALS_S) - 1)
        self._retry_at = now + RETRY_INTERVALS_S[index]
        self._retries += 1

    def _path_down(self, now: float) -> None:
        assert self.addr is not None
        self._events.append(DirectPathDown(self.addr))
        self.stats.paths_down += 1
        self.addr = None
        self._next_keepalive = float("inf")
        self._retries = 0
        self._retry_at = now + PATH_DOWN_RETRY_S

    # ----------------------------------------------------------------- results

    def events(self) -> list[DirectPathEvent]:
        out, self._events = self._events, []
        return out

    @property
    def remote_nat(self) -> NatBehaviour:
        return self._remote.nat if self._remote is not None else NatBehaviour.UNKNOWN

    def status(self) -> str:
        """One line for ``tunnel status``: the path and why."""
        if self.addr is not None:
            how = " (port prediction)" if self._predicted else ""
            return f"direct udp {self.addr[0]}:{self.addr[1]}{how}"
        if self._next_probe != float("inf"):
            return "relay (probing for a direct path)"
        random = NatBehaviour.SYMMETRIC_RANDOM
        if random in (self._nat, self.remote_nat):
            return "relay (symmetric NAT with random ports: no direct path)"
        if self._remote is None:
            return "relay (no endpoints from the friend yet)"
        return "relay (direct probing failed, will retry)"
