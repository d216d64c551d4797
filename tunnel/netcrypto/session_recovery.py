"""What the peer tells a net_crypto session's send side, and what we resend (tox-protocol.md
6.7, 6.8): the cumulative acknowledgement (``buffer_start``) in every data packet, request
packets listing the holes in the peer's receive window, and our tail probes.

Acknowledged packets leave the send array and feed the congestion controller (delivery and
RTT samples, Karn's rule: none from a packet sent twice); requested packets sent more than
``resend_delay`` ago are queued for a resend, and only recent ones count as congestion
losses. The tail probe (ours, not toxcore's) resends the newest packet in flight when the
peer has said nothing for a while, so losses at the end of a burst are requested too.

Part of :class:`tunnel.netcrypto.session.Session` (a mixin; the send array and the
transmission live on the session).
"""

from __future__ import annotations

from collections import Counter
from heapq import heappush
from typing import TYPE_CHECKING

from tunnel.netcrypto.congestion import Congestion
from tunnel.netcrypto.large import LargeSend
from tunnel.netcrypto.session_types import PACKET_NUMBER_MASK as _U32
from tunnel.wire.netcrypto import decode_request_untrusted

if TYPE_CHECKING:
    from tunnel.netcrypto.session import _Sent

LOSS_RECENT_S = 0.25
TAIL_PROBE_MIN_S = 0.2
TAIL_PROBE_ACK_DELAY_S = 0.05
TAIL_PROBE_MAX_S = 2.0


class SessionRecovery:
    """Acknowledgements, loss reports and tail probes of a
    :class:`~tunnel.netcrypto.session.Session`."""

    # the session's own state, used here
    counters: Counter[str]
    congestion: Congestion
    large: LargeSend | None
    send_start: int
    _next_new: int
    _acked_high: int
    _last_activity: float
    _tail_probes: int
    _send: dict[int, _Sent]
    _resend: list[int]

    if TYPE_CHECKING:

        def _transmit(self, sent: _Sent, number: int, now: float) -> None: ...

    def _handle_ack(self, wire_start: int, now: float) -> bool:
        ahead = (wire_start - self.send_start) & _U32
        if ahead == 0 or ahead >= 1 << 31:
            return True  # nothing new, or an older ack overtaken by a newer packet
        start = self.send_start + ahead
        if start > self._next_new:
            return False
        newest: _Sent | None = None
        clean = True  # Karn: no RTT sample from a range that needed a resend
        count = 0
        for n in range(self.send_start, start):
            sent = self._send.pop(n, None)
            if sent is not None:
                count += 1
                newest = sent
                clean = clean and not sent.resent
        if start > self._acked_high:
            self.congestion.on_delivered(start - max(self._acked_high, self.send_start))
            self._acked_high = start
        self.send_start = start
        self._last_activity = now
        self._tail_probes = 0
        large = self.large
        if large is not None and large.probe is not None:
            large.acknowledged_to(start, now)
        if clean and newest is not None and newest.sent_time is not None:
            self.congestion.on_rtt_sample(now - newest.sent_time, now)
        return True

    def _handle_request(self, body: bytes, now: float) -> None:
        report = decode_request_untrusted(body, self._next_new - self.send_start)
        top = self.send_start + report.covered
        base = max(self._acked_high, self.send_start)
        if top > base:
            newly_missing = sum(1 for offset in report.missing if self.send_start + offset >= base)
            self.congestion.on_delivered(max(0, top - base - newly_missing))
            self._acked_high = top
            self._last_activity = now
            self._tail_probes = 0
            # RTT from the newest packet the report shows received (if it was sent once):
            # unlike cumulative acks, this does not wait for holes to be filled.
            newest = self._send.get(top - 1)
            if (
                newest is not None
                and newest.sent_time is not None
                and not newest.resent
                and (not report.missing or self.send_start + report.missing[-1] != top - 1)
            ):
                self.congestion.on_rtt_sample(now - newest.sent_time, now)
        delay = self.congestion.resend_delay_s
        recent = 2 * delay + LOSS_RECENT_S
        lost = 0
        for offset in report.missing:
            n = self.send_start + offset
            sent = self._send.get(n)
            if sent is None or sent.sent_time is None:
                continue
            if sent.sent_time + delay < now:
                # Only recent losses say something about congestion; packets that vanished
                # in an outage long ago (blackout, path switch) are just resent.
                if now - sent.sent_time < recent:
                    lost += 1
                sent.sent_time = None
                sent.resent = True
                heappush(self._resend, n)
        if lost:
            self.congestion.on_loss(lost)

    def _tail_probe_at(self) -> float | None:
        """When to probe the tail: packets are out, none reported, nothing new for a while.

        The peer reports holes only below the highest packet it received, so packets lost at
        the end of a burst (a TCP relay refused them while its queue was full, or a burst of
        loss with nothing sent after it) are never requested; once the inflight cap or the
        application stops new sends, the stream would stall. Resending the newest packet in
        flight after ``2 * srtt`` plus the peer's acknowledgement delay (at least
        ``TAIL_PROBE_MIN_S``, doubling per unanswered probe up to ``TAIL_PROBE_MAX_S``) makes
        the peer see the hole and request the rest.
        """
        if self._next_new <= max(self._acked_high, self.send_start):
            return None
        pto = max(TAIL_PROBE_MIN_S, 2 * self.congestion.srtt + TAIL_PROBE_ACK_DELAY_S)
        return self._last_activity + min(pto * (1 << self._tail_probes), TAIL_PROBE_MAX_S)

    def _tail_probe(self, now: float) -> None:
        n = self._next_new - 1
        entry = self._send.get(n)
        self._tail_probes = min(self._tail_probes + 1, 8)
        self._last_activity = now
        if entry is None or entry.sent_time is None:
            return  # already queued for a resend (or acknowledged meanwhile)
        entry.resent = True  # Karn: no RTT sample from a packet sent twice
        self.counters["tail_probes"] += 1
        self._transmit(entry, n, now)
        self.congestion.consume(1)
