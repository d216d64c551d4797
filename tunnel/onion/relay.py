"""The onion relay role: every node is node A, B or C for others (tox-protocol.md 5.2, 5.3).

Theory of operation
-------------------
Requests travel client -> A -> B -> C -> D. Each relay opens its layer with
``K(our DHT sk, layer pk)`` and forwards the inner layer to the address it names, appending a
*return blob*: ``m || box(s, m, IPP(where the packet came from) || previous blob)`` with a
private symmetric key ``s`` and a fresh nonce ``m`` (59, 118 and 177 bytes at A, B and C).
Responses travel back D -> C -> B -> A: each relay opens the outermost blob with ``s``, learns
the previous hop and the inner blob, and forwards the response with that inner blob. Node A
finds the client's address (or TCP relay client) and hands it the bare 0x84/0x86 packet.

``s`` is rotated every 2 h (c-toxcore ``KEY_REFRESH_INTERVAL``); unlike c-toxcore we also keep
the previous key, so a path built just before a rotation keeps working (blobs are opaque to
everyone else, so this is invisible on the wire).

Where a packet came from is abstract: a UDP :data:`Addr`, or a :class:`TcpClientSource` when
the packet arrived as a TCP 0x08 onion request on a TCP relay we host. Bad input is dropped and
counted in :class:`OnionRelayStats`, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from tunnel.crypto import (
    MAC_SIZE,
    NONCE_SIZE,
    KeyPair,
    Rng,
    SharedKeyCache,
    decrypt_untrusted,
    encrypt,
    random_nonce,
)
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.ip_port import (
    ONION_IP_PORT_SIZE,
    Addr,
    IPPort,
    decode_onion_ip_port_untrusted,
    encode_onion_ip_port,
)
from tunnel.wire.onion import (
    ONION_MAX_PACKET_SIZE_BYTES,
    ONION_RETURN_1_SIZE,
    ONION_RETURN_2_SIZE,
    ONION_SEND_BASE_SIZE,
    PACKET_ONION_REQUEST_0,
    PACKET_ONION_REQUEST_1,
    PACKET_ONION_REQUEST_2,
    PACKET_ONION_RESPONSE_1,
    PACKET_ONION_RESPONSE_2,
    PACKET_ONION_RESPONSE_3,
    OnionRequest0,
    OnionRequest1,
    OnionRequest2,
    OnionResponse1,
    OnionResponse2,
    OnionResponse3,
    TcpOnionRequest,
    cached_shared_key_untrusted,
    decode_onion_exit_untrusted,
    decode_onion_hop_untrusted,
)

RETURN_KEY_ROTATION_INTERVAL_S = 2 * 60 * 60
SYMMETRIC_KEY_SIZE = 32
RELAY_PACKET_KINDS = frozenset(
    {
        PACKET_ONION_REQUEST_0,
        PACKET_ONION_REQUEST_1,
        PACKET_ONION_REQUEST_2,
        PACKET_ONION_RESPONSE_3,
        PACKET_ONION_RESPONSE_2,
        PACKET_ONION_RESPONSE_1,
    }
)
# c-toxcore onion_send_1: the plaintext node A forwards must leave room for 0x81 + ret1.
_SEND_1_PLAIN_MAX = ONION_MAX_PACKET_SIZE_BYTES + ONION_IP_PORT_SIZE - (1 + NONCE_SIZE + 59)
_SEND_1_PLAIN_MIN_EXCLUSIVE = ONION_IP_PORT_SIZE + ONION_SEND_BASE_SIZE * 2
_FAMILY_TCP_CLIENT = 11  # c-toxcore TCP_CLIENT_FAMILY; only ever inside our own blobs


@dataclass(frozen=True, slots=True)
class TcpClientSource:
    """A client of a TCP relay we host, which sent us a TCP 0x08 onion request.

    ``connection_id`` (u32) and ``identifier`` (u64) are whatever the TCP server uses to find
    the connection again; the relay only stores them in the return blob.
    """

    connection_id: int
    identifier: int

    def __post_init__(self) -> None:
        if not (0 <= self.connection_id < 1 << 32 and 0 <= self.identifier < 1 << 64):
            raise ValueError("connection_id is a u32 and identifier a u64")


Source = Addr | TcpClientSource


@dataclass(slots=True)
class OnionRelayStats:
    """Counters of what the relay did (snapshot with :meth:`OnionRelay.statistics`)."""

    requests_forwarded: int = 0
    responses_forwarded: int = 0
    dropped_malformed: int = 0
    dropped_decrypt: int = 0
    dropped_unsendable: int = 0
    key_rotations: int = 0


def _encode_source(source: Source) -> bytes:
    if isinstance(source, TcpClientSource):
        return (
            bytes((_FAMILY_TCP_CLIENT,))
            + source.connection_id.to_bytes(4, "big")
            + source.identifier.to_bytes(8, "big")
            + bytes(6)
        )
    return encode_onion_ip_port(IPPort.from_addr(source))


def _decode_source(data: bytes) -> Source:
    if data[0] == _FAMILY_TCP_CLIENT:
        return TcpClientSource(int.from_bytes(data[1:5], "big"), int.from_bytes(data[5:13], "big"))
    return decode_onion_ip_port_untrusted(data).to_addr()


class OnionRelay:
    """Sans-IO onion relay (a :class:`tunnel.core.DatagramCore`).

    Args:
        dht_keys: our DHT key pair (layers are encrypted to our DHT pk).
        rng: randomness for return-blob nonces and symmetric keys.
        now: the current time (seconds on the driver's clock); starts the rotation clock.
    """

    def __init__(self, dht_keys: KeyPair, rng: Rng, now: float) -> None:
        self._rng = rng
        self._keys = SharedKeyCache(dht_keys.secret_key)
        self._secret = rng(SYMMETRIC_KEY_SIZE)
        self._previous_secret: bytes | None = None
        self._rotated_at = now
        self._out: list[tuple[Addr, bytes]] = []
        self._tcp_out: list[tuple[TcpClientSource, bytes]] = []
        self.stats = OnionRelayStats()

    # --- DatagramCore ---------------------------------------------------------------------

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Handle one of 0x80-0x82 / 0x8c-0x8e from ``addr``; anything else is dropped."""
        self._maybe_rotate(now)
        try:
            kind = data[0] if data else -1
            if kind == PACKET_ONION_REQUEST_0:
                self._handle_request_0(data, addr)
            elif kind == PACKET_ONION_REQUEST_1:
                self._handle_request_1(data, addr)
            elif kind == PACKET_ONION_REQUEST_2:
                self._handle_request_2(data, addr)
            elif kind == PACKET_ONION_RESPONSE_3:
                self._handle_response(OnionResponse3.decode(data).return_path, data, 2)
            elif kind == PACKET_ONION_RESPONSE_2:
                self._handle_response(OnionResponse2.decode(data).return_path, data, 1)
            elif kind == PACKET_ONION_RESPONSE_1:
                self._handle_response(OnionResponse1.decode(data).return_path, data, 0)
            else:
                raise BadPacket("not an onion relay packet")
        except DecryptError:
            self.stats.dropped_decrypt += 1
        except BadPacket:
            self.stats.dropped_malformed += 1

    def receive_tcp_onion_request(self, data: bytes, client: TcpClientSource, now: float) -> None:
        """Handle a TCP 0x08 onion request (``data`` starts with 0x08): we play node A."""
        self._maybe_rotate(now)
        try:
            request = TcpOnionRequest.decode(data)
            plain = data[1 + NONCE_SIZE :]
            self._send_1(plain, request.nonce, client)
        except BadPacket:
            self.stats.dropped_malformed += 1

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        """Drain the UDP datagrams to send."""
        out, self._out = self._out, []
        return out

    def tcp_responses_to_send(self) -> list[tuple[TcpClientSource, bytes]]:
        """Drain raw 0x84/0x86 packets for TCP relay clients (send each as TCP ``0x09 || p``)."""
        out, self._tcp_out = self._tcp_out, []
        return out

    def next_deadline(self) -> float | None:
        """When the return-path key is next rotated."""
        return self._rotated_at + RETURN_KEY_ROTATION_INTERVAL_S

    def handle_timer(self, now: float) -> None:
        """Rotate the return-path key if it is due."""
        self._maybe_rotate(now)

    def statistics(self) -> OnionRelayStats:
        """A snapshot of the counters."""
        return OnionRelayStats(**{f.name: getattr(self.stats, f.name) for f in fields(self.stats)})

    # --- internals ------------------------------------------------------------------------

    def _maybe_rotate(self, now: float) -> None:
        if now >= self._rotated_at + RETURN_KEY_ROTATION_INTERVAL_S:
            self._previous_secret = self._secret
            self._secret = self._rng(SYMMETRIC_KEY_SIZE)
            self._rotated_at = now
            self.stats.key_rotations += 1

    def _seal_return(self, source: Source, inner: bytes) -> bytes:
        try:
            source_bytes = _encode_source(source)
        except ValueError as exc:
            raise BadPacket(f"source {source!r} is not an IP address") from exc
        nonce = random_nonce(self._rng)
        return nonce + encrypt(self._secret, nonce, source_bytes + inner)

    def _open_return(self, blob: bytes, inner_size: int) -> tuple[bytes, bytes]:
        nonce, box = blob[:NONCE_SIZE], blob[NONCE_SIZE:]
        if len(box) != ONION_IP_PORT_SIZE + inner_size + MAC_SIZE:
            raise BadPacket("return blob of the wrong size")
        for key in (self._secret, self._previous_secret):
            if key is None:
                continue
            try:
                plain = decrypt_untrusted(key, nonce, box)
            except DecryptError:
                continue
            return plain[:ONION_IP_PORT_SIZE], plain[ONION_IP_PORT_SIZE:]
        raise DecryptError("return blob does not open")

    def _handle_request_0(self, data: bytes, addr: Addr) -> None:
        request = OnionRequest0.decode(data)
        key = cached_shared_key_untrusted(self._keys, request.public_key)
        plain = decrypt_untrusted(key, request.nonce, request.encrypted)
        self._send_1(plain, request.nonce, addr)

    def _send_1(self, plain: bytes, nonce: bytes, source: Source) -> None:
        if not _SEND_1_PLAIN_MIN_EXCLUSIVE < len(plain) <= _SEND_1_PLAIN_MAX:
            raise BadPacket(f"layer 1 plaintext of {len(plain)} bytes")
        hop = decode_onion_hop_untrusted(plain)
        blob = self._seal_return(source, b"")
        forward = OnionRequest1(nonce, hop.public_key, hop.encrypted, blob)
        self._emit(hop.ip_port, forward.encode())

    def _handle_request_1(self, data: bytes, addr: Addr) -> None:
        request = OnionRequest1.decode(data)
        key = cached_shared_key_untrusted(self._keys, request.public_key)
        hop = decode_onion_hop_untrusted(decrypt_untrusted(key, request.nonce, request.encrypted))
        blob = self._seal_return(addr, request.return_path)
        forward = OnionRequest2(request.nonce, hop.public_key, hop.encrypted, blob)
        self._emit(hop.ip_port, forward.encode())

    def _handle_request_2(self, data: bytes, addr: Addr) -> None:
        request = OnionRequest2.decode(data)
        key = cached_shared_key_untrusted(self._keys, request.public_key)
        exit_ = decode_onion_exit_untrusted(
            decrypt_untrusted(key, request.nonce, request.encrypted)
        )
        blob = self._seal_return(addr, request.return_path)
        self._emit(exit_.ip_port, exit_.payload + blob)

    def _handle_response(self, blob: bytes, data: bytes, layer: int) -> None:
        # layer 2: opening ret3 (inner ret2); 1: opening ret2 (inner ret1); 0: opening ret1.
        inner_size = (0, ONION_RETURN_1_SIZE, ONION_RETURN_2_SIZE)[layer]
        ip_bytes, inner = self._open_return(blob, inner_size)
        payload = data[1 + len(blob) :]
        if layer == 0:
            destination = _decode_source(ip_bytes)
            self.stats.responses_forwarded += 1
            if isinstance(destination, TcpClientSource):
                self._tcp_out.append((destination, payload))
            else:
                self._out.append((destination, payload))
            return
        ip_port = decode_onion_ip_port_untrusted(ip_bytes)
        if layer == 2:
            packet = OnionResponse2(inner, payload).encode()
        else:
            packet = OnionResponse1(inner, payload).encode()
        self.stats.responses_forwarded += 1
        self._out.append((ip_port.to_addr(), packet))

    def _emit(self, ip_port: IPPort, packet: bytes) -> None:
        self.stats.requests_forwarded += 1
        self._out.append((ip_port.to_addr(), packet))
