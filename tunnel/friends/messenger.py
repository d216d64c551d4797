"""The Messenger core, sans-IO: friends, online state, messages, receipts, custom packets.

tox-protocol.md 8.2-8.4. Friends are numbered in the order they are added (like toxcore).

Theory of operation, per friend::

    CONFIRMED --(friend_connection up)--> send ONLINE; still CONFIRMED
    CONFIRMED --(ONLINE received)--> ONLINE: send our NICKNAME, STATUSMESSAGE, USERSTATUS
    ONLINE --(connection down)--> CONFIRMED

As toxcore does, lossless packets other than ONLINE that arrive before the friend's ONLINE are
dropped (counted); lossy packets are not filtered. The friend's name and status message are
stored when valid and otherwise ignored. Messages go out without congestion control (as in
toxcore) and return a message id; the read receipt fires when net_crypto reports the packet
number acknowledged (there is no receipt packet). Custom lossless packets (160..191) are
congestion-controlled and raise :class:`~tunnel.netcrypto.session.SendQueueFull` for
back-pressure: nothing is ever dropped silently; a Trio driver waits for
:meth:`Messenger.send_capacity` and retries. Custom lossy packets (200..254) are sent at once.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from tunnel.errors import BadPacket
from tunnel.friends.connection import (
    FriendConnections,
    FriendDown,
    FriendLossless,
    FriendLossy,
    FriendRequestPacket,
    FriendUp,
    RelaysShared,
)
from tunnel.netcrypto.core import NetCrypto
from tunnel.netcrypto.session import NotConnected, SendQueueFull, SessionStats
from tunnel.wire.ip_port import Addr
from tunnel.wire.messenger import (
    CUSTOM_LOSSLESS_FIRST,
    CUSTOM_LOSSLESS_LAST,
    CUSTOM_LOSSY_FIRST,
    CUSTOM_LOSSY_LAST,
    MAX_CUSTOM_PACKET_SIZE_BYTES,
    ONLINE,
    PACKET_ID_ACTION,
    PACKET_ID_MESSAGE,
    PACKET_ID_NICKNAME,
    PACKET_ID_OFFLINE,
    PACKET_ID_ONLINE,
    PACKET_ID_STATUSMESSAGE,
    PACKET_ID_TYPING,
    PACKET_ID_USERSTATUS,
    USERSTATUS_MAX,
    decode_byte_untrusted,
    decode_text_untrusted,
    encode_text,
    encode_userstatus,
)
from tunnel.wire.onion_data import FriendRequestPayload
from tunnel.wire.packed_node import PackedNode

__all__ = [
    "EXTENSION_LOSSLESS_FIRST",
    "EXTENSION_LOSSLESS_LAST",
    "CustomLossless",
    "CustomLossy",
    "ExtensionLossless",
    "FriendOffline",
    "FriendOnline",
    "FriendRelays",
    "FriendRequestOverConnection",
    "FriendState",
    "FriendStats",
    "MessageReceived",
    "Messenger",
    "MessengerEvent",
    "NotConnected",
    "ReadReceipt",
    "SendQueueFull",
]


class FriendState(enum.IntEnum):
    """toxcore's friend states (8.4)."""

    NOFRIEND = 0
    ADDED = 1
    REQUESTED = 2
    CONFIRMED = 3
    ONLINE = 4


@dataclass(frozen=True, slots=True)
class FriendOnline:
    """The friend is online (its ONLINE packet arrived)."""

    friend: int


@dataclass(frozen=True, slots=True)
class FriendOffline:
    """The friend went offline (``reason``: why its session ended, for the logs)."""

    friend: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A text message (``action``: a /me action)."""

    friend: int
    text: bytes
    action: bool


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    """The friend's net_crypto acknowledged our message ``message_id``."""

    friend: int
    message_id: int


