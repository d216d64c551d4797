"""A net_crypto session's handshake phase (tox-protocol.md 6.3-6.5): cookie response and
handshake input, entering NotConfirmed with the peer's session key.

Part of :class:`tunnel.netcrypto.session.Session` (a mixin; the state lives on the session,
the packet work in :mod:`tunnel.netcrypto.handshake`).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from tunnel.crypto import KeyPair, shared_key
from tunnel.crypto.databox import DataBox
from tunnel.netcrypto import handshake
from tunnel.netcrypto.cookies import Identity
from tunnel.netcrypto.replay import ReplayWindow
from tunnel.netcrypto.session_types import (
    CookieRequesting,
    HandshakeSent,
    NotConfirmed,
    PeerHandshake,
    State,
)


class SessionHandshake:
    """The handshake phase of a :class:`~tunnel.netcrypto.session.Session`."""

    # the session's own state, used here
    ident: Identity
    peer_real_pk: bytes
    peer_dht_pk: bytes
    session_keys: KeyPair
    state: State
    outbox: list[bytes]
    counters: Counter[str]
    _base_sent_nonce: int
    _recv_nonce: int
    _replay_base: int
    _replay: ReplayWindow
    _box: DataBox | None
    _next_request: float

    if TYPE_CHECKING:

        def _make_box(self, key: bytes) -> DataBox: ...

    def _make_handshake(self, their_cookie: bytes, now: float) -> bytes:
        return handshake.make_handshake(
            self.ident, self.peer_real_pk, self.peer_dht_pk,
            self._base_sent_nonce.to_bytes(24, "big"), self.session_keys.public_key,
            their_cookie, now,
        )  # fmt: skip

    def _enter_not_confirmed(
        self, peer: PeerHandshake, packet: bytes, tries: int, last_sent: float
    ) -> None:
        self._recv_nonce = int.from_bytes(peer.base_nonce, "big")
        self._replay_base = self._recv_nonce
        self._replay = ReplayWindow()
        key = shared_key(peer.session_pk, self.session_keys.secret_key)
        self._box = self._make_box(key)
        self.state = NotConfirmed(packet, tries, last_sent, key)
        self._next_request = last_sent

    def handle_cookie_response(self, data: bytes, now: float) -> bool:
        """A cookie response arrived on this session's path. Returns True if it was used."""
        state = self.state
        if not isinstance(state, CookieRequesting):
            self.counters["cookie_response_unexpected"] += 1
            return False
        cookie = handshake.open_cookie_response(
            self.ident, self.peer_dht_pk, state.echo_id, data, self.counters
        )
        if cookie is None:
            return False
        packet = self._make_handshake(cookie, now)
        self.state = HandshakeSent(packet, 1, now)
        self.outbox.append(packet)
        return True

    def handle_handshake(self, peer: PeerHandshake, now: float) -> bool:
        """A verified handshake for this peer. Returns True if it was used.

        The caller has checked ``peer.real_pk`` and ``peer.dht_pk`` against this session.
        """
        state = self.state
        if isinstance(state, CookieRequesting):
            packet = self._make_handshake(peer.other_cookie, now)
            self.outbox.append(packet)
            self._enter_not_confirmed(peer, packet, 1, now)
            return True
        if isinstance(state, HandshakeSent | NotConfirmed):
            self._enter_not_confirmed(peer, state.packet, state.tries, state.last_sent)
            return True
        self.counters["handshake_ignored"] += 1
        return False
