"""Sans-IO TCP relay server core (tox-protocol.md 7.4, c-toxcore ``TCP_server.c``).

Theory of operation. The driver owns the sockets and calls in with opaque integer handles::

    accept(now) -> handle          a TCP connection was accepted
    receive_data(handle, data, now)
    data_to_send(handle) -> bytes  what to write on that socket next
    connection_lost(handle)        the socket ended
    pop_writable() / pop_closed()  handles that have new output / that the core closed
    next_deadline() / handle_timer(now)

Per connection::

    HANDSHAKE --128 valid bytes, 96 sent--> UNCONFIRMED --first valid frame--> CONFIRMED
        \\___________ 10 s (handshake timeout) / bad input / pending cap _______/   |
                                                                                   v
                                    bad frame, protocol violation, flood, ping timeout: CLOSED

* Clients are identified by their DHT public key; when a connection is confirmed, an older
  one with the same key is closed (toxcore does this).
* Each client has 240 slots (connection id = slot + 16). A routing request for P takes a free
  slot ("requested"); when P's client holds a requested slot for us, both are linked and both
  get a connect notification. Data on a linked slot is forwarded with the peer's id for us.
* toxcore's strictness is mirrored: wrong control lengths, pong id 0, ids 0x09..0x0f from a
  client, a disconnect for an unused slot and data on an unused slot close the offending
  connection. Only that connection: its linked peers get disconnect notifications.
* Our own limits on top of toxcore's: a handshake timeout for pending connections, a cap on
  pending connections (oldest dropped), a cap on clients, per-client receive/send buffer caps
  (data forwarded to a client whose send queue is full is dropped and counted, as toxcore
  drops it when the socket is full), and a token bucket on routing requests (a flood closes
  the connection). Empty data frames are dropped rather than forwarded: toxcore clients
  disconnect from their relay when they receive one.
* Timers run on a one-second sweep, like toxcore's main loop; pings every 30 s, 10 s to pong.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tunnel.crypto import NONCE_SIZE, KeyPair, Rng, SharedKeyCache
from tunnel.errors import BadPacket
from tunnel.tcp_relay.framing import NEED_DATA, FrameCipher, StreamBuffer, shared_key_untrusted
from tunnel.tcp_relay.outbox import Outbox
from tunnel.wire.tcp_relay import (
    CLIENT_HANDSHAKE_SIZE_BYTES,
    NUM_CLIENT_CONNECTIONS,
    NUM_RESERVED_PORTS,
    PACKET_ONION_REQUEST,
    ClientHandshake,
    ConnectNotification,
    Data,
    DisconnectNotification,
    HandshakePlain,
    OnionRequest,
    OnionResponse,
    OobRecv,
    OobSend,
    Ping,
    Pong,
    RoutingRequest,
    RoutingResponse,
    ServerHandshake,
    decode_packet_untrusted,
)

TCP_PING_FREQUENCY_S = 30.0
TCP_PING_TIMEOUT_S = 10.0
SWEEP_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Per-server and per-client limits (ours; toxcore has fewer)."""

    max_clients: int = 4096
    max_pending: int = 256
    """Connections still in the handshake or unconfirmed (toxcore: a 256-slot ring)."""
    handshake_timeout_s: float = 10.0
    max_recv_buffer_bytes: int = 64 * 1024
    max_send_data_bytes: int = 256 * 1024
    max_send_control_bytes: int = 64 * 1024
    routing_requests_burst: int = 512
    routing_requests_per_s: float = 16.0
    ping_interval_s: float = TCP_PING_FREQUENCY_S
    """How often each client is pinged (toxcore: 30 s)."""
    ping_timeout_s: float = TCP_PING_TIMEOUT_S
    """How long a client has to answer (toxcore: 10 s)."""


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"


@dataclass(frozen=True, slots=True)
class OnionSource:
    """Names the client an onion request came from; stale once that connection is gone."""

    handle: int
    identifier: int


@dataclass(frozen=True, slots=True)
class OnionRequestReceived:
    """A confirmed client asked us to act as onion node A (tox-protocol.md 5.9)."""

    source: OnionSource
    nonce: bytes
    onion_data: bytes
    """``[IPP(B): 19][temp pk: 32][box(step2)]``, to be handled like a decrypted 0x80."""

    @property
    def packet(self) -> bytes:
        """The whole TCP packet ``[0x08][nonce][onion_data]``."""
        return bytes((PACKET_ONION_REQUEST,)) + self.nonce + self.onion_data


