"""The path MTU prober (tunnel.vpn.pmtu) on a virtual clock: no I/O, no sleeps."""

from __future__ import annotations

import pytest

from tunnel.vpn.pmtu import PathProber, ProbeTiming
from tunnel.wire.vpn import MAX_IP_PACKET_BYTES, Probe, ProbeAck

BASE = MAX_IP_PACKET_BYTES
LIMIT = 9000
NO_SEARCH = ProbeTiming(search=False)


class Path:
    """A virtual path: carries probes up to ``mtu`` bytes (None: every probe is lost)."""

    def __init__(self, prober: PathProber, mtu: int | None) -> None:
        self.prober = prober
        self.mtu = mtu
        self.now = 0.0
        self.sent: list[Probe] = []

    def step(self) -> list[Probe]:
        """Advance the clock to the prober's deadline, deliver what it sends."""
        deadline = self.prober.next_deadline()
        assert deadline is not None
        assert deadline >= self.now
        self.now = deadline
        probes = self.prober.poll(self.now)
        self.sent.extend(probes)
        for probe in probes:
            if self.mtu is not None and probe.size <= self.mtu:
                self.prober.handle_ack(ProbeAck(probe.nonce, probe.size), self.now + 0.05)
        return probes

    def run_until(self, t: float) -> None:
        while (deadline := self.prober.next_deadline()) is not None and deadline <= t:
            self.step()
        self.now = t


def _new(mtu: int | None, timing: ProbeTiming = NO_SEARCH) -> Path:
    prober = PathProber(LIMIT, timing=timing)
    path = Path(prober, mtu)
    prober.path_changed(0.0, direct=True)
    return path


def test_capped_until_a_probe_of_the_limit_is_acked() -> None:
    prober = PathProber(LIMIT, timing=NO_SEARCH)
    assert prober.cap == BASE
    assert prober.next_deadline() is None  # no direct path: nothing to send
    assert prober.poll(0.0) == []
    prober.path_changed(0.0, direct=True)
    [probe] = prober.poll(0.0)
    assert probe.size == LIMIT
    assert len(probe.encode()) == LIMIT + 1  # as large as a data packet with a LIMIT-byte IP
    assert prober.cap == BASE  # still capped while unanswered
    assert prober.handle_ack(ProbeAck(probe.nonce, probe.size), 0.1)
    assert prober.cap == LIMIT
    stats = prober.statistics()
    assert (stats.probes_sent, stats.probes_acked, stats.probes_lost) == (1, 1, 0)
    assert prober.next_deadline() == pytest.approx(0.1 + NO_SEARCH.reprobe_interval_s)


def test_wrong_or_stale_acks_are_ignored() -> None:
    prober = PathProber(LIMIT, timing=NO_SEARCH)
    prober.path_changed(0.0, direct=True)
    [probe] = prober.poll(0.0)
    assert not prober.handle_ack(ProbeAck(probe.nonce + 1, probe.size), 0.1)
    assert not prober.handle_ack(ProbeAck(probe.nonce, probe.size - 1), 0.1)
    assert prober.cap == BASE
    prober.path_changed(0.5, direct=True)  # a new path: the old round's ack means nothing
    assert not prober.handle_ack(ProbeAck(probe.nonce, probe.size), 0.6)
    assert prober.cap == BASE


def test_one_lost_probe_is_retried_within_the_round() -> None:
    prober = PathProber(LIMIT, timing=NO_SEARCH)
    prober.path_changed(0.0, direct=True)
    [first] = prober.poll(0.0)
    assert prober.poll(0.5) == []  # not yet
    [second] = prober.poll(1.0)
    assert second.nonce != first.nonce
    assert second.size == LIMIT
    assert prober.handle_ack(ProbeAck(second.nonce, second.size), 1.1)
    assert prober.cap == LIMIT
    assert prober.statistics().probes_lost == 1


