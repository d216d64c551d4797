"""One net_crypto connection to one peer, sans-IO (tox-protocol.md 6.3-6.8).

Theory of operation::

    initiate() --> CookieRequesting --cookie response--> HandshakeSent --peer handshake--+
                        |                                                              v
                        +-------------peer handshake (their cookie)-------------> NotConfirmed
    accept() (peer's handshake arrived first) -------------------------------> NotConfirmed
    NotConfirmed --first valid data packet--> Established --kill / close / timeout--> Closed

* The "temp packet" (cookie request, then our handshake) is built once and resent verbatim
  every ``SEND_PACKET_INTERVAL_S``; after ``MAX_NUM_SENDPACKET_TRIES`` sends the connection
  dies. Established connections have no timeout here (friend_connection's ALIVE does that).
* Data packets use ``sent_nonce`` (incremented per packet of any kind) and the receive nonce is
  rebuilt from the 2-byte tail (``DATA_NUM_THRESHOLD`` rule). On top of toxcore we keep a
  replay window over reconstructed nonces (:mod:`tunnel.netcrypto.replay`), so a replayed or
  very old packet is dropped and counted instead of being delivered twice.
* Lossless packets get 32-bit packet numbers; internally they are unbounded ints (the wire
  carries ``n mod 2**32``). The send array holds ``[send_start, send_end)``: packets below
  ``_next_new`` have been transmitted at least once; resends come from ``_resend``. The peer
  acknowledges with ``buffer_start`` in every data packet and reports holes with request
  packets (id 1), which we answer by resending packets sent more than ``resend_delay`` ago.
* Our own request packets go out at least every second in NotConfirmed/Established (that is
  what confirms the connection for toxcore) and every ``REQUEST_FAST_INTERVAL_S`` while data
  is arriving, sooner when a hole appears.

* The handshake phase is :mod:`tunnel.netcrypto.session_handshake`; payload limits beyond
  toxcore's (our own peers only) and large lossless packets' fragments are
  :mod:`tunnel.netcrypto.session_limits`; acknowledgements, request packets and tail probes
  are :mod:`tunnel.netcrypto.session_recovery` (all mixins of :class:`Session`).

Bad input (undecryptable, malformed, out of window, replayed) is dropped and counted in
``counters``; :class:`~tunnel.errors.BadPacket` never leaves :meth:`Session.handle_data`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from heapq import heappop

from tunnel.crypto import KeyPair, random_nonce
from tunnel.crypto.databox import MIN_DATA_PACKET_BYTES, DataBox
from tunnel.errors import BadPacket, DecryptError
from tunnel.netcrypto import handshake
from tunnel.netcrypto.congestion import Congestion
from tunnel.netcrypto.cookies import Identity
from tunnel.netcrypto.lossy_sealer import NONCE_MOD as _NONCE_MOD
from tunnel.netcrypto.lossy_sealer import LossySealer
from tunnel.netcrypto.replay import Replay, ReplayWindow
from tunnel.netcrypto.session_handshake import SessionHandshake
from tunnel.netcrypto.session_limits import SessionLimits
from tunnel.netcrypto.session_recovery import SessionRecovery
from tunnel.netcrypto.session_types import (
    PACKET_BUFFER_SIZE,
    Closed,
    CookieRequesting,
    Established,
    HandshakeSent,
    Lossless,
    Lossy,
    NotConfirmed,
    NotConnected,
    PeerHandshake,
    SendQueueFull,
    SessionDown,
    SessionEvent,
    SessionStats,
    SessionUp,
    State,
)
from tunnel.netcrypto.session_types import PACKET_NUMBER_MASK as _U32
from tunnel.wire.large_lossless import (
    LARGE_FRAGMENT_ID,
    split_fragments,
)
from tunnel.wire.netcrypto import (
    DATA_KIND,
    MAX_CRYPTO_DATA_SIZE_BYTES,
    PACKET_ID_KILL,
    PACKET_ID_LOSSLESS_END,
    PACKET_ID_LOSSLESS_START,
    PACKET_ID_LOSSY_END,
    PACKET_ID_LOSSY_START,
    PACKET_ID_REQUEST,
    encode_request_runs,
    missing_runs,
)

SEND_PACKET_INTERVAL_S = 1.0
MAX_NUM_SENDPACKET_TRIES = 8
REQUEST_MAX_INTERVAL_S = 1.0
REQUEST_FAST_INTERVAL_S = 0.02
REQUEST_HOLE_DELAY_S = 0.005
DATA_NUM_THRESHOLD = 21845
MAX_SEND_BUFFER_PKTS = PACKET_BUFFER_SIZE - 1
MIN_SEND_QUEUE_PKTS = 128
SEND_QUEUE_S = 0.25
MAX_REQUEST_HOLES = MAX_CRYPTO_DATA_SIZE_BYTES - 1

_KEYED_STATES = (NotConfirmed, Established)
_NO_LOCK: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
"""The default :attr:`Session.rx_lock` (shared: it holds nothing)."""


class _Sent:
    __slots__ = ("payload", "resent", "sent_time")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sent_time: float | None = None
        self.resent = False


class Session(SessionHandshake, SessionLimits, SessionRecovery):
    """A net_crypto connection. Create with :meth:`initiate` or :meth:`accept`."""

    def __init__(
        self, ident: Identity, peer_real_pk: bytes, peer_dht_pk: bytes, now: float
    ) -> None:
        self.ident = ident
        self.peer_real_pk = peer_real_pk
        self.peer_dht_pk = peer_dht_pk
        self.session_keys = KeyPair.generate(ident.rng)
        self._base_sent_nonce = int.from_bytes(random_nonce(ident.rng), "big")
        # Data packet n uses base + n. ``next()`` of an itertools.count is atomic under the
        # GIL, so a LossySealer on another thread never reuses a nonce.
        self._nonce_counter = itertools.count()
        self._recv_nonce = 0
        self._replay_base = 0
        self._replay = ReplayWindow()
        self.rx_lock: contextlib.AbstractContextManager[object] = _NO_LOCK
        """Held around the nonce rebuild's state and the replay window; a data path that opens
        packets on another thread (:class:`LossyOpener`) puts a real lock here first."""
        self.state: State = Closed("not started")
        self.outbox: list[bytes] = []
        self._box: DataBox | None = None  # seals/opens data packets once the key is known
        self._init_limits()
        self.lossy_sink: Callable[[bytes], bool] | None = None
        """Fast path for lossy packets: called with each ``[id][data]`` instead of queueing a
        :class:`Lossy` event; returning False queues the event after all."""
        self.lossless_sink: Callable[[bytes], bool] | None = None
        """Fast path for lossless packets, called in order with each delivered ``[id][data]``
        instead of queueing a :class:`Lossless` event; returning False queues the event."""
        self.events: list[SessionEvent] = []
        self.counters: Counter[str] = Counter()
        self.congestion = Congestion(now)
        # send side
        self.send_start = 0
        self.send_end = 0
        self._next_new = 0
        self._acked_high = 0  # highest send position known delivered (cumulative or reported)
        self._last_activity = now  # last new transmission or acknowledgement progress
        self._tail_probes = 0  # probes since the last progress (backoff exponent)
        self._send: dict[int, _Sent] = {}
        self._resend: list[int] = []
        # receive side
        self.recv_start = 0
        self.recv_end = 0
        self._recv: dict[int, bytes] = {}
        self._next_request = now
        self._got_lossless = False
        # stats
        self.sent_packets = 0
        self.sent_bytes = 0
        self.resent_packets = 0
        self.received_packets = 0
        self.received_bytes = 0
        self.delivered_lossless = 0
        self.delivered_lossy = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def initiate(
        cls, ident: Identity, peer_real_pk: bytes, peer_dht_pk: bytes, now: float
    ) -> Session:
        """Start a connection: send a cookie request to the peer's DHT key."""
        self = cls(ident, peer_real_pk, peer_dht_pk, now)
        echo_id, packet = handshake.make_cookie_request(ident, peer_dht_pk)
        self.state = CookieRequesting(echo_id, packet, 1, now)
        self.outbox.append(packet)
        return self

    @classmethod
    def accept(cls, ident: Identity, peer: PeerHandshake, now: float) -> Session:
        """Answer a peer's handshake that arrived with no session: go straight to NotConfirmed."""
        self = cls(ident, peer.real_pk, peer.dht_pk, now)
        packet = self._make_handshake(peer.other_cookie, now)
        self._enter_not_confirmed(peer, packet, 1, now)
        self.outbox.append(packet)
        return self

    # ------------------------------------------------------------------ properties

    @property
    def established(self) -> bool:
        """True once data has flowed both ways."""
        return isinstance(self.state, Established)

    @property
    def closed(self) -> bool:
        """True after kill, close or timeout."""
        return isinstance(self.state, Closed)

    def send_capacity(self) -> int:
        """How many congestion-controlled lossless packets may be queued right now."""
        if not isinstance(self.state, Established):
            return 0
        queue_limit = max(MIN_SEND_QUEUE_PKTS, int(self.congestion.rate * SEND_QUEUE_S))
        by_queue = queue_limit - (self.send_end - self._next_new)
        by_ring = MAX_SEND_BUFFER_PKTS - (self.send_end - self.send_start)
        return max(0, min(by_queue, by_ring))

    def delivered(self, number: int) -> bool:
        """Whether lossless packet ``number`` (as returned by :meth:`send_lossless`) was acked."""
        return number < self.send_start

    def statistics(self) -> SessionStats:
        """A frozen snapshot of this session's counters."""
        cc = self.congestion
        return SessionStats(
            type(self.state).__name__,
            self.sent_packets,
            self.sent_bytes,
            self.resent_packets,
            self.received_packets,
            self.received_bytes,
            self.delivered_lossless,
            self.delivered_lossy,
            self.send_end - self._next_new,
            self.send_end - self.send_start,
            cc.rate,
            cc.delivery_rate,
            cc.srtt,
            cc.loss_events,
            dict(self.counters),
        )

    # ------------------------------------------------------------------ data input

    def handle_data(self, data: bytes, now: float) -> bool:
        """A data packet (0x1b) for this session. Returns True if it authenticated."""
        state = self.state
        if not isinstance(state, _KEYED_STATES):
            self.counters["data_wrong_state"] += 1
            return False
        box = self._box
        assert box is not None
        if (
            not MIN_DATA_PACKET_BYTES <= len(data) <= self._receive_packet_max
            or data[0] != DATA_KIND
        ):
            self.counters["data_malformed"] += 1
            return False
        diff = (((data[1] << 8) | data[2]) - self._recv_nonce) & 0xFFFF
        nonce = (self._recv_nonce + diff) % _NONCE_MOD
        try:
            buffer_start, packet_number, payload = box.open_untrusted(data, nonce)
        except DecryptError:
            self.counters["data_undecryptable"] += 1
            return False
        except BadPacket:
            self.counters["data_bad_plain"] += 1
            return False
        lock = self.rx_lock
        if lock is _NO_LOCK:  # no other thread opens packets: skip the context manager
            if not self.accept_nonce(nonce, diff):
                return False
        else:
            with lock:
                if not self.accept_nonce(nonce, diff):
                    return False
        self.received_packets += 1
        self.received_bytes += len(data)
        pid = payload[0]
        if pid == PACKET_ID_KILL:
            self._close("killed by peer")
            return True
        if not self._handle_ack(buffer_start, now):
            self.counters["data_bad_ack"] += 1
            return True
        if isinstance(state, NotConfirmed):
            self.state = Established(state.data_key)
            self.events.append(SessionUp())
            self._next_request = now  # confirm the connection for the peer at once
        if pid == PACKET_ID_REQUEST:
            self._handle_request(payload[1:], now)
            self._set_recv_end(packet_number)
        elif PACKET_ID_LOSSLESS_START <= pid <= PACKET_ID_LOSSLESS_END:
            self._handle_lossless(packet_number, payload, now)
        elif PACKET_ID_LOSSY_START <= pid <= PACKET_ID_LOSSY_END:
            self._set_recv_end(packet_number)
            if pid == LARGE_FRAGMENT_ID and self._reassembly is not None:
                self._handle_fragment(payload, now)
                return True
            self.delivered_lossy += 1
            sink = self.lossy_sink
            if sink is None or not sink(payload):
                self.events.append(Lossy(payload))
        else:
            self.counters["data_invalid_id"] += 1
        return True

    def accept_nonce(self, nonce: int, diff: int) -> bool:
        """Record an opened packet's ``nonce`` (``diff`` ahead of the base): False for a
        replay (counted); moves the base as toxcore does. Callers hold :attr:`rx_lock`."""
        seen = self._replay.check((nonce - self._replay_base) % _NONCE_MOD)
        if seen is not Replay.NEW:
            self.counters["data_too_old" if seen is Replay.TOO_OLD else "data_replayed"] += 1
            return False
        if diff > 2 * DATA_NUM_THRESHOLD:
            self._recv_nonce = (self._recv_nonce + DATA_NUM_THRESHOLD) % _NONCE_MOD
        return True

    def _set_recv_end(self, wire_number: int) -> None:
        number = self.recv_start + ((wire_number - self.recv_start) & _U32)
        if number - self.recv_start > PACKET_BUFFER_SIZE or number <= self.recv_end:
            return
        self.recv_end = number

    def _handle_lossless(self, wire_number: int, payload: bytes, now: float) -> None:
        offset = (wire_number - self.recv_start) & _U32
        if offset >= PACKET_BUFFER_SIZE:
            # Below recv_start: an old duplicate; far above: outside the 32768 window.
            key = "lossless_duplicate" if offset >= 1 << 31 else "lossless_out_of_window"
            self.counters[key] += 1
            return
        number = self.recv_start + offset
        if number in self._recv:
            self.counters["lossless_duplicate"] += 1
            return
        self._got_lossless = True
        if number + 1 > self.recv_end:
            self.recv_end = number + 1
        if number != self.recv_start:
            self._recv[number] = payload
            self._next_request = min(self._next_request, now + REQUEST_HOLE_DELAY_S)
            return
        self._deliver(payload)
        self.recv_start += 1
        if self._recv:
            while self.recv_start in self._recv:
                self._deliver(self._recv.pop(self.recv_start))
                self.recv_start += 1
        if now + REQUEST_FAST_INTERVAL_S < self._next_request:
            self._next_request = now + REQUEST_FAST_INTERVAL_S

    def _deliver(self, payload: bytes) -> None:
        self.delivered_lossless += 1
        sink = self.lossless_sink
        if sink is None or not sink(payload):
            self.events.append(Lossless(payload))

    # ------------------------------------------------------------------ commands

    def send_lossless(self, payload: bytes, now: float, *, congestion_control: bool = True) -> int:
        """Queue ``[id][data]`` (id 16..191) for reliable in-order delivery.

        Returns the packet number (for :meth:`delivered`).

        Raises:
            NotConnected: not established.
            SendQueueFull: back-pressure; retry when :meth:`send_capacity` is positive.
            ValueError: bad id or size (a bug in the caller).
        """
        if not 1 <= len(payload) <= self.max_lossless_payload or not (
            PACKET_ID_LOSSLESS_START <= payload[0] <= PACKET_ID_LOSSLESS_END
        ):
            raise ValueError(
                "lossless payload must be [16..191][data], "
                f"at most {self.max_lossless_payload} bytes"
            )
        if not isinstance(self.state, Established):
            raise NotConnected("session not established")
        if self.send_end - self.send_start >= MAX_SEND_BUFFER_PKTS:
            raise SendQueueFull("send ring full")
        if congestion_control and self.send_capacity() <= 0:
            raise SendQueueFull("send queue full")
        number = self.send_end
        sent = _Sent(payload)
        self._send[number] = sent
        self.send_end += 1
        if not congestion_control:
            self._transmit(sent, number, now)
            self.congestion.consume(1)
        self._pump(now)
        return number

    def send_lossless_many(self, payloads: list[bytes], now: float) -> int:
        """Queue payloads in order while there is room (congestion-controlled), with one
        transmit round at the end; returns how many were queued (the rest: no room).

        Raises:
            NotConnected: not established.
            ValueError: a bad id or size (nothing after it is queued).
        """
        if not isinstance(self.state, Established):
            raise NotConnected("session not established")
        room = self.send_capacity()
        queued = 0
        send = self._send
        limit = self.max_lossless_payload
        large = self.large
        probed = False
        if large is not None and room > 0 and (probe := large.probe_payload(now)) is not None:
            # the probe goes out with the payloads (it is not counted in the result)
            large.probe = self.send_end
            send[self.send_end] = _Sent(probe)
            self.send_end += 1
            self.counters["large_probes"] += 1
            room -= 1
            probed = True
        try:
            for payload in payloads:
                if queued >= room:
                    break
                if not 1 <= len(payload) <= limit or not (
                    PACKET_ID_LOSSLESS_START <= payload[0] <= PACKET_ID_LOSSLESS_END
                ):
                    raise ValueError(
                        f"lossless payload must be [16..191][data], at most {limit} bytes"
                    )
                send[self.send_end] = _Sent(payload)
                self.send_end += 1
                queued += 1
        finally:
            if queued or probed:
                self._pump(now)
        return queued

    def lossy_sealer(self) -> LossySealer | None:
        """A :class:`LossySealer` for this session, or None unless established."""
        state = self.state
        if not isinstance(state, Established):
            return None
        return LossySealer(self, state.data_key)

    def send_lossy(self, payload: bytes, now: float) -> None:
        """Send ``[id][data]`` (id 192..254) once, unreliably, bypassing congestion control.

        Raises:
            NotConnected: not established.
            ValueError: bad id or size.
        """
        if not 1 <= len(payload) <= self.max_lossy_payload or not (
            PACKET_ID_LOSSY_START <= payload[0] <= PACKET_ID_LOSSY_END
        ):
            raise ValueError(
                f"lossy payload must be [192..254][data], at most {self.max_lossy_payload} bytes"
            )
        if not isinstance(self.state, Established):
            raise NotConnected("session not established")
        self._emit(payload, self._next_new)

    def close(self, now: float) -> None:
        """Close locally; an established session sends one kill packet first."""
        if isinstance(self.state, Established):
            self._emit(bytes([PACKET_ID_KILL]), self._next_new)
        if not isinstance(self.state, Closed):
            self._close("closed locally")

    def _close(self, reason: str) -> None:
        self.state = Closed(reason)
        self._send.clear()
        self._recv.clear()
        self._resend.clear()
        if self._reassembly is not None:
            self._reassembly.clear()
        self.events.append(SessionDown(reason))

    # ------------------------------------------------------------------ output

    def _emit(self, payload: bytes, wire_number: int) -> None:
        box = self._box
        assert box is not None
        assert isinstance(self.state, _KEYED_STATES)
        nonce = (self._base_sent_nonce + next(self._nonce_counter)) % _NONCE_MOD
        packet = box.seal(nonce, self.recv_start, wire_number, payload)
        self.sent_packets += 1
        self.sent_bytes += len(packet)
        self.outbox.append(packet)

    def _transmit(self, sent: _Sent, number: int, now: float) -> None:
        again = sent.sent_time is not None or sent.resent
        if again:
            self.resent_packets += 1
        sent.sent_time = now
        payload = sent.payload
        if len(payload) <= MAX_CRYPTO_DATA_SIZE_BYTES:
            self._emit(payload, number)
        else:
            large = self.large
            if large is not None and large.send_whole(number, again):
                self._emit(payload, number)
            else:
                self.counters["large_fragmented"] += 1
                next_new = self._next_new
                for fragment in split_fragments(number & _U32, payload):
                    self._emit(fragment, next_new)
        if number == self._next_new:
            self._last_activity = now
            self._next_new += 1
            while (
                self._next_new < self.send_end and self._send[self._next_new].sent_time is not None
            ):
                self._next_new += 1

    def _pump(self, now: float) -> None:
        if not isinstance(self.state, Established):
            return
        congestion = self.congestion
        budget = congestion.available(now)
        if budget <= 0:
            return
        # Nothing below changes these (no acknowledgement is handled while sending).
        ring_limit = self.send_start + PACKET_BUFFER_SIZE - 1
        window_limit = max(self._acked_high, self.send_start) + congestion.cwnd_pkts
        send, resend = self._send, self._resend
        sent_count = 0
        while sent_count < budget:
            if resend:
                n = heappop(resend)
                entry = send.get(n)
                if entry is None or entry.sent_time is not None:
                    continue
                self._transmit(entry, n, now)
            elif (n := self._next_new) < self.send_end and n < ring_limit and n < window_limit:
                self._transmit(send[n], n, now)
            else:
                if self._next_new >= self.send_end:
                    # Everything queued went out within the budget: this step is limited
                    # by the application, not by the path.
                    congestion.note_starved()
                break
            sent_count += 1
        congestion.consume(sent_count)

    def _send_request(self, now: float) -> None:
        span = self.recv_end - self.recv_start
        runs = missing_runs(self.recv_start, self.recv_end, self._recv, MAX_REQUEST_HOLES)
        self._emit(encode_request_runs(runs, span), self._next_new)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` is next due."""
        state = self.state
        if isinstance(state, Closed):
            return None
        if isinstance(state, CookieRequesting | HandshakeSent):
            return state.last_sent + SEND_PACKET_INTERVAL_S
        deadline = self._next_request
        if isinstance(state, NotConfirmed):
            return min(deadline, state.last_sent + SEND_PACKET_INTERVAL_S)
        if self._resend or (
            self._next_new < self.send_end
            and self._next_new - self.send_start < PACKET_BUFFER_SIZE - 1
            and self._next_new - max(self._acked_high, self.send_start) < self.congestion.cwnd_pkts
        ):
            deadline = min(deadline, self.congestion.next_send_time())
        probe = self._tail_probe_at()
        if probe is not None:
            deadline = min(deadline, probe)
        return deadline

    def handle_timer(self, now: float) -> None:
        """Resend the temp packet, send request packets, pace queued data."""
        state = self.state
        if (
            isinstance(state, CookieRequesting | HandshakeSent | NotConfirmed)
            and now >= state.last_sent + SEND_PACKET_INTERVAL_S
        ):
            if state.tries >= MAX_NUM_SENDPACKET_TRIES:
                self._close("handshake timeout")
                return
            self.outbox.append(state.packet)
            self.state = replace(state, tries=state.tries + 1, last_sent=now)
        state = self.state
        if isinstance(state, NotConfirmed | Established) and now >= self._next_request:
            self._send_request(now)
            busy = self._got_lossless or self.recv_end != self.recv_start
            interval = REQUEST_FAST_INTERVAL_S if busy else REQUEST_MAX_INTERVAL_S
            self._got_lossless = False
            self._next_request = now + interval
        if isinstance(state, Established):
            probe = self._tail_probe_at()
            if probe is not None and now >= probe:
                self._tail_probe(now)
        self._pump(now)


__all__ = [
    "Closed",
    "CookieRequesting",
    "Established",
    "HandshakeSent",
    "Lossless",
    "Lossy",
    "LossySealer",
    "NotConfirmed",
    "NotConnected",
    "PeerHandshake",
    "SendQueueFull",
    "Session",
    "SessionDown",
    "SessionEvent",
    "SessionStats",
    "SessionUp",
    "State",
]