@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of the server's counters."""

    connections_accepted: int
    handshakes_completed: int
    clients_confirmed: int
    clients: int
    pending: int
    closed_bad_input: int
    closed_timeout: int
    closed_flood: int
    closed_limit: int
    closed_replaced: int
    bad_packets: int
    routing_requests: int
    links_made: int
    routed_packets: int
    routed_bytes: int
    routed_dropped: int
    oob_packets: int
    oob_bytes: int
    oob_dropped: int
    onion_requests: int
    onion_responses: int
    pings_sent: int
    pongs_received: int
    refused_not_admitted: int = 0
    """Routing requests, OOB and onion packets refused by :attr:`RelayServer.admit`."""


@dataclass(slots=True)
class _Slot:
    public_key: bytes
    linked: bool = False
    other_handle: int = 0
    other_slot: int = 0


@dataclass(slots=True)
class _Conn:
    handle: int
    created: float
    state: _State = _State.HANDSHAKE
    stream: StreamBuffer = field(default_factory=StreamBuffer)
    outbox: Outbox = field(default_factory=Outbox)
    raw_out: bytes = b""
    cipher: FrameCipher | None = None
    public_key: bytes = b""
    identifier: int = 0
    slots: dict[int, _Slot] = field(default_factory=dict)
    slot_by_pk: dict[bytes, int] = field(default_factory=dict)
    last_pinged: float = 0.0
    ping_id: int = 0
    tokens: float = 0.0
    tokens_at: float = 0.0


