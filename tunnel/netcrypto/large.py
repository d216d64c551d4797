"""Large lossless packets of one session: the send side's path proof, the receive side's
reassembly (issue 8; wire layouts in :mod:`tunnel.wire.large_lossless`).

Send side (:class:`LargeSend`), per session, once both peers agreed a limit:

* the path is **unproven** until a probe (a lossless packet as large as the limit, sent once
  whole over direct UDP) is acknowledged without a resend; a lost probe is resent as
  fragments, and the next probe waits ``LARGE_RETRY_MIN_S``, doubling up to
  ``LARGE_RETRY_MAX_S`` (a path that drops IP fragments costs one probe per backoff period).
  Probes also fail while a connection starts: "direct" means the peer's UDP reaches us,
  and the peer may not take data from our address yet (it drops them as from an unknown
  source, as toxcore does, until it learns the address), hence the short first wait;
* while **proven**, first transmissions of large packets go whole; ``LARGE_LOSSES_DEMOTE``
  large packets lost since the proof make the path unproven again (re-probed at once), so a
  path whose MTU shrank stops taking whole large packets;
* every resend of a large packet, and every large packet while unproven or relayed, goes as
  fragments, so retransmission never depends on the path that lost the packet;
* a path change (direct <-> relayed, a new UDP address) forgets the proof.

The congestion controller counts lossless packets, whole or fragmented alike (its delivery
samples do; charging a fragmented packet per datagram made the rate spiral down in the
relayed-path test). Fragments are transient: packets built large while the path was proven,
resent or caught by a path change; new packets are built toxcore-sized meanwhile.

:attr:`LargeSend.payload_now` is what a sender should build packets up to: the agreed limit on
a proven path, toxcore's 1373 bytes otherwise (packets already queued larger than that are
fragmented, never refused).

Receive side (:class:`Reassembly`): fragments of packets inside the receive window are kept
until every piece arrived (at most ``MAX_PARTIAL_PACKETS`` packets at once; the oldest goes
first), then the session takes the packet as the lossless packet it is.
"""

from __future__ import annotations

from tunnel.wire.large_lossless import FRAGMENT_DATA_BYTES, LARGE_PROBE_ID
from tunnel.wire.netcrypto import MAX_CRYPTO_DATA_SIZE_BYTES

LARGE_RETRY_MIN_S = 1.0
LARGE_RETRY_MAX_S = 300.0
LARGE_LOSSES_DEMOTE = 32
MAX_PARTIAL_PACKETS = 64


class LargeSend:
    """The send side's state for one session (module docstring)."""

    __slots__ = (
        "direct",
        "failures",
        "limit",
        "losses",
        "probe",
        "probe_failed",
        "proven",
        "retry_at",
    )

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.direct = False
        self.proven = False
        self.probe: int | None = None  # packet number of the outstanding probe
        self.probe_failed = False
        self.failures = 0
        self.losses = 0
        self.retry_at = 0.0

    @property
    def payload_now(self) -> int:
        return self.limit if self.proven and self.direct else MAX_CRYPTO_DATA_SIZE_BYTES

    def set_direct(self, direct: bool) -> None:
        """The session's packets now go (or no longer go) over direct UDP."""
        if direct != self.direct:
            self.direct = direct
            self.path_changed()

    def path_changed(self) -> None:
        """A new path: the proof no longer holds; probe again at once."""
        self.proven = False
        self.probe = None
        self.probe_failed = False
        self.failures = 0
        self.losses = 0
        self.retry_at = 0.0

    def probe_payload(self, now: float) -> bytes | None:
        """A probe to queue now, or None (proven, one outstanding, backing off, relayed)."""
        if self.proven or not self.direct or self.probe is not None or now < self.retry_at:
            return None
        return bytes([LARGE_PROBE_ID]) + bytes(self.limit - 1)

    def send_whole(self, number: int, retransmission: bool) -> bool:
        """Whether large packet ``number`` goes as one data packet (else as fragments)."""
        if number == self.probe:
            if retransmission:
                self.probe_failed = True
                return False
            return self.direct
        if retransmission:
            if self.proven:
                self.losses += 1
                if self.losses >= LARGE_LOSSES_DEMOTE:
                    self.path_changed()
            return False
        return self.proven and self.direct

    def acknowledged_to(self, start: int, now: float) -> None:
        """Every packet below ``start`` was delivered (call only when a probe is out)."""
        probe = self.probe
        if probe is None or start <= probe:
            return
        self.probe = None
        if self.probe_failed:
            self.probe_failed = False
            self.retry_at = now + min(LARGE_RETRY_MIN_S * (1 << self.failures), LARGE_RETRY_MAX_S)
            self.failures = min(self.failures + 1, 16)
        else:
            self.proven = self.direct
            self.failures = 0
            self.losses = 0


class _Partial:
    __slots__ = ("have", "pieces", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.have = 0
        self.pieces: dict[int, bytes] = {}


class Reassembly:
    """Fragments of large packets waiting for their last piece (module docstring)."""

    def __init__(self) -> None:
        self._partials: dict[int, _Partial] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, number: int, total: int, offset: int, data: bytes, low: int) -> bytes | None:
        """A piece of packet ``number`` (absolute); the whole packet once every piece arrived.

        ``low`` is the receive window's start: partial packets below it are forgotten when
        room is needed. Duplicate pieces are ignored; a piece that disagrees on ``total``
        starts the packet over.
        """
        partials = self._partials
        partial = partials.get(number)
        if partial is None or partial.total != total:
            if len(partials) >= MAX_PARTIAL_PACKETS:
                self._make_room(low)
            partial = partials[number] = _Partial(total)
        if offset in partial.pieces:
            return None
        partial.pieces[offset] = data
        partial.have += len(data)
        if partial.have < partial.total:
            return None
        del partials[number]
        pieces = partial.pieces
        return b"".join(pieces[o] for o in range(0, total, FRAGMENT_DATA_BYTES))

    def _make_room(self, low: int) -> None:
        partials = self._partials
        for number in [n for n in partials if n < low]:
            del partials[number]
        while len(partials) >= MAX_PARTIAL_PACKETS:
            del partials[next(iter(partials))]
            self.evicted += 1

    def clear(self) -> None:
        self._partials.clear()