@dataclass(frozen=True, slots=True)
class CustomLossless:
    """A custom lossless packet ``[160..191][data]``."""

    friend: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ExtensionLossless:
    """A lossless packet ``[0x90..0x9F][data]`` from the friend: our negotiated extensions
    (toxcore 0.2.18 ignores these ids, :data:`EXTENSION_LOSSLESS_FIRST`)."""

    friend: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CustomLossy:
    """A custom lossy packet ``[200..254][data]``."""

    friend: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FriendRelays:
    """The friend shared TCP relays it is connected to (SHARE_RELAYS): use them to reach it."""

    friend: int
    relays: tuple[PackedNode, ...]


@dataclass(frozen=True, slots=True)
class FriendRequestOverConnection:
    """A friend request that came over the friend's connection (friend_connection id 18).

    Not filtered here: the node applies the onion request rules (nospam, dedupe, already a
    friend) with the same :class:`tunnel.onion.friend_requests.FriendRequests`.
    """

    friend: int
    public_key: bytes
    request: FriendRequestPayload


MessengerEvent = (
    FriendOnline
    | FriendOffline
    | MessageReceived
    | ReadReceipt
    | CustomLossless
    | CustomLossy
    | ExtensionLossless
    | FriendRelays
    | FriendRequestOverConnection
)

EXTENSION_LOSSLESS_FIRST = 0x90
EXTENSION_LOSSLESS_LAST = 0x9F
"""Lossless ids in toxcore's internal range (16..159) that c-toxcore 0.2.18 does not use and
drops without telling the application (``Messenger.c`` ``m_handle_packet`` -> default ->
``handle_custom_lossless_packet`` returns -1 outside 160..191). Our peers negotiate extensions
with them (issue 11), so a toxcore friend never sees anything it does not understand."""


@dataclass(frozen=True, slots=True)
class FriendStats:
    """Per-friend statistics snapshot."""

    state: FriendState
    messages_sent: int
    messages_received: int
    custom_lossless_sent: int
    custom_lossless_received: int
    custom_lossy_sent: int
    custom_lossy_received: int
    dropped: dict[str, int]
    session: SessionStats | None


@dataclass(slots=True)
class _Friend:
    number: int
    real_pk: bytes
    state: FriendState = FriendState.CONFIRMED
    name: bytes = b""
    status_message: bytes = b""
    user_status: int = 0
    typing: bool = False
    next_message_id: int = 1
    receipts: list[tuple[int, int]] = field(default_factory=list)  # (packet number, msg id)
    counters: Counter[str] = field(default_factory=Counter)


