"""Friend requests over the onion: nospam check, sender dedupe, resend schedule.

tox-protocol.md 2.2 and 5.8.2 (c-toxcore 0.2.18 ``friend_requests.c`` for receiving,
``Messenger.c`` for the sender's schedule). Pure bookkeeping; :class:`tunnel.onion.client.
OnionClient` moves the bytes.

Receiving: a request ``[0x20][nospam][message]`` from an authenticated sender is reported once
if its nospam equals ours, the sender is not already a friend and it is not among the last 32
senders (a circular list, as toxcore's ``MAX_RECEIVED_STORED``).

Sending (theory of operation): a request is ADDED until one onion data packet carrying it went
out, then REQUESTED. If the friend has not come online ``timeout`` seconds after the send
(initially ``FRIENDREQUEST_TIMEOUT_S = 5``) it is ADDED again and the timeout doubles: resends
at about 5, 10, 20, 40 ... s. It stops when the friend comes online (or is removed).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tunnel.wire.onion import FRIEND_REQUEST_MAX_MESSAGE_BYTES, NOSPAM_SIZE, FriendRequestPayload

FRIENDREQUEST_TIMEOUT_S = 5
MAX_RECEIVED_STORED = 32


class OutgoingState(Enum):
    """Where an outgoing request is in the resend cycle."""

    ADDED = "added"
    REQUESTED = "requested"


@dataclass(slots=True)
class OutgoingRequest:
    """One friend request we keep sending until the friend comes online."""

    public_key: bytes
    nospam: bytes
    message: bytes
    state: OutgoingState = OutgoingState.ADDED
    timeout_s: float = FRIENDREQUEST_TIMEOUT_S
    last_sent: float = float("-inf")
    sent_count: int = 0

    def payload(self) -> bytes:
        """The onion data payload ``[0x20][nospam][message]``."""
        return FriendRequestPayload(self.nospam, self.message).encode()


class FriendRequests:
    """Incoming filter and outgoing schedule (see the module docstring)."""

    def __init__(self, nospam: bytes) -> None:
        self.set_nospam(nospam)
        self._received: list[bytes] = []
        self._received_index = 0
        self.outgoing: dict[bytes, OutgoingRequest] = {}
        self.dropped_nospam = 0
        self.dropped_duplicate = 0

    @property
    def nospam(self) -> bytes:
        """Our current nospam (4 opaque bytes of our Tox ID)."""
        return self._nospam

    def set_nospam(self, nospam: bytes) -> None:
        """Change the nospam: new requests must carry it; existing friends are unaffected."""
        if len(nospam) != NOSPAM_SIZE:
            raise ValueError("nospam is 4 bytes")
        self._nospam = bytes(nospam)

    # --- incoming -------------------------------------------------------------------------

    def accept_incoming(
        self, sender: bytes, request: FriendRequestPayload, is_friend: bool
    ) -> bool:
        """True if the request must be reported to the user (then it is remembered)."""
        if sender in self._received:
            self.dropped_duplicate += 1
            return False
        if request.nospam != self._nospam:
            self.dropped_nospam += 1
            return False
        if is_friend:
            return False
        if len(self._received) < MAX_RECEIVED_STORED:
            self._received.append(sender)
        else:
            self._received[self._received_index % MAX_RECEIVED_STORED] = sender
        self._received_index = (self._received_index + 1) % MAX_RECEIVED_STORED
        return True

    def forget_received(self, sender: bytes) -> None:
        """Remove ``sender`` from the dedupe list (toxcore ``remove_request_received``)."""
        if sender in self._received:
            self._received[self._received.index(sender)] = b""

    # --- outgoing -------------------------------------------------------------------------

    def add_outgoing(self, public_key: bytes, nospam: bytes, message: bytes) -> OutgoingRequest:
        """Start sending a request (replaces an earlier one to the same key).

        Raises:
            ValueError: message empty or longer than 1016 bytes, or nospam not 4 bytes.
        """
        if not 0 < len(message) <= FRIEND_REQUEST_MAX_MESSAGE_BYTES:
            raise ValueError(f"message must be 1..{FRIEND_REQUEST_MAX_MESSAGE_BYTES} bytes")
        if len(nospam) != NOSPAM_SIZE:
            raise ValueError("nospam is 4 bytes")
        request = OutgoingRequest(public_key, bytes(nospam), bytes(message))
        self.outgoing[public_key] = request
        return request

    def due(self, now: float) -> list[OutgoingRequest]:
        """Requests to (re)send now; REQUESTED ones whose timeout passed go back to ADDED."""
        out: list[OutgoingRequest] = []
        for request in self.outgoing.values():
            if (
                request.state is OutgoingState.REQUESTED
                and request.last_sent + request.timeout_s < now
            ):
                request.state = OutgoingState.ADDED
                request.timeout_s *= 2
            if request.state is OutgoingState.ADDED:
                out.append(request)
        return out

    def mark_sent(self, request: OutgoingRequest, now: float) -> None:
        """At least one onion data packet with the request went out."""
        request.state = OutgoingState.REQUESTED
        request.last_sent = now
        request.sent_count += 1

    def stop(self, public_key: bytes) -> None:
        """The friend came online (or was removed): stop sending."""
        self.outgoing.pop(public_key, None)