class RelayServer:
    """The relay: every client connection's state, routing between them, and counters."""

    def __init__(
        self,
        keys: KeyPair,
        rng: Rng,
        *,
        limits: ServerLimits | None = None,
        onion_enabled: bool = False,
        admit: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.keys = keys
        self.limits = limits or ServerLimits()
        self.onion_enabled = onion_enabled
        self.admit = admit
        """A private relay's filter (e.g. friends only, issue 10): when set, a routing request
        is refused (answered with connection id 0) unless both the client's and the target's
        keys are admitted; OOB packets likewise are dropped, and onion requests from clients
        that are not admitted are dropped. Counted in ``refused_not_admitted``."""
        self._rng = rng
        self._keys_cache = SharedKeyCache(keys.secret_key)
        self._conns: dict[int, _Conn] = {}
        self._pending: dict[int, None] = {}  # insertion-ordered set of pending handles
        self._by_pk: dict[bytes, int] = {}
        self._next_handle = 1
        self._identifier_counter = 0
        self._writable: dict[int, None] = {}
        self._closed: list[int] = []
        self._close_reasons: dict[int, str] = {}
        self._events: deque[OnionRequestReceived] = deque()
        self._next_sweep: float | None = None
        self._c: dict[str, int] = dict.fromkeys(ServerStatistics.__slots__, 0)

    # ------------------------------------------------------------------ driver side

    def accept(self, now: float) -> int:
        """Register a newly accepted TCP connection; returns its handle."""
        handle = self._next_handle
        self._next_handle += 1
        lim = self.limits
        self._conns[handle] = _Conn(
            handle,
            now,
            stream=StreamBuffer(lim.max_recv_buffer_bytes),
            outbox=Outbox(lim.max_send_data_bytes, lim.max_send_control_bytes),
        )
        self._pending[handle] = None
        self._c["connections_accepted"] += 1
        while len(self._pending) > lim.max_pending:
            oldest = next(iter(self._pending))
            self._kill(oldest, "too many pending connections", "closed_limit")
        if self._next_sweep is None:
            self._next_sweep = now + SWEEP_INTERVAL_S
        return handle

    def receive_data(self, handle: int, data: bytes, now: float) -> None:
        """Bytes read from connection ``handle``."""
        conn = self._conns.get(handle)
        if conn is None or not data:
            return
        try:
            conn.stream.feed(data)
            self._process(conn, now)
        except BadPacket as exc:
            self._c["bad_packets"] += 1
            self._kill(handle, f"bad input: {exc}", "closed_bad_input")

    def data_to_send(self, handle: int, max_bytes: int | None = None) -> bytes:
        """Bytes to write on ``handle`` next (empty if none, or if it is closed)."""
        conn = self._conns.get(handle)
        if conn is None:
            return b""
        out = conn.raw_out
        conn.raw_out = b""
        if conn.cipher is not None and conn.outbox:
            out += conn.outbox.drain(conn.cipher, max_bytes)
        return out

    def wants_write(self, handle: int) -> bool:
        """True if :meth:`data_to_send` has something for ``handle``."""
        conn = self._conns.get(handle)
        return conn is not None and (bool(conn.raw_out) or bool(conn.outbox))

    def connection_lost(self, handle: int) -> None:
        """The socket of ``handle`` ended; forget it (peers are notified)."""
        if handle in self._conns:
            self._kill(handle, "connection lost", None)
            # the driver already knows: do not report it back as closed by us
            if handle in self._closed:
                self._closed.remove(handle)

    def pop_writable(self) -> list[int]:
        """Handles that got new output since the last call."""
        out = list(self._writable)
        self._writable.clear()
        return out

    def pop_closed(self) -> list[int]:
        """Handles the core closed since the last call; the driver must close their sockets."""
        out = self._closed
        self._closed = []
        return out

    def close_reason(self, handle: int) -> str | None:
        """Why the core closed ``handle`` (kept for the last 1024 closes)."""
        return self._close_reasons.get(handle)

    def next_event(self) -> OnionRequestReceived | None:
        """Next onion request for the onion layer, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run (None: no connections)."""
        return self._next_sweep if self._conns else None

    def handle_timer(self, now: float) -> None:
        """Handshake timeouts, pings and pong timeouts."""
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL_S
        lim = self.limits
        for handle in list(self._pending):
            conn = self._conns[handle]
            if now >= conn.created + lim.handshake_timeout_s:
                self._kill(handle, "handshake timeout", "closed_timeout")
        for handle in list(self._by_pk.values()):
            conn = self._conns[handle]
            if conn.ping_id and now >= conn.last_pinged + lim.ping_timeout_s:
                self._kill(handle, "ping timeout", "closed_timeout")
                continue
            if now >= conn.last_pinged + lim.ping_interval_s:
                ping_id = 0
                while ping_id == 0:
                    ping_id = int.from_bytes(self._rng(8), "big")
                if self._control(conn, Ping(ping_id).encode()):
                    conn.ping_id = ping_id
                    conn.last_pinged = now
                    self._c["pings_sent"] += 1

    # ------------------------------------------------------------------ onion hook

    def send_onion_response(self, source: OnionSource, packet: bytes) -> bool:
        """Deliver a raw 0x84/0x86 ``packet`` to the client that sent the onion request."""
        conn = self._conns.get(source.handle)
        if (
            conn is None
            or conn.state is not _State.CONFIRMED
            or conn.identifier != source.identifier
            or not packet
        ):
            return False
        if self._data(conn, OnionResponse(packet).encode()):
            self._c["onion_responses"] += 1
            return True
        return False

    # ------------------------------------------------------------------ queries

    def client_public_key(self, handle: int) -> bytes | None:
        """The DHT pk of a confirmed client."""
        conn = self._conns.get(handle)
        return conn.public_key if conn is not None and conn.state is _State.CONFIRMED else None

    def client_handles(self) -> dict[bytes, int]:
        """Confirmed clients: DHT pk -> handle."""
        return dict(self._by_pk)

    def statistics(self) -> ServerStatistics:
        """A frozen snapshot of the counters."""
        counters = dict(self._c)
        counters["clients"] = len(self._by_pk)
        counters["pending"] = len(self._pending)
        return ServerStatistics(**counters)

    # ------------------------------------------------------------------ internals

    def _mark_writable(self, conn: _Conn) -> None:
        self._writable[conn.handle] = None

    def _control(self, conn: _Conn, plain: bytes) -> bool:
        if not conn.outbox.push_control(plain):
            self._kill(conn.handle, "control queue overflow (client not reading)", "closed_limit")
            return False
        self._mark_writable(conn)
        return True

    def _data(self, conn: _Conn, plain: bytes) -> bool:
        if not conn.outbox.push_data(plain):
            return False
        self._mark_writable(conn)
        return True

    def _kill(self, handle: int, reason: str, counter: str | None) -> None:
        conn = self._conns.pop(handle, None)
        if conn is None:
            return
        if counter is not None:
            self._c[counter] += 1
        self._pending.pop(handle, None)
        self._writable.pop(handle, None)
        if conn.state is _State.CONFIRMED:
            if self._by_pk.get(conn.public_key) == handle:
                del self._by_pk[conn.public_key]
            for slot in conn.slots.values():
                if slot.linked:
                    self._unlink_other(slot)
        conn.slots.clear()
        conn.outbox.clear()
        self._closed.append(handle)
        self._close_reasons[handle] = reason
        if len(self._close_reasons) > 1024:
            del self._close_reasons[next(iter(self._close_reasons))]

    def _unlink_other(self, slot: _Slot) -> None:
        """``slot`` was linked: put the peer's side back to "requested" and tell the peer."""
        other = self._conns.get(slot.other_handle)
        if other is None:
            return
        other_slot = other.slots.get(slot.other_slot)
        if other_slot is None:
            return
        other_slot.linked = False
        other_slot.other_handle = 0
        self._control(other, DisconnectNotification(slot.other_slot).encode())

    def _process(self, conn: _Conn, now: float) -> None:
        if conn.state is _State.HANDSHAKE:
            raw = conn.stream.take_exact(CLIENT_HANDSHAKE_SIZE_BYTES)
            if raw is NEED_DATA:
                return
            assert isinstance(raw, bytes)
            hello = ClientHandshake.decode(raw)
            long_term = shared_key_untrusted(
                hello.public_key, self.keys.secret_key, self._keys_cache.get
            )
            plain = hello.open_untrusted(long_term)
            temp = KeyPair.generate(self._rng)
            session = shared_key_untrusted(plain.temp_public_key, temp.secret_key)
            base_nonce = self._rng(NONCE_SIZE)
            reply = ServerHandshake.seal(
                long_term, self._rng(NONCE_SIZE), HandshakePlain(temp.public_key, base_nonce)
            )
            conn.raw_out += reply.encode()
            conn.public_key = hello.public_key
            conn.cipher = FrameCipher(session, base_nonce, plain.base_nonce)
            conn.state = _State.UNCONFIRMED
            self._c["handshakes_completed"] += 1
            self._mark_writable(conn)
        assert conn.cipher is not None
        while conn.handle in self._conns:
            cipher_text = conn.stream.next_frame()
            if cipher_text is NEED_DATA:
                return
            assert isinstance(cipher_text, bytes)
            plain_frame = conn.cipher.open_untrusted(cipher_text)
            if conn.state is _State.UNCONFIRMED:
                self._confirm(conn, now)
                if conn.handle not in self._conns:
                    return
            self._handle_packet(conn, plain_frame, now)

    def _confirm(self, conn: _Conn, now: float) -> None:
        self._pending.pop(conn.handle, None)
        old = self._by_pk.get(conn.public_key)
        if old is not None:
            self._kill(old, "replaced by a newer connection with the same key", "closed_replaced")
        if len(self._by_pk) >= self.limits.max_clients:
            self._kill(conn.handle, "too many clients", "closed_limit")
            return
        conn.state = _State.CONFIRMED
        self._identifier_counter += 1
        conn.identifier = self._identifier_counter
        conn.last_pinged = now
        conn.tokens = float(self.limits.routing_requests_burst)
        conn.tokens_at = now
        self._by_pk[conn.public_key] = conn.handle
        self._c["clients_confirmed"] += 1

    def _handle_packet(self, conn: _Conn, plain: bytes, now: float) -> None:
        packet = decode_packet_untrusted(plain)
        match packet:
            case RoutingRequest(public_key=pk):
                self._handle_routing_request(conn, pk, now)
            case ConnectNotification():
                pass  # valid from a client, meaningless: toxcore ignores it
            case DisconnectNotification(connection_id=cid):
                slot = conn.slots.pop(cid, None)
                if slot is None:
                    raise BadPacket(f"disconnect for unused connection id {cid}")
                conn.slot_by_pk.pop(slot.public_key, None)
                if slot.linked:
                    self._unlink_other(slot)
            case Ping(ping_id=ping_id):
                if ping_id:
                    self._control(conn, Pong(ping_id).encode())
            case Pong(ping_id=ping_id):
                if ping_id == conn.ping_id:
                    conn.ping_id = 0
                    self._c["pongs_received"] += 1
            case OobSend(public_key=pk, data=data):
                if not self._admitted(conn.public_key, pk):
                    self._c["oob_dropped"] += 1
                    return
                other_handle = self._by_pk.get(pk)
                if other_handle is None:
                    self._c["oob_dropped"] += 1
                    return
                other = self._conns[other_handle]
                if self._data(other, OobRecv(conn.public_key, data).encode()):
                    self._c["oob_packets"] += 1
                    self._c["oob_bytes"] += len(data)
                else:
                    self._c["oob_dropped"] += 1
            case OnionRequest(payload=payload):
                if self.onion_enabled and self._admitted(conn.public_key):
                    self._c["onion_requests"] += 1
                    self._events.append(
                        OnionRequestReceived(
                            OnionSource(conn.handle, conn.identifier),
                            payload[:NONCE_SIZE],
                            payload[NONCE_SIZE:],
                        )
                    )
            case Data(connection_id=cid, payload=payload):
                self._handle_data(conn, cid, payload)
            case _:
                raise BadPacket(f"packet {plain[0]:#04x} is not valid from a client")

    def _admitted(self, *public_keys: bytes) -> bool:
        admit = self.admit
        if admit is None or all(admit(pk) for pk in public_keys):
            return True
        self._c["refused_not_admitted"] += 1
        return False

    def _handle_routing_request(self, conn: _Conn, pk: bytes, now: float) -> None:
        lim = self.limits
        self._c["routing_requests"] += 1
        conn.tokens = min(
            float(lim.routing_requests_burst),
            conn.tokens + (now - conn.tokens_at) * lim.routing_requests_per_s,
        )
        conn.tokens_at = now
        if conn.tokens < 1.0:
            self._kill(conn.handle, "routing request flood", "closed_flood")
            return
        conn.tokens -= 1.0
        if pk == conn.public_key or not self._admitted(conn.public_key, pk):
            self._control(conn, RoutingResponse(0, pk).encode())
            return
        existing = conn.slot_by_pk.get(pk)
        if existing is not None:
            self._control(conn, RoutingResponse(existing, pk).encode())
            return
        cid = next(
            (
                NUM_RESERVED_PORTS + i
                for i in range(NUM_CLIENT_CONNECTIONS)
                if NUM_RESERVED_PORTS + i not in conn.slots
            ),
            None,
        )
        if cid is None:
            self._control(conn, RoutingResponse(0, pk).encode())
            return
        if not self._control(conn, RoutingResponse(cid, pk).encode()):
            return
        slot = _Slot(pk)
        conn.slots[cid] = slot
        conn.slot_by_pk[pk] = cid
        other_handle = self._by_pk.get(pk)
        if other_handle is None:
            return
        other = self._conns[other_handle]
        other_cid = other.slot_by_pk.get(conn.public_key)
        if other_cid is None:
            return
        other_slot = other.slots[other_cid]
        if other_slot.linked:
            return
        slot.linked, slot.other_handle, slot.other_slot = True, other.handle, other_cid
        other_slot.linked, other_slot.other_handle, other_slot.other_slot = True, conn.handle, cid
        self._c["links_made"] += 1
        self._control(conn, ConnectNotification(cid).encode())
        self._control(other, ConnectNotification(other_cid).encode())

    def _handle_data(self, conn: _Conn, cid: int, payload: bytes) -> None:
        slot = conn.slots.get(cid)
        if slot is None:
            raise BadPacket(f"data on unused connection id {cid}")
        if not slot.linked or not payload:
            self._c["routed_dropped"] += 1
            return
        other = self._conns.get(slot.other_handle)
        if other is None:
            self._c["routed_dropped"] += 1
            return
        if self._data(other, Data(slot.other_slot, payload).encode()):
            self._c["routed_packets"] += 1
            self._c["routed_bytes"] += len(payload)
        else:
            self._c["routed_dropped"] += 1