class Messenger:
    """Friends and their traffic; a :class:`tunnel.core.DatagramCore` over friend_connection."""

    def __init__(
        self, netcrypto: NetCrypto, *, name: bytes = b"", status_message: bytes = b""
    ) -> None:
        self.connections = FriendConnections(netcrypto)
        self.batched_receive = False
        """True: :meth:`receive` only hands the datagram to net_crypto; the caller drains
        :meth:`events` after each batch of datagrams (the node's glue does), which processes
        everything in order then (per datagram it cost a tenth of a bulk receiver's time)."""
        self.netcrypto = netcrypto
        self.name = name
        self.status_message = status_message
        self.user_status = 0
        self._friends: list[_Friend | None] = []
        self._by_pk: dict[bytes, _Friend] = {}
        self._events: list[MessengerEvent] = []
        self._now = 0.0

    # ------------------------------------------------------------------ friend list

    def add_friend_norequest(
        self,
        real_pk: bytes,
        now: float,
        *,
        dht_pk: bytes | None = None,
        udp_addr: Addr | None = None,
    ) -> int:
        """Add a friend by key (state CONFIRMED) and return its number."""
        existing = self._by_pk.get(real_pk)
        if existing is not None:
            self.connections.add_friend(real_pk, now, dht_pk=dht_pk, udp_addr=udp_addr)
            return existing.number
        friend = _Friend(len(self._friends), real_pk)
        self._friends.append(friend)
        self._by_pk[real_pk] = friend
        self.connections.add_friend(real_pk, now, dht_pk=dht_pk, udp_addr=udp_addr)
        self._process(now)
        return friend.number

    def delete_friend(self, friend: int, now: float) -> None:
        """Forget a friend (its number is not reused)."""
        record = self._friend(friend)
        self._friends[friend] = None
        del self._by_pk[record.real_pk]
        self.connections.remove_friend(record.real_pk, now)
        self._process(now)

    def friend_number(self, real_pk: bytes) -> int | None:
        """The number of the friend with ``real_pk``."""
        friend = self._by_pk.get(real_pk)
        return None if friend is None else friend.number

    def friend_public_key(self, friend: int) -> bytes:
        """The friend's real public key (raises ``KeyError`` for unknown numbers)."""
        return self._friend(friend).real_pk

    def friend_state(self, friend: int) -> FriendState:
        """The friend's state."""
        return self._friend(friend).state

    def friend_name(self, friend: int) -> bytes:
        """The last valid name the friend sent."""
        return self._friend(friend).name

    def friend_status_message(self, friend: int) -> bytes:
        """The last valid status message the friend sent."""
        return self._friend(friend).status_message

    def _friend(self, friend: int) -> _Friend:
        record = self._friends[friend] if 0 <= friend < len(self._friends) else None
        if record is None:
            raise KeyError(f"no friend number {friend}")
        return record

    # ------------------------------------------------------------------ sending

    def send_message(self, friend: int, text: bytes, now: float, *, action: bool = False) -> int:
        """Send a message; returns its id (a :class:`ReadReceipt` follows on delivery).

        Raises:
            NotConnected: the friend is not online.
            ValueError: empty or longer than 1372 bytes.
        """
        record = self._online(friend)
        payload = encode_text(PACKET_ID_ACTION if action else PACKET_ID_MESSAGE, text)
        number = self.connections.send(record.real_pk, payload, now, congestion=False)
        message_id = record.next_message_id
        record.next_message_id = (record.next_message_id + 1) & 0xFFFFFFFF or 1
        record.receipts.append((number, message_id))
        record.counters["messages_sent"] += 1
        return message_id

    def send_custom_lossless(self, friend: int, data: bytes, now: float) -> None:
        """Send ``[160..191][data]`` reliably and in order: at most 1373 bytes, or the large
        limit agreed with a friend that is a ``tunnel`` node (issue 8).

        Raises:
            NotConnected: the friend is not online.
            SendQueueFull: back-pressure; wait for :meth:`send_capacity` and retry.
            ValueError: bad id or size.
        """
        self._check_custom_lossless(friend, data)
        record = self._online(friend)
        self.connections.send(record.real_pk, data, now, congestion=True)
        record.counters["custom_lossless_sent"] += 1

    def send_custom_lossless_many(self, friend: int, packets: list[bytes], now: float) -> int:
        """Queue custom lossless packets in order while there is room; how many were queued.

        Raises:
            NotConnected: the friend is not online.
            ValueError: a bad id or size (the packets before it may be queued).
        """
        for data in packets:
            self._check_custom_lossless(friend, data)
        record = self._online(friend)
        queued = self.connections.send_many(record.real_pk, packets, now)
        record.counters["custom_lossless_sent"] += queued
        return queued

    def send_custom_lossy(self, friend: int, data: bytes, now: float) -> None:
        """Send ``[200..254][data]`` (at most 1373 bytes) once, unreliably.

        Raises:
            NotConnected: the friend is not online.
            ValueError: bad id or size.
        """
        if not (
            1 <= len(data) <= MAX_CUSTOM_PACKET_SIZE_BYTES
            and CUSTOM_LOSSY_FIRST <= data[0] <= CUSTOM_LOSSY_LAST
        ):
            raise ValueError("custom lossy packets are [200..254][data], <= 1373 bytes")
        record = self._online(friend)
        self.connections.send_lossy(record.real_pk, data, now)
        record.counters["custom_lossy_sent"] += 1

    def send_extension(self, friend: int, data: bytes, now: float) -> None:
        """Send ``[0x90..0x9F][data]`` reliably, without congestion back-pressure (small,
        rare control packets of our extensions; toxcore friends drop them silently).

        Raises:
            NotConnected: the friend is not online.  ValueError: bad id or size.
        """
        if not (
            1 <= len(data) <= MAX_CUSTOM_PACKET_SIZE_BYTES
            and EXTENSION_LOSSLESS_FIRST <= data[0] <= EXTENSION_LOSSLESS_LAST
        ):
            raise ValueError("extension packets are [0x90..0x9F][data], <= 1373 bytes")
        self._control(self._online(friend), data, now)

    def send_capacity(self, friend: int) -> int:
        """Custom lossless packets that may be queued now without :class:`SendQueueFull`."""
        record = self._friend(friend)
        if record.state is not FriendState.ONLINE:
            return 0
        return self.netcrypto.send_capacity(record.real_pk)

    def set_name(self, name: bytes, now: float) -> None:
        """Our name (sent to friends as they come online, and now to online ones)."""
        encode_text(PACKET_ID_NICKNAME, name)
        self.name = name
        self._broadcast(encode_text(PACKET_ID_NICKNAME, name), now)

    def set_status_message(self, message: bytes, now: float) -> None:
        """Our status message."""
        encode_text(PACKET_ID_STATUSMESSAGE, message)
        self.status_message = message
        self._broadcast(encode_text(PACKET_ID_STATUSMESSAGE, message), now)

    def _broadcast(self, payload: bytes, now: float) -> None:
        for record in self._by_pk.values():
            if record.state is FriendState.ONLINE:
                self._control(record, payload, now)

    def _check_custom_lossless(self, friend: int, data: bytes) -> None:
        limit = MAX_CUSTOM_PACKET_SIZE_BYTES
        if len(data) > limit:  # more only with a tunnel node that agreed it (issue 8)
            session = self.netcrypto.sessions.get(self._friend(friend).real_pk)
            if session is not None:
                limit = session.max_lossless_payload
        if not (
            1 <= len(data) <= limit and CUSTOM_LOSSLESS_FIRST <= data[0] <= CUSTOM_LOSSLESS_LAST
        ):
            raise ValueError(f"custom lossless packets are [160..191][data], <= {limit} bytes")

    def _online(self, friend: int) -> _Friend:
        record = self._friend(friend)
        if record.state is not FriendState.ONLINE:
            raise NotConnected("friend is not online")
        return record

    def _control(self, record: _Friend, payload: bytes, now: float) -> None:
        try:
            self.connections.send(record.real_pk, payload, now, congestion=False)
        except (NotConnected, SendQueueFull):
            record.counters["control_send_failed"] += 1

    # ------------------------------------------------------------------ stats and events

    def statistics(self, friend: int) -> FriendStats:
        """A snapshot of the friend's counters and its net_crypto session."""
        record = self._friend(friend)
        c = record.counters
        dropped = {k: v for k, v in c.items() if k.startswith("dropped_")}
        return FriendStats(
            record.state,
            c["messages_sent"],
            c["messages_received"],
            c["custom_lossless_sent"],
            c["custom_lossless_received"],
            c["custom_lossy_sent"],
            c["custom_lossy_received"],
            dropped,
            self.netcrypto.statistics(record.real_pk),
        )

    def events(self) -> list[MessengerEvent]:
        """Drain pending events."""
        self._process(self._now)
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ DatagramCore

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """A UDP datagram (net_crypto kinds)."""
        if self.batched_receive:
            self.netcrypto.receive(data, addr, now)
            return
        self.connections.receive(data, addr, now)
        self._process(now)

    def receive_tcp(self, data: bytes, sender_dht_pk: bytes, via: object, now: float) -> None:
        """A net_crypto packet from a TCP relay."""
        self.netcrypto.receive_tcp(data, sender_dht_pk, via, now)
        self._process(now)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain UDP datagrams."""
        return self.connections.datagrams_to_send()

    def next_deadline(self) -> float | None:
        """Earliest timer below us."""
        return self.connections.next_deadline()

    def handle_timer(self, now: float) -> None:
        """Run timers and process what they produced."""
        self.connections.handle_timer(now)
        self._process(now)

    # ------------------------------------------------------------------ processing

    def _process(self, now: float) -> None:
        self._now = max(self._now, now, self.netcrypto.last_now)
        now = self._now
        for event in self.connections.events():
            record = self._by_pk.get(event.peer_pk)
            if record is None:
                continue
            if isinstance(event, FriendUp):
                self._control(record, ONLINE, now)
            elif isinstance(event, FriendDown):
                record.receipts.clear()
                if record.state is FriendState.ONLINE:
                    record.state = FriendState.CONFIRMED
                    self._events.append(FriendOffline(record.number, event.reason))
            elif isinstance(event, FriendLossless):
                self._handle_lossless(record, event.payload, now)
            elif isinstance(event, FriendLossy):
                self._handle_lossy(record, event.payload)
            elif isinstance(event, RelaysShared):
                self._events.append(FriendRelays(record.number, event.relays))
            elif isinstance(event, FriendRequestPacket):
                self._events.append(
                    FriendRequestOverConnection(record.number, record.real_pk, event.request)
                )
        for record in self._by_pk.values():
            if record.receipts:
                self._check_receipts(record)

    def _check_receipts(self, record: _Friend) -> None:
        done = 0
        for number, message_id in record.receipts:
            if not self.netcrypto.delivered(record.real_pk, number):
                break
            self._events.append(ReadReceipt(record.number, message_id))
            done += 1
        if done:
            del record.receipts[:done]

    def _go_online(self, record: _Friend, now: float) -> None:
        record.state = FriendState.ONLINE
        self._events.append(FriendOnline(record.number))
        self._control(record, encode_text(PACKET_ID_NICKNAME, self.name), now)
        self._control(record, encode_text(PACKET_ID_STATUSMESSAGE, self.status_message), now)
        self._control(record, encode_userstatus(self.user_status), now)

    def _handle_lossless(self, record: _Friend, payload: bytes, now: float) -> None:
        packet_id = payload[0]
        if packet_id == PACKET_ID_ONLINE:
            if len(payload) != 1:
                record.counters["dropped_bad_online"] += 1
            elif record.state is not FriendState.ONLINE:
                self._go_online(record, now)
            return
        if record.state is not FriendState.ONLINE:
            record.counters["dropped_before_online"] += 1
            return
        try:
            if packet_id == PACKET_ID_OFFLINE:
                if len(payload) == 1:
                    record.state = FriendState.CONFIRMED
                    self._events.append(FriendOffline(record.number, "the friend sent OFFLINE"))
            elif packet_id == PACKET_ID_NICKNAME:
                record.name = decode_text_untrusted(payload)
            elif packet_id == PACKET_ID_STATUSMESSAGE:
                record.status_message = decode_text_untrusted(payload)
            elif packet_id == PACKET_ID_USERSTATUS:
                record.user_status = decode_byte_untrusted(payload, packet_id, USERSTATUS_MAX)
            elif packet_id == PACKET_ID_TYPING:
                record.typing = bool(decode_byte_untrusted(payload, packet_id))
            elif packet_id in (PACKET_ID_MESSAGE, PACKET_ID_ACTION):
                text = decode_text_untrusted(payload)
                record.counters["messages_received"] += 1
                self._events.append(
                    MessageReceived(record.number, text, packet_id == PACKET_ID_ACTION)
                )
            elif CUSTOM_LOSSLESS_FIRST <= packet_id <= CUSTOM_LOSSLESS_LAST:
                record.counters["custom_lossless_received"] += 1
                self._events.append(CustomLossless(record.number, payload))
            elif EXTENSION_LOSSLESS_FIRST <= packet_id <= EXTENSION_LOSSLESS_LAST:
                self._events.append(ExtensionLossless(record.number, payload))
            else:
                record.counters["dropped_unhandled_id"] += 1
        except BadPacket:
            record.counters["dropped_malformed"] += 1

    def _handle_lossy(self, record: _Friend, payload: bytes) -> None:
        if CUSTOM_LOSSY_FIRST <= payload[0] <= CUSTOM_LOSSY_LAST:
            record.counters["custom_lossy_received"] += 1
            self._events.append(CustomLossy(record.number, payload))
        else:
            record.counters["dropped_unhandled_lossy"] += 1
