"""Path MTU probing between two of our own VPN members (issue 9, large IP packets).

Two members whose HELLOs agreed on IP packets larger than toxcore's 1372 bytes send them as
one net_crypto packet each, so the UDP datagram is larger than the usual 1500-byte link MTU
and gets IP-fragmented on the way. A path that drops IP fragments (some firewalls, some
mobile networks) would black-hole every large packet. So a member's route stays capped at
``base`` (1372) until a **probe** of the agreed size, sent over the same direct UDP path as
the data packets and exactly as large (:class:`tunnel.wire.vpn.Probe`), has been answered
(:class:`tunnel.wire.vpn.ProbeAck`); only then is the cap raised to that size.

Sans-IO, one :class:`PathProber` per member with a large limit; the caller (the Trio control
plane, :mod:`tunnel.io.vpn_large`) feeds it the time and what happened, sends what
:meth:`PathProber.poll` returns and calls it again at :meth:`PathProber.next_deadline`::

    prober = PathProber(limit)                      # a large limit was agreed
    prober.path_changed(now, direct)                # direct UDP path appeared/changed/gone
    for probe in prober.poll(now): send probe.encode() lossy over the direct path
    prober.handle_ack(ack, now)                     # a ProbeAck came back
    engine cap: prober.cap (base until a probe of a larger size was acknowledged)

A **round** sends up to ``attempts`` probes of one size, ``probe_interval_s`` apart, and
ends with the first ack of one of its probes or when the last probe's interval passed
without one (the round failed). A **search** first tries the whole agreed limit; with
``search`` on (the default), a failed round is followed at once by a binary search between
the proven cap and the failed size (each ack raises the cap and tries halfway up, each
failure halfway down), until less than ``search_step`` bytes are left: a path that drops
fragments but has a link MTU above toxcore's still gets a cap above ``base``. Afterwards the
cap in use is **re-probed** every ``reprobe_interval_s``; a failed re-probe drops the cap to
``base`` at once (and searches again). A search that ended below the limit is started
again ``retry_interval_s`` later (from the limit down; meanwhile the cap it proved stays in
use, and its failed rounds do not lower it), so a path that heals gets the whole limit.
A new path (:meth:`PathProber.path_changed`: direct UDP appeared, changed address, or went
away) drops the cap to ``base`` and searches at once. While there is no direct path nothing
is sent (the caller caps the route at ``base``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.wire.vpn import MAX_IP_PACKET_BYTES, Probe, ProbeAck

PROBE_INTERVAL_S = 1.0
"""Between two probes of one round (and the wait for the last one's ack)."""
PROBE_ATTEMPTS = 3
"""Probes of one size without an ack before the round fails."""
REPROBE_INTERVAL_S = 30.0
"""While a large cap is in use: how often the path is checked again."""
RETRY_INTERVAL_S = 60.0
"""After a failed search: when the path is tried again at the full limit."""
SEARCH_STEP_BYTES = 32
"""The binary search stops when the interval left is narrower than this."""
NONCE_MOD = 1 << 32


@dataclass(frozen=True)
class ProbeTiming:
    """The prober's timers and counts (see module docstring)."""

    probe_interval_s: float = PROBE_INTERVAL_S
    attempts: int = PROBE_ATTEMPTS
    reprobe_interval_s: float = REPROBE_INTERVAL_S
    retry_interval_s: float = RETRY_INTERVAL_S
    search: bool = True
    search_step: int = SEARCH_STEP_BYTES


@dataclass(frozen=True)
class ProberStats:
    """A snapshot of one prober's counters and state."""

    limit: int
    cap: int
    probing: int | None
    """The size being probed right now (None between rounds)."""
    direct: bool
    probes_sent: int
    probes_acked: int
    probes_lost: int
    rounds_failed: int
    fallbacks: int
    """Times a large cap in use fell back to ``base`` (failed re-probe or a new path)."""


class PathProber:
    """Probes one member's direct path for the largest packet it carries (module docstring)."""

    def __init__(
        self,
        limit: int,
        *,
        base: int = MAX_IP_PACKET_BYTES,
        timing: ProbeTiming | None = None,
        first_nonce: int = 1,
    ) -> None:
        if limit <= base:
            raise ValueError("limit must be larger than base")
        self.limit = limit
        self.base = base
        self.timing = timing or ProbeTiming()
        self.cap = base
        """The largest IP packet the path is known to carry (``base`` until proven)."""
        self._direct = False
        self._nonce = first_nonce % NONCE_MOD
        self._outstanding: dict[int, int] = {}  # nonce -> size, probes of the current round
        self._size: int | None = None  # size probed by the current round
        self._sent = 0  # probes sent in the current round
        self._next: float | None = None  # next probe, round timeout or next round
        self._verify = False  # the next rounds re-check the cap in use (no search)
        self._high = limit  # search: the largest size still worth trying
        self._search_at: float | None = None  # verify mode below the limit: search again then
        self.probes_sent = 0
        self.probes_acked = 0
        self.probes_lost = 0
        self.rounds_failed = 0
        self.fallbacks = 0

    # -- inputs ------------------------------------------------------------------------------

    def path_changed(self, now: float, direct: bool) -> None:
        """The member's direct UDP path appeared, changed address, or is gone (``direct``
        False: relayed). Whatever was proven is for the old path: back to ``base``, and with
        a direct path a new search starts at once."""
        self._direct = direct
        self._fall_back()
        self._start_search()
        self._next = now if direct else None

    def handle_ack(self, ack: ProbeAck, now: float) -> bool:
        """An ack from the member; True if it raised the cap (stale or unknown acks: False)."""
        size = self._outstanding.get(ack.nonce)
        if size is None or size != ack.size or size != self._size:
            return False
        self.probes_acked += 1
        self._end_round()
        raised = size > self.cap
        self.cap = size
        if self._verify:
            self._next = now + self.timing.reprobe_interval_s
        elif not self._search_left():
            self._search_over(now)
        else:
            self._next = now  # binary search: the next size up at once
        return raised

    def poll(self, now: float) -> list[Probe]:
        """Probes to send now (also times out unanswered rounds; the cap may drop)."""
        if not self._direct or self._next is None or now < self._next:
            return []
        timing = self.timing
        if self._size is not None and self._sent >= timing.attempts:
            self._round_failed(now)
            if self._next is None or now < self._next:
                return []
        if self._size is None:
            if self._verify and self._search_at is not None and now >= self._search_at:
                self._start_search()  # below the limit: look for more now and then
            self._size = self._round_size()
        elif self._sent:
            self.probes_lost += 1  # the previous probe of this round went unanswered
        size = self._size
        nonce = self._nonce
        self._nonce = (nonce + 1) % NONCE_MOD
        self._outstanding[nonce] = size
        self._sent += 1
        self.probes_sent += 1
        self._next = now + timing.probe_interval_s
        return [Probe(nonce, size)]

    # -- outputs -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`poll` wants to run next (None: nothing planned)."""
        return self._next if self._direct else None

    @property
    def probing(self) -> int | None:
        """The size the current round probes (None between rounds)."""
        return self._size

    def statistics(self) -> ProberStats:
        """Counters and state for ``tunnel status``."""
        return ProberStats(
            self.limit,
            self.cap,
            self._size,
            self._direct,
            self.probes_sent,
            self.probes_acked,
            self.probes_lost,
            self.rounds_failed,
            self.fallbacks,
        )

    # -- internals ---------------------------------------------------------------------------

    def _start_search(self) -> None:
        self._end_round()
        self._verify = False
        self._high = self.limit
        self._search_at = None

    def _search_over(self, now: float) -> None:
        """Keep the cap the search proved: re-probe it, and search again later if it is
        below the limit (the path may have healed)."""
        self._verify = True
        self._next = now + self.timing.reprobe_interval_s
        if self.cap < self.limit:
            self._search_at = now + self.timing.retry_interval_s

    def _end_round(self) -> None:
        self._outstanding.clear()
        self._size = None
        self._sent = 0

    def _search_left(self) -> bool:
        """Whether sizes above the cap remain worth a round."""
        if self._high <= self.cap:
            return False
        if self._high == self.limit:
            return True  # the whole limit is always worth a try
        return self.timing.search and self._high - self.cap >= self.timing.search_step

    def _round_size(self) -> int:
        if self._verify:
            return self.cap
        if self._high == self.limit:
            return self.limit  # first try the whole limit
        return self.cap + (self._high - self.cap + 1) // 2

    def _round_failed(self, now: float) -> None:
        """The round's last probe went unanswered for a whole interval."""
        assert self._size is not None
        size = self._size
        self.probes_lost += 1
        self.rounds_failed += 1
        self._end_round()
        if self._verify:
            # a re-probe of the cap in use failed: the path no longer carries it
            self._fall_back()
            self._verify = False
            self._search_at = None
        self._high = size - 1
        if self.timing.search and self._search_left():
            self._next = now  # the next smaller size at once
            return
        # search over: keep what it proved (base if nothing), check it or retry later
        if self.cap > self.base:
            self._search_over(now)
        else:
            self._high = self.limit
            self._next = now + self.timing.retry_interval_s

    def _fall_back(self) -> None:
        if self.cap > self.base:
            self.fallbacks += 1
        self.cap = self.base
