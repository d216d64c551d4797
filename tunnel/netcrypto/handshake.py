"""net_crypto handshake packets: cookie request, cookie response, handshake (tox-protocol.md
6.3-6.5; c-toxcore 0.2.18 ``net_crypto.c`` ``create_cookie_request``, ``handle_cookie_request``,
``handle_cookie_response``, ``create_crypto_handshake``, ``handle_crypto_handshake``).

Making and opening the three packets that come before any data packet, for both ends:

* the initiator (:class:`tunnel.netcrypto.session.Session`) sends a cookie request to the
  peer's DHT key (:func:`make_cookie_request`), takes the cookie from the response
  (:func:`open_cookie_response`) and presents it in its handshake (:func:`make_handshake`);
* the responder (:class:`tunnel.netcrypto.core.NetCrypto`) answers cookie requests statelessly
  (:func:`open_cookie_request`, :func:`make_cookie_response`) and verifies handshakes
  (:func:`open_handshake`: our cookie, fresh, box opens, SHA-512 of the cookie).

Bad input is counted in the caller's ``counters`` under the names it always had and yields
None. The session state machine and the resend schedule stay with the session.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tunnel.crypto import decrypt_untrusted, encrypt, random_nonce, sha512
from tunnel.errors import BadPacket
from tunnel.netcrypto.cookies import Identity
from tunnel.netcrypto.session_types import PeerHandshake
from tunnel.wire.netcrypto import (
    ECHO_ID_SIZE,
    CookieRequest,
    CookieRequestPlain,
    CookieResponse,
    CookieResponsePlain,
    Handshake,
    HandshakePlain,
)


@dataclass(frozen=True, slots=True)
class OpenedCookieRequest:
    """A cookie request that opened: who asks, and the key to answer with."""

    sender_dht_pk: bytes
    real_pk: bytes
    echo_id: bytes
    key: bytes


# ----------------------------------------------------------------------------- initiator


def make_cookie_request(ident: Identity, peer_dht_pk: bytes) -> tuple[bytes, bytes]:
    """A cookie request to ``peer_dht_pk``: ``(echo id, packet)``."""
    echo_id = ident.rng(ECHO_ID_SIZE)
    nonce = random_nonce(ident.rng)
    key = ident.dht_keys.get(peer_dht_pk)
    box = encrypt(key, nonce, CookieRequestPlain(ident.real.public_key, echo_id).encode())
    return echo_id, CookieRequest(ident.dht.public_key, nonce, box).encode()


def open_cookie_response(
    ident: Identity, peer_dht_pk: bytes, echo_id: bytes, data: bytes, counters: Counter[str]
) -> bytes | None:
    """The cookie in the answer to our request with ``echo_id``, or None (counted)."""
    try:
        packet = CookieResponse.decode(data)
        key = ident.dht_keys.get(peer_dht_pk)
        plain = CookieResponsePlain.decode(decrypt_untrusted(key, packet.nonce, packet.box))
    except BadPacket:
        counters["cookie_response_bad"] += 1
        return None
    if plain.echo_id != echo_id:
        counters["cookie_response_bad_echo"] += 1
        return None
    return plain.cookie


def make_handshake(
    ident: Identity,
    peer_real_pk: bytes,
    peer_dht_pk: bytes,
    base_nonce: bytes,
    session_pk: bytes,
    their_cookie: bytes,
    now: float,
) -> bytes:
    """Our handshake: ``their_cookie`` back, and a cookie of ours for the peer to return."""
    other = ident.cookies.make(peer_real_pk, peer_dht_pk, now)
    plain = HandshakePlain(base_nonce, session_pk, sha512(their_cookie), other)
    nonce = random_nonce(ident.rng)
    key = ident.real_keys.get(peer_real_pk)
    return Handshake(their_cookie, nonce, encrypt(key, nonce, plain.encode())).encode()


# ----------------------------------------------------------------------------- responder


def open_cookie_request(
    ident: Identity, data: bytes, counters: Counter[str]
) -> OpenedCookieRequest | None:
    """A cookie request addressed to our DHT key, or None (counted)."""
    try:
        request = CookieRequest.decode(data)
        key = ident.dht_keys.get(request.sender_dht_pk)
        plain = CookieRequestPlain.decode(decrypt_untrusted(key, request.nonce, request.box))
    except BadPacket:
        counters["cookie_request_bad"] += 1
        return None
    return OpenedCookieRequest(request.sender_dht_pk, plain.real_pk, plain.echo_id, key)


def make_cookie_response(ident: Identity, request: OpenedCookieRequest, now: float) -> bytes:
    """The answer to ``request``: a fresh cookie of ours for the sender's keys."""
    cookie = ident.cookies.make(request.real_pk, request.sender_dht_pk, now)
    nonce = random_nonce(ident.rng)
    box = encrypt(request.key, nonce, CookieResponsePlain(cookie, request.echo_id).encode())
    return CookieResponse(nonce, box).encode()


def open_handshake(
    ident: Identity, data: bytes, now: float, counters: Counter[str]
) -> PeerHandshake | None:
    """A handshake presenting a fresh cookie of ours, or None (counted)."""
    try:
        packet = Handshake.decode(data)
        cookie = ident.cookies.open_untrusted(packet.cookie, now)
        key = ident.real_keys.get(cookie.real_pk)
        plain = HandshakePlain.decode(decrypt_untrusted(key, packet.nonce, packet.box))
    except BadPacket as exc:
        counters["handshake_stale_cookie" if "stale" in str(exc) else "handshake_bad"] += 1
        return None
    if plain.cookie_hash != sha512(packet.cookie):
        counters["handshake_bad_hash"] += 1
        return None
    return PeerHandshake(
        cookie.real_pk, cookie.dht_pk, plain.base_nonce, plain.session_pk, plain.other_cookie
    )
