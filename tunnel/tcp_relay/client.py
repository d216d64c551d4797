"""Sans-IO TCP relay client connection (tox-protocol.md 7.1-7.5, c-toxcore ``TCP_client.c``).

Theory of operation::

    HANDSHAKING --96 valid bytes--> CONFIRMED --bad frame / pong timeout / lost--> CLOSED
         |                                                                         ^
         +-------- 10 s without a valid server handshake, bad handshake -----------+

* The connection is created once the TCP stream (possibly through a proxy) is open; its first
  output is the 128-byte client handshake, signed with our **DHT** key.
* On a valid 96-byte server handshake the session key is ``K(our temp sk, server temp pk)``;
  we queue a ping at once (toxcore does: it is also what "confirms" us at the server), then
  ping every 30 s and close if the pong does not come within 10 s. Server pings are answered.
* Routes: a routing request for a peer's DHT pk yields a routing response with a connection id
  (slot "registered"), then a connect notification when the peer asked for us too (slot
  "online"). Data is sent only on online slots. :meth:`send_disconnect` frees a slot.
* Any malformed frame closes the connection (toxcore does the same); it is counted, and the
  layer above sees :class:`ConnectionClosed` and may reconnect.

The core never reads a clock: every call that may start a timer takes ``now`` (seconds on the
driver's clock).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from tunnel.crypto import NONCE_SIZE, KeyPair, Rng, shared_key
from tunnel.errors import BadPacket
from tunnel.tcp_relay.framing import NEED_DATA, FrameCipher, StreamBuffer, shared_key_untrusted
from tunnel.tcp_relay.outbox import DEFAULT_MAX_CONTROL_BYTES, DEFAULT_MAX_DATA_BYTES, Outbox
from tunnel.wire.tcp_relay import (
    MAX_FRAME_PLAIN_SIZE_BYTES,
    MAX_OOB_DATA_SIZE_BYTES,
    NUM_CLIENT_CONNECTIONS,
    NUM_RESERVED_PORTS,
    SERVER_HANDSHAKE_SIZE_BYTES,
    ClientHandshake,
    ConnectNotification,
    Data,
    DisconnectNotification,
    Forwarding,
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

TCP_CONNECTION_TIMEOUT_S = 10.0
"""Connect plus handshake must finish within this (toxcore ``TCP_CONNECTION_TIMEOUT``)."""
TCP_PING_FREQUENCY_S = 30.0
TCP_PING_TIMEOUT_S = 10.0


class ClientStatus(enum.Enum):
    """Where the connection is in its life."""

    HANDSHAKING = "handshaking"
    CONFIRMED = "confirmed"
    CLOSED = "closed"


class RouteStatus(enum.IntEnum):
    """State of one of the 240 connection slots (toxcore's 0/1/2)."""

    UNUSED = 0
    REGISTERED = 1
    ONLINE = 2


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The relay accepted our handshake; requests may be sent."""


@dataclass(frozen=True, slots=True)
class RouteRegistered:
    """The relay gave ``connection_id`` for the peer ``public_key`` (not yet linked)."""

    connection_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RouteRefused:
    """The relay refused a routing request for ``public_key`` (no free slot, or ourselves)."""

    public_key: bytes


@dataclass(frozen=True, slots=True)
class RouteOnline:
    """The peer on ``connection_id`` is linked; data can flow."""

    connection_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RouteOffline:
    """The peer on ``connection_id`` left the relay (the slot stays registered)."""

    connection_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class RoutedData:
    """Data from the peer on ``connection_id``."""

    connection_id: int
    public_key: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OobReceived:
    """Out-of-band data from the relay client whose DHT pk is ``public_key``."""

    public_key: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class OnionResponseReceived:
    """A raw onion response (0x84/0x86) the relay passed back to us."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    """Our ping was answered after ``rtt_s`` seconds."""

    rtt_s: float


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over (``reason`` says why); the driver should close the socket."""

    reason: str


ClientEvent = (
    Confirmed
    | RouteRegistered
    | RouteRefused
    | RouteOnline
    | RouteOffline
    | RoutedData
    | OobReceived
    | OnionResponseReceived
    | PongReceived
    | ConnectionClosed
)


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """A snapshot of one client connection's counters."""

    status: ClientStatus
    frames_received: int
    frames_sent: int
    bytes_received: int
    bytes_sent: int
    bad_packets: int
    dropped_data: int
    pings_sent: int
    pongs_received: int
    last_rtt_s: float | None


@dataclass(slots=True)
class _Slot:
    status: RouteStatus
    public_key: bytes


class RelayClientConnection:
    """One connection from us (identified by our DHT key pair) to one TCP relay."""

    def __init__(
        self,
        self_keys: KeyPair,
        relay_public_key: bytes,
        rng: Rng,
        now: float,
        *,
        max_send_buffer_bytes: int = DEFAULT_MAX_DATA_BYTES,
        max_recv_buffer_bytes: int = 64 * 1024,
    ) -> None:
        self.self_keys = self_keys
        self.relay_public_key = relay_public_key
        self._rng = rng
        self.status = ClientStatus.HANDSHAKING
        self.close_reason: str | None = None
        self._stream = StreamBuffer(max_recv_buffer_bytes)
        self._outbox = Outbox(max_send_buffer_bytes, DEFAULT_MAX_CONTROL_BYTES)
        self._events: deque[ClientEvent] = deque()
        self._cipher: FrameCipher | None = None
        self._slots: dict[int, _Slot] = {}
        self._kill_at: float | None = now + TCP_CONNECTION_TIMEOUT_S
        self._last_pinged: float | None = None
        self._ping_id = 0
        self._ping_sent_at = 0.0
        # counters
        self._frames_received = 0
        self._frames_sent = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._bad_packets = 0
        self._dropped_data = 0
        self._pings_sent = 0
        self._pongs_received = 0
        self._last_rtt_s: float | None = None
        # handshake
        temp = KeyPair.generate(rng)
        self._temp_secret_key = temp.secret_key
        self._send_base_nonce = rng(NONCE_SIZE)
        hello = ClientHandshake.seal(
            self_keys.public_key,
            shared_key(relay_public_key, self_keys.secret_key),
            rng(NONCE_SIZE),
            HandshakePlain(temp.public_key, self._send_base_nonce),
        )
        self._pending_raw = hello.encode()

    # ------------------------------------------------------------------ driver side

    def data_to_send(self, max_bytes: int | None = None) -> bytes:
        """Bytes the driver must write to the stream, in order (empty: nothing to write)."""
        if self.status is ClientStatus.CLOSED:
            return b""
        out = self._pending_raw
        self._pending_raw = b""
        if self._cipher is not None and self._outbox:
            out += self._outbox.drain(self._cipher, max_bytes)
        self._bytes_sent += len(out)
        return out

    def wants_write(self) -> bool:
        """True when :meth:`data_to_send` would return bytes."""
        return self.status is not ClientStatus.CLOSED and (
            bool(self._pending_raw) or (self._cipher is not None and bool(self._outbox))
        )

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the stream."""
        if self.status is ClientStatus.CLOSED or not data:
            return
        self._bytes_received += len(data)
        try:
            self._stream.feed(data)
            self._process(now)
        except BadPacket as exc:
            self._bad_packets += 1
            self._close(f"bad input: {exc}")

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The stream ended or failed."""
        self._close(reason)

    def close(self) -> None:
        """Close on our side (no more output; the driver closes the socket)."""
        self._close("closed locally")

    def next_event(self) -> ClientEvent | None:
        """The next event for the layer above, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run."""
        if self.status is ClientStatus.CLOSED:
            return None
        if self.status is ClientStatus.HANDSHAKING:
            return self._kill_at
        assert self._last_pinged is not None
        if self._ping_id:
            return self._last_pinged + TCP_PING_TIMEOUT_S
        return self._last_pinged + TCP_PING_FREQUENCY_S

    def handle_timer(self, now: float) -> None:
        """Connect timeout, periodic ping, pong timeout."""
        if self.status is ClientStatus.HANDSHAKING:
            if self._kill_at is not None and now >= self._kill_at:
                self._close("handshake timeout")
            return
        if self.status is not ClientStatus.CONFIRMED:
            return
        assert self._last_pinged is not None
        if self._ping_id and now >= self._last_pinged + TCP_PING_TIMEOUT_S:
            self._close("ping timeout")
            return
        if now >= self._last_pinged + TCP_PING_FREQUENCY_S:
            self.send_ping(now)

    # ------------------------------------------------------------------ commands

    def send_ping(self, now: float) -> None:
        """Ping the relay now (replaces an outstanding ping)."""
        if self.status is not ClientStatus.CONFIRMED:
            return
        ping_id = 0
        while ping_id == 0:
            ping_id = int.from_bytes(self._rng(8), "big")
        self._ping_id = ping_id
        self._ping_sent_at = now
        self._last_pinged = now
        self._pings_sent += 1
        self._control(Ping(ping_id).encode())

    def send_routing_request(self, public_key: bytes) -> bool:
        """Ask for a route to the peer with DHT pk ``public_key``."""
        return self._control(RoutingRequest(public_key).encode())

    def send_disconnect(self, connection_id: int) -> bool:
        """Free the slot ``connection_id`` (16..255) at the relay."""
        slot = self._slots.pop(connection_id, None)
        if slot is None:
            return False  # the relay would kill us for an unused id
        return self._control(DisconnectNotification(connection_id).encode())

    def send_data(self, connection_id: int, payload: bytes) -> bool:
        """Send ``payload`` to the peer on an online slot; False if offline or queue full."""
        slot = self._slots.get(connection_id)
        if (
            self.status is not ClientStatus.CONFIRMED
            or slot is None
            or slot.status is not RouteStatus.ONLINE
            or not 1 <= len(payload) < MAX_FRAME_PLAIN_SIZE_BYTES
        ):
            return False
        return self._data(Data(connection_id, payload).encode())

    def send_oob(self, public_key: bytes, data: bytes) -> bool:
        """Out-of-band ``data`` (1..1024 bytes) to the relay client ``public_key``."""
        if self.status is not ClientStatus.CONFIRMED or not (
            1 <= len(data) <= MAX_OOB_DATA_SIZE_BYTES
        ):
            return False
        return self._data(OobSend(public_key, data).encode())

    def send_onion_request(self, payload: bytes) -> bool:
        """An onion request ``[nonce][IPP][pk][box]`` for the relay to send as node A."""
        if self.status is not ClientStatus.CONFIRMED:
            return False
        try:
            packet = OnionRequest(payload).encode()
        except ValueError:
            return False
        if len(packet) > MAX_FRAME_PLAIN_SIZE_BYTES:
            return False
        return self._data(packet)

    def can_send(self, size: int) -> bool:
        """Would a data packet of ``size`` payload bytes fit in the send queue now?"""
        return self.status is ClientStatus.CONFIRMED and self._outbox.data_room(size + 1)

    # ------------------------------------------------------------------ queries

    def route_status(self, connection_id: int) -> RouteStatus:
        """Status of slot ``connection_id``."""
        slot = self._slots.get(connection_id)
        return RouteStatus.UNUSED if slot is None else slot.status

    def connection_id_for(self, public_key: bytes) -> int | None:
        """The slot registered for ``public_key``, if any."""
        for conn_id, slot in self._slots.items():
            if slot.public_key == public_key:
                return conn_id
        return None

    def routes(self) -> dict[int, tuple[bytes, RouteStatus]]:
        """All used slots: ``connection_id -> (peer pk, status)``."""
        return {cid: (s.public_key, s.status) for cid, s in sorted(self._slots.items())}

    def statistics(self) -> ClientStatistics:
        """A frozen snapshot of the counters."""
        return ClientStatistics(
            self.status,
            self._frames_received,
            self._frames_sent,
            self._bytes_received,
            self._bytes_sent,
            self._bad_packets,
            self._dropped_data,
            self._pings_sent,
            self._pongs_received,
            self._last_rtt_s,
        )

    # ------------------------------------------------------------------ internals

    def _control(self, plain: bytes) -> bool:
        if self.status is ClientStatus.CLOSED:
            return False
        if not self._outbox.push_control(plain):
            self._close("control queue overflow (relay not reading)")
            return False
        self._frames_sent += 1
        return True

    def _data(self, plain: bytes) -> bool:
        if self._outbox.push_data(plain):
            self._frames_sent += 1
            return True
        self._dropped_data += 1
        return False

    def _close(self, reason: str) -> None:
        if self.status is ClientStatus.CLOSED:
            return
        self.status = ClientStatus.CLOSED
        self.close_reason = reason
        self._outbox.clear()
        self._pending_raw = b""
        self._slots.clear()
        self._events.append(ConnectionClosed(reason))

    def _process(self, now: float) -> None:
        if self._cipher is None:
            raw = self._stream.take_exact(SERVER_HANDSHAKE_SIZE_BYTES)
            if raw is NEED_DATA:
                return
            assert isinstance(raw, bytes)
            plain = ServerHandshake.decode(raw).open_untrusted(
                shared_key(self.relay_public_key, self.self_keys.secret_key)
            )
            session = shared_key_untrusted(plain.temp_public_key, self._temp_secret_key)
            self._temp_secret_key = b""
            self._cipher = FrameCipher(session, self._send_base_nonce, plain.base_nonce)
            self.status = ClientStatus.CONFIRMED
            self._kill_at = None
            self._events.append(Confirmed())
            self.send_ping(now)
        while self.status is ClientStatus.CONFIRMED:
            cipher_text = self._stream.next_frame()
            if cipher_text is NEED_DATA:
                return
            assert isinstance(cipher_text, bytes)
            plain_frame = self._cipher.open_untrusted(cipher_text)
            self._frames_received += 1
            self._handle_packet(plain_frame, now)

    def _handle_packet(self, plain: bytes, now: float) -> None:
        if len(plain) <= 1:
            raise BadPacket("packet of one byte")  # toxcore kills on length <= 1
        packet = decode_packet_untrusted(plain)
        match packet:
            case RoutingResponse(connection_id=cid, public_key=pk):
                if packet.refused:
                    self._events.append(RouteRefused(pk))
                elif cid not in self._slots:
                    self._slots[cid] = _Slot(RouteStatus.REGISTERED, pk)
                    self._events.append(RouteRegistered(cid, pk))
            case ConnectNotification(connection_id=cid):
                if cid < NUM_RESERVED_PORTS:
                    raise BadPacket("connect notification for a reserved id")
                slot = self._slots.get(cid)
                if slot is not None and slot.status is RouteStatus.REGISTERED:
                    slot.status = RouteStatus.ONLINE
                    self._events.append(RouteOnline(cid, slot.public_key))
            case DisconnectNotification(connection_id=cid):
                if cid < NUM_RESERVED_PORTS:
                    raise BadPacket("disconnect notification for a reserved id")
                slot = self._slots.get(cid)
                if slot is not None and slot.status is RouteStatus.ONLINE:
                    slot.status = RouteStatus.REGISTERED
                    self._events.append(RouteOffline(cid, slot.public_key))
            case Ping(ping_id=ping_id):
                if ping_id:
                    self._control(Pong(ping_id).encode())
            case Pong(ping_id=ping_id):
                if ping_id == self._ping_id:
                    self._ping_id = 0
                    self._pongs_received += 1
                    self._last_rtt_s = now - self._ping_sent_at
                    self._events.append(PongReceived(self._last_rtt_s))
            case OobRecv(public_key=pk, data=data):
                self._events.append(OobReceived(pk, data))
            case OnionResponse(payload=payload):
                self._events.append(OnionResponseReceived(payload))
            case Forwarding():
                self._dropped_data += 1  # we never ask for forwarding; ignore as toxcore would
            case Data(connection_id=cid, payload=payload):
                if cid - NUM_RESERVED_PORTS >= NUM_CLIENT_CONNECTIONS:
                    raise BadPacket("data on an impossible connection id")
                slot = self._slots.get(cid)
                if slot is None or slot.status is not RouteStatus.ONLINE:
                    self._dropped_data += 1
                else:
                    self._events.append(RoutedData(cid, slot.public_key, payload))
            case _:
                raise BadPacket(f"packet {plain[0]:#04x} is not for clients")
