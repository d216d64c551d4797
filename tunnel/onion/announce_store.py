"""The announce-node role ("D"): stores announcements, answers searches, forwards data.

tox-protocol.md 5.4.3 and 5.6 (c-toxcore 0.2.18 ``onion_announce.c``).

Theory of operation
-------------------
An 0x83 announce request arrives from node C with node C's 177-byte return blob appended.
We open it with ``K(our DHT sk, sender pk)``. If its ``ping_id`` is one we handed out for this
sender and this node C (current or previous 300 s window), the sender is added to, or
refreshed in, the announcement table with its data pk and return path. Otherwise we only look
up the *search* pk. The answer (0x84, same shared key, random nonce) tells the requester:

* ``is_stored = 0, ping_id``: nothing here (or a stale announcement of the sender's own key);
* ``is_stored = 1, data pk``: someone else announced the searched key here;
* ``is_stored = 2, ping_id``: the sender itself is announced here with this data pk.

plus up to 4 DHT nodes close to the search pk (from the injected ``get_close_nodes``; LAN
addresses only if node C is on a LAN). An 0x85 data request for an announced key is forwarded
to the announced client, as 0x86, along its stored return path.

Ping ids are ``HMAC-SHA512-256(key, window u64 || sender pk || IPP(node C))`` with
``window = floor(now / 300)``: stateless, so a flood of requests costs no memory. The table
holds at most ``ONION_ANNOUNCE_MAX_ENTRIES = 160`` entries; each lives 300 s after its last
refresh. A new key takes a timed-out slot, or replaces the entry farthest from our DHT pk if
it is closer than that entry (c-toxcore's policy: the closest keys are kept).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from tunnel.crypto import KeyPair, Rng, SharedKeyCache
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.ip_port import Addr, IPPort, encode_onion_ip_port, ip_is_lan
from tunnel.wire.onion import (
    ANNOUNCE_IS_STORED_NO,
    ANNOUNCE_IS_STORED_OTHER,
    ANNOUNCE_IS_STORED_SELF,
    ANNOUNCE_REQUEST_SIZE,
    DATA_REQUEST_MIN_SIZE,
    MAX_SENT_NODES,
    ONION_MAX_PACKET_SIZE_BYTES,
    ONION_RETURN_3_SIZE,
    PACKET_ANNOUNCE_REQUEST,
    PACKET_ONION_DATA_REQUEST,
    AnnounceRequest,
    AnnounceResponse,
    AnnounceResponsePayload,
    DataRequest,
    OnionResponse3,
    cached_shared_key_untrusted,
)
from tunnel.wire.packed_node import PackedNode

ONION_ANNOUNCE_MAX_ENTRIES = 160
ONION_ANNOUNCE_TIMEOUT_S = 300
PING_ID_WINDOW_S = ONION_ANNOUNCE_TIMEOUT_S
HMAC_KEY_SIZE = 32
ANNOUNCE_STORE_PACKET_KINDS = frozenset({PACKET_ANNOUNCE_REQUEST, PACKET_ONION_DATA_REQUEST})

GetCloseNodes = Callable[[bytes, int], Sequence[PackedNode]]
"""``get_close_nodes(public_key, count)``: up to ``count`` DHT nodes closest to the key."""


def distance_less(base: bytes, a: bytes, b: bytes) -> bool:
    """True if ``a`` is strictly closer (XOR metric) to ``base`` than ``b`` is."""
    ref = int.from_bytes(base, "big")
    return int.from_bytes(a, "big") ^ ref < int.from_bytes(b, "big") ^ ref


@dataclass(slots=True)
class AnnounceEntry:
    """One stored announcement."""

    public_key: bytes
    return_addr: Addr
    return_path: bytes
    data_public_key: bytes
    announce_time: float


@dataclass(slots=True)
class AnnounceStoreStats:
    """Counters (snapshot with :meth:`OnionAnnounceStore.statistics`)."""

    announce_requests: int = 0
    announcements_stored: int = 0
    announcements_rejected_full: int = 0
    data_forwarded: int = 0
    dropped_malformed: int = 0
    dropped_decrypt: int = 0
    dropped_no_entry: int = 0


class OnionAnnounceStore:
    """Sans-IO announce node (a :class:`tunnel.core.DatagramCore` for kinds 0x83 and 0x85).

    Args:
        dht_keys: our DHT key pair (announce requests are encrypted to our DHT pk).
        rng: randomness for the HMAC key and response nonces.
        get_close_nodes: the DHT's close-node lookup (injected; see :data:`GetCloseNodes`).
        max_entries: table size (160 in toxcore).
    """

    def __init__(
        self,
        dht_keys: KeyPair,
        rng: Rng,
        get_close_nodes: GetCloseNodes,
        *,
        max_entries: int = ONION_ANNOUNCE_MAX_ENTRIES,
    ) -> None:
        self._dht_pk = dht_keys.public_key
        self._rng = rng
        self._get_close_nodes = get_close_nodes
        self._keys = SharedKeyCache(dht_keys.secret_key)
        self._hmac_key = rng(HMAC_KEY_SIZE)
        self._max_entries = max_entries
        self._entries: dict[bytes, AnnounceEntry] = {}
        self._out: list[tuple[Addr, bytes]] = []
        self.stats = AnnounceStoreStats()

    # --- DatagramCore ---------------------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle an 0x83 or 0x85 (with node C's return blob appended) from ``addr``."""
        try:
            kind = data[0] if data else -1
            if kind == PACKET_ANNOUNCE_REQUEST:
                self._handle_announce(data, addr, now)
            elif kind == PACKET_ONION_DATA_REQUEST:
                self._handle_data(data, now)
            else:
                raise BadPacket("not an announce-store packet")
        except DecryptError:
            self.stats.dropped_decrypt += 1
        except BadPacket:
            self.stats.dropped_malformed += 1

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain the datagrams to send."""
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        """When the oldest announcement expires (purged by :meth:`handle_timer`)."""
        oldest = next(iter(self._entries.values()), None)
        return None if oldest is None else oldest.announce_time + ONION_ANNOUNCE_TIMEOUT_S

    def handle_timer(self, now: float) -> None:
        """Forget expired announcements."""
        while self._entries:
            pk, oldest = next(iter(self._entries.items()))
            if not self._expired(oldest, now):
                break
            del self._entries[pk]

    # --- queries --------------------------------------------------------------------------

    def statistics(self) -> AnnounceStoreStats:
        """A snapshot of the counters."""
        return AnnounceStoreStats(
            **{f.name: getattr(self.stats, f.name) for f in fields(self.stats)}
        )

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, public_key: bytes, now: float) -> AnnounceEntry | None:
        """The live announcement of ``public_key``, if any."""
        entry = self._entries.get(public_key)
        if entry is None or self._expired(entry, now):
            return None
        return entry

    def announced_keys(self, now: float) -> list[bytes]:
        """Keys with a live announcement."""
        return [pk for pk, e in self._entries.items() if not self._expired(e, now)]

    def ping_id(
        self, sender_public_key: bytes, source: Addr, now: float, *, back: int = 0
    ) -> bytes:
        """The ping id for ``sender_public_key`` via node C at ``source`` (``back`` windows ago)."""
        window = int(now // PING_ID_WINDOW_S) - back
        message = (
            window.to_bytes(8, "big", signed=True)
            + sender_public_key
            + encode_onion_ip_port(IPPort.from_addr(source))
        )
        return hmac.new(self._hmac_key, message, hashlib.sha512).digest()[:32]

    # --- internals ------------------------------------------------------------------------

    @staticmethod
    def _expired(entry: AnnounceEntry, now: float) -> bool:
        return entry.announce_time + ONION_ANNOUNCE_TIMEOUT_S <= now

    def _ping_id_valid(self, ping_id: bytes, sender: bytes, source: Addr, now: float) -> bool:
        return any(
            hmac.compare_digest(ping_id, self.ping_id(sender, source, now, back=back))
            for back in (0, 1)
        )

    def _add(
        self, public_key: bytes, source: Addr, ret3: bytes, data_pk: bytes, now: float
    ) -> bool:
        entry = self.entry(public_key, now)
        if entry is None:
            victim: bytes | None = None
            for pk, other in self._entries.items():
                if self._expired(other, now):
                    victim = pk
                    break
            if victim is None and len(self._entries) >= self._max_entries:
                farthest = next(iter(self._entries))
                for pk in self._entries:
                    if distance_less(self._dht_pk, farthest, pk):
                        farthest = pk
                if not distance_less(self._dht_pk, public_key, farthest):
                    self.stats.announcements_rejected_full += 1
                    return False
                victim = farthest
            if victim is not None:
                del self._entries[victim]
        # Re-insert so the dict stays ordered by announce time (oldest first).
        self._entries.pop(public_key, None)
        self._entries[public_key] = AnnounceEntry(public_key, source, ret3, data_pk, now)
        self.stats.announcements_stored += 1
        return True

    def _handle_announce(self, data: bytes, addr: Addr, now: float) -> None:
        if len(data) != ANNOUNCE_REQUEST_SIZE + ONION_RETURN_3_SIZE:
            raise BadPacket(f"announce request of {len(data)} bytes (with ret3) is not 354")
        request = AnnounceRequest.decode(data[:ANNOUNCE_REQUEST_SIZE])
        ret3 = data[ANNOUNCE_REQUEST_SIZE:]
        key = cached_shared_key_untrusted(self._keys, request.public_key)
        payload = request.open(key)
        try:
            ping_ok = self._ping_id_valid(payload.ping_id, request.public_key, addr, now)
        except ValueError as exc:
            raise BadPacket("source is not an IP address") from exc
        self.stats.announce_requests += 1
        if ping_ok:
            self._add(request.public_key, addr, ret3, payload.data_public_key, now)
            entry = self.entry(request.public_key, now)
        else:
            entry = self.entry(payload.search_public_key, now)
        ping_id = self.ping_id(request.public_key, addr, now)
        if entry is None:
            is_stored, field = ANNOUNCE_IS_STORED_NO, ping_id
        elif entry.public_key == request.public_key:
            if entry.data_public_key == payload.data_public_key:
                is_stored, field = ANNOUNCE_IS_STORED_SELF, ping_id
            else:
                is_stored, field = ANNOUNCE_IS_STORED_NO, ping_id
        else:
            is_stored, field = ANNOUNCE_IS_STORED_OTHER, entry.data_public_key
        nodes = self._close_nodes(payload.search_public_key, addr)
        response = AnnounceResponse.seal(
            self._rng, key, payload.sendback, AnnounceResponsePayload(is_stored, field, nodes)
        )
        self._out.append((addr, OnionResponse3(ret3, response.encode()).encode()))

    def _close_nodes(self, public_key: bytes, source: Addr) -> tuple[PackedNode, ...]:
        lan_ok = ip_is_lan(IPPort.from_addr(source).ip)
        nodes: list[PackedNode] = []
        for node in self._get_close_nodes(public_key, MAX_SENT_NODES):
            if node.tcp or (not lan_ok and ip_is_lan(node.ip_port.ip)):
                continue
            nodes.append(node)
            if len(nodes) == MAX_SENT_NODES:
                break
        return tuple(nodes)

    def _handle_data(self, data: bytes, now: float) -> None:
        if (
            not DATA_REQUEST_MIN_SIZE + ONION_RETURN_3_SIZE
            < len(data)
            <= ONION_MAX_PACKET_SIZE_BYTES
        ):
            raise BadPacket(f"data request of {len(data)} bytes (with ret3)")
        request = DataRequest.decode(
            data[:-ONION_RETURN_3_SIZE],
            max_size=ONION_MAX_PACKET_SIZE_BYTES - ONION_RETURN_3_SIZE,
        )
        entry = self.entry(request.destination_public_key, now)
        if entry is None:
            self.stats.dropped_no_entry += 1
            return
        response = OnionResponse3(entry.return_path, request.to_response().encode())
        self.stats.data_forwarded += 1
        self._out.append((entry.return_addr, response.encode()))