def test_losses_keep_the_cap_and_retry_later() -> None:
    path = _new(None)
    path.run_until(10.0)
    prober = path.prober
    assert [p.size for p in path.sent] == [LIMIT] * NO_SEARCH.attempts
    assert prober.cap == BASE
    stats = prober.statistics()
    assert stats.rounds_failed == 1
    assert stats.probes_lost == NO_SEARCH.attempts
    retry = NO_SEARCH.attempts * NO_SEARCH.probe_interval_s + NO_SEARCH.retry_interval_s
    assert prober.next_deadline() == pytest.approx(retry)
    # the path heals: the retry raises the cap
    path.mtu = LIMIT
    path.run_until(retry)
    assert prober.cap == LIMIT
    assert len(path.sent) == NO_SEARCH.attempts + 1


def test_reprobe_failure_falls_back_at_once() -> None:
    path = _new(LIMIT)
    path.step()
    prober = path.prober
    assert prober.cap == LIMIT
    path.run_until(100.0)  # re-probed every 30 s, all acked
    assert prober.cap == LIMIT
    assert prober.statistics().probes_sent == 1 + 3
    assert all(p.size == LIMIT for p in path.sent)
    path.mtu = None  # the path starts dropping fragments
    [reprobe] = path.step()
    assert reprobe.size == LIMIT
    assert prober.cap == LIMIT  # one loss is not enough
    path.step()
    path.step()
    assert prober.cap == LIMIT
    path.step()  # the last probe's interval passed unanswered
    assert prober.cap == BASE
    stats = prober.statistics()
    assert stats.fallbacks == 1
    assert stats.rounds_failed == 1
    assert prober.next_deadline() == pytest.approx(path.now + NO_SEARCH.retry_interval_s)


def test_path_change_drops_the_cap_and_probes_at_once() -> None:
    path = _new(LIMIT)
    path.step()
    prober = path.prober
    assert prober.cap == LIMIT
    prober.path_changed(5.0, direct=True)  # a new address
    assert prober.cap == BASE
    assert prober.next_deadline() == 5.0
    assert prober.statistics().fallbacks == 1
    path.mtu = 1300  # the new path carries nothing above base
    path.run_until(5.0)
    assert [p.size for p in path.sent[-1:]] == [LIMIT]
    path.run_until(20.0)
    assert prober.cap == BASE
    # relayed: nothing is sent until a direct path is back
    prober.path_changed(21.0, direct=False)
    assert prober.next_deadline() is None
    assert prober.poll(1000.0) == []
    path.mtu = LIMIT
    prober.path_changed(1000.0, direct=True)
    path.now = 1000.0
    path.step()
    assert prober.cap == LIMIT


def test_binary_search_finds_a_size_between_base_and_limit() -> None:
    timing = ProbeTiming()
    assert timing.search
    path = _new(1440, timing)
    prober = path.prober
    path.run_until(200.0)
    assert BASE < prober.cap <= 1440
    assert 1440 - prober.cap < timing.search_step
    assert prober.statistics().fallbacks == 0
    assert path.sent[0].size == LIMIT  # the whole limit first
    # a later search (the path may heal) never lowers the cap it proved
    assert prober.statistics().fallbacks == 0
    # the path heals: the next search finds the whole limit
    path.mtu = LIMIT
    path.run_until(200.0 + timing.retry_interval_s + 1.0)
    assert prober.cap == LIMIT
    # afterwards only the cap in use is re-probed
    sent = len(path.sent)
    path.run_until(path.now + 3 * timing.reprobe_interval_s)
    assert [p.size for p in path.sent[sent:]] == [LIMIT] * 3


def test_binary_search_on_a_path_that_carries_nothing_more() -> None:
    path = _new(BASE, ProbeTiming())
    prober = path.prober
    path.run_until(59.0)
    assert prober.cap == BASE
    # it gave up and waits for the retry (no probes in between)
    deadline = prober.next_deadline()
    assert deadline is not None
    assert deadline > 59.0
    sent = len(path.sent)
    path.run_until(deadline)
    assert len(path.sent) == sent + 1
    assert path.sent[-1].size == LIMIT


def test_failed_reprobe_with_search_falls_back_then_searches_below() -> None:
    path = _new(LIMIT, ProbeTiming())
    path.step()
    prober = path.prober
    assert prober.cap == LIMIT
    path.mtu = 4000
    path.run_until(40.0)
    assert prober.statistics().fallbacks == 1
    path.run_until(200.0)
    assert BASE < prober.cap <= 4000


def test_limit_must_exceed_base() -> None:
    with pytest.raises(ValueError, match="larger"):
        PathProber(BASE)
