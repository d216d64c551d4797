"""Mesh membership (issue 9 "Mesh without pairwise chores"), sans-IO.

Theory of operation
-------------------
Every member holds the network secret (32 random bytes). Nothing secret ever goes on the
wire: members prove knowledge of it with HMAC-SHA256 tags bound to both public keys, which
only the two ends of one friend connection can check and nobody can replay elsewhere:

* ``network_id = SHA-256("tunnel-vpn network-id v1" || secret)[:8]`` names the network;
* a **friend request** (the only thing a stranger can send us) carries
  :class:`~tunnel.wire.vpn.JoinRequest` with ``HMAC(secret, "request v1" || requester ||
  target)``; a valid one is accepted (:class:`AcceptFriend`), anything else is ignored and
  counted;
* when a friend connection comes up, both ends send HELLO with ``HMAC(secret, "hello v1" ||
  sender || receiver)``, their own member record and the network parameters (a joining
  member that has not learned them yet sends no pools and adopts those of the first verified
  HELLO; members whose pools differ refuse each other). Nothing else
  from a friend is accepted before its HELLO verified, so membership is proven mutually no
  matter who sent the friend request (a stranger who merely accepts our request learns
  nothing and is never routed to);
* after a verified HELLO each side sends the other every member record it knows (MEMBERS)
  and every revocation (REVOKE). A record that is new (or newer: higher ``serial``) is
  flooded to all other verified peers, and for a member not yet a friend a friend request is
  sent (:class:`SendFriendRequest`). Both ends of a new pair usually ask each other at once;
  toxcore connects two friends that added each other, so that is harmless. Every pair ends up
  directly connected, and a newcomer needs one invite (secret + one member's Tox ID);
* a **revocation** ``REVOKE(target, issuer, HMAC(secret, "revoke v1" || target || issuer))``
  is permanent: the target's record is dropped, the friend removed, requests and HELLOs from
  it refused, and the REVOKE flooded to every verified peer (and to every peer that connects
  later), so it reaches everyone who is ever connected to anyone who has it. A member that
  receives its own revocation stops (:class:`RemovedFromNetwork`).

Trust model: every holder of the secret is trusted alike (any member may introduce, pin or
revoke). Revocation bans a key, not a person who still knows the secret; to lock someone out
completely, start a new network with a new secret.

The core is driven with friend events from the node (``friend_online``, ``handle_control``
...), returns :class:`Action` items via :meth:`Membership.actions` and :class:`Event` items
via :meth:`Membership.events`, and asks for :meth:`Membership.handle_timer` at
:meth:`Membership.next_deadline` (periodic anti-entropy: full member list to every peer,
friend requests re-issued to members still not connected).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, fields

from tunnel.errors import BadPacket
from tunnel.toxid import ToxId
from tunnel.vpn.addressing import AddressPlan, Assignment, MemberPins
from tunnel.wire.vpn import (
    MAX_IP_PACKET_BYTES,
    MAX_RECORDS_PER_PACKET,
    NETWORK_ID_SIZE_BYTES,
    PROTOCOL_VERSION,
    Hello,
    JoinRequest,
    MemberRecord,
    Members,
    Prefix,
    Revoke,
    decode_control_untrusted,
)

SECRET_SIZE_BYTES = 32
MAX_MEMBERS = 1024
"""Records kept at most (a member flooding made-up records cannot exhaust memory)."""
MIN_PEER_PACKET_BYTES = 1280
"""Floor for a peer's advertised largest IP packet: every Tox lossy packet holds 1372 bytes,
and IPv6 needs 1280 (RFC 8200 section 5), so smaller announcements are raised to this."""
RESYNC_INTERVAL_S = 300.0
"""How often every verified peer gets our whole member list again (anti-entropy)."""

_ID_TAG = b"tunnel-vpn network-id v1"
_REQUEST_TAG = b"tunnel-vpn request v1"
_HELLO_TAG = b"tunnel-vpn hello v1"
_REVOKE_TAG = b"tunnel-vpn revoke v1"


def network_id(secret: bytes) -> bytes:
    """The 8-byte public name of the network with ``secret``."""
    return hashlib.sha256(_ID_TAG + secret).digest()[:NETWORK_ID_SIZE_BYTES]


def _tag(secret: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, label + first + second, hashlib.sha256).digest()


def request_proof(secret: bytes, requester: bytes, target: bytes) -> bytes:
    """Proof in a friend request from ``requester`` to ``target``."""
    return _tag(secret, _REQUEST_TAG, requester, target)


def hello_proof(secret: bytes, sender: bytes, receiver: bytes) -> bytes:
    """Proof in the HELLO ``sender`` sends ``receiver``."""
    return _tag(secret, _HELLO_TAG, sender, receiver)


def revoke_proof(secret: bytes, target: bytes, issuer: bytes) -> bytes:
    """Proof on the revocation of ``target`` issued by ``issuer``."""
    return _tag(secret, _REVOKE_TAG, target, issuer)


@dataclass(frozen=True)
class NetworkParams:
    """What every member must agree on besides the secret (sent in HELLO)."""

    name: str
    ipv4_pool: ipaddress.IPv4Network | None
    ipv6_prefix: ipaddress.IPv6Network | None

    def plan(self) -> AddressPlan:
        """The address plan of these pools."""
        return AddressPlan(
            None if self.ipv4_pool is None else str(self.ipv4_pool),
            None if self.ipv6_prefix is None else str(self.ipv6_prefix),
        )

    def wire(self) -> tuple[Prefix | None, Prefix | None]:
        """The pools in HELLO form."""
        v4 = self.ipv4_pool
        v6 = self.ipv6_prefix
        return (
            None if v4 is None else Prefix(v4.network_address.packed, v4.prefixlen),
            None if v6 is None else Prefix(v6.network_address.packed, v6.prefixlen),
        )

    @classmethod
    def from_hello(cls, hello: Hello) -> NetworkParams:
        """The parameters a HELLO announces.

        Raises:
            BadPacket: a prefix with host bits set.
        """
        try:
            v4 = (
                None
                if hello.ipv4_pool is None
                else ipaddress.IPv4Network((hello.ipv4_pool.address, hello.ipv4_pool.length))
            )
            v6 = (
                None
                if hello.ipv6_prefix is None
                else ipaddress.IPv6Network((hello.ipv6_prefix.address, hello.ipv6_prefix.length))
            )
        except ValueError as exc:
            raise BadPacket(f"HELLO prefix: {exc}") from exc
        return cls(hello.name, v4, v6)


# -- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendFriendRequest:
    """Add ``tox_id`` as a friend with ``message`` (skip if it already is a friend)."""

    tox_id: ToxId
    message: bytes


@dataclass(frozen=True)
class AcceptFriend:
    """Add ``public_key`` without a request (``friend_add_norequest``): its request proved it."""

    public_key: bytes


@dataclass(frozen=True)
class RemoveFriend:
    """Delete friend ``public_key`` (revoked)."""

    public_key: bytes


@dataclass(frozen=True)
class SendControl:
    """Send ``data`` (a whole lossless custom packet) to friend ``public_key``."""

    public_key: bytes
    data: bytes


Action = SendFriendRequest | AcceptFriend | RemoveFriend | SendControl


@dataclass(frozen=True)
class MembersChanged:
    """The member records changed: recompute the address assignment."""


@dataclass(frozen=True)
class PeerUp:
    """A member proved itself on a live friend connection; route to it."""

    public_key: bytes
    max_ip_packet: int


@dataclass(frozen=True)
class PeerDown:
    """A verified member went offline (or was revoked); stop routing to it."""

    public_key: bytes


@dataclass(frozen=True)
class ParamsLearned:
    """A joining node learned the network parameters from its first verified HELLO."""

    params: NetworkParams


@dataclass(frozen=True)
class PeerRejected:
    """A friend's HELLO was refused (not counted as a member); ``reason`` for the log."""

    public_key: bytes
    reason: str


@dataclass(frozen=True)
class RemovedFromNetwork:
    """We were revoked by ``issuer``: tear the VPN down."""

    issuer: bytes


Event = MembersChanged | PeerUp | PeerDown | ParamsLearned | PeerRejected | RemovedFromNetwork


@dataclass(frozen=True)
class MembershipStats:
    """Counters of refused input (see :meth:`Membership.statistics`)."""

    requests_accepted: int = 0
    requests_bad: int = 0
    requests_revoked: int = 0
    control_malformed: int = 0
    control_unverified: int = 0
    hello_bad_proof: int = 0
    hello_bad_version: int = 0
    hello_key_mismatch: int = 0
    hello_params_mismatch: int = 0
    hello_revoked: int = 0
    revoke_bad_proof: int = 0
    records_ignored: int = 0
    records_over_limit: int = 0


def _record_wins(new: MemberRecord, old: MemberRecord) -> bool:
    """Merge rule: higher serial wins; equal serials: the larger encoding (deterministic)."""
    if new.serial != old.serial:
        return new.serial > old.serial
    return new.encode() > old.encode()


class Membership:
    """The membership state of one node in one network (see module docstring)."""

    def __init__(
        self,
        *,
        secret: bytes,
        own: MemberRecord,
        params: NetworkParams | None,
        max_ip_packet: int = MAX_IP_PACKET_BYTES,
        members: Iterable[MemberRecord] = (),
        revoked: Iterable[bytes] = (),
    ) -> None:
        if len(secret) != SECRET_SIZE_BYTES:
            raise ValueError(f"network secret must be {SECRET_SIZE_BYTES} bytes")
        self._secret = secret
        self.network_id = network_id(secret)
        self.own = own
        self.own_key = own.public_key
        self.params = params
        self.max_ip_packet = max_ip_packet
        self._revoked: dict[bytes, bytes] = {}  # target -> issuer
        self._records: dict[bytes, MemberRecord] = {self.own_key: own}
        for target in revoked:
            self._revoked[target] = target
        for record in members:
            if record.public_key != self.own_key and record.public_key not in self._revoked:
                self._records[record.public_key] = record
        self._online: set[bytes] = set()  # friends with a live connection
        self._verified: dict[bytes, int] = {}  # online + proven: key -> max_ip_packet
        self._actions: list[Action] = []
        self._events: list[Event] = []
        self._next_resync: float | None = None
        self.removed = False
        self._stats = {f.name: 0 for f in fields(MembershipStats)}

    # -- queries -----------------------------------------------------------------------------

    def records(self) -> dict[bytes, MemberRecord]:
        """Every known member record (ours included), keyed by public key, in key order."""
        return {key: self._records[key] for key in sorted(self._records)}

    def revoked(self) -> frozenset[bytes]:
        """Public keys removed from the network (persist these with the records)."""
        return frozenset(self._revoked)

    def verified_peers(self) -> dict[bytes, int]:
        """Online members that proved themselves: key -> largest IP packet they take."""
        return dict(sorted(self._verified.items()))

    def assignment(self) -> Assignment | None:
        """Everyone's addresses under our parameters (None while they are unknown)."""
        if self.params is None:
            return None
        pins = [
            MemberPins(
                key,
                None if r.ipv4 is None else ipaddress.IPv4Address(r.ipv4),
                None if r.ipv6 is None else ipaddress.IPv6Address(r.ipv6),
            )
            for key, r in self.records().items()
        ]
        return self.params.plan().assign(pins)

    def statistics(self) -> MembershipStats:
        """A frozen snapshot of the counters."""
        return MembershipStats(**self._stats)

    def actions(self) -> list[Action]:
        """Everything the node must do now (drained)."""
        actions, self._actions = self._actions, []
        return actions

    def events(self) -> list[Event]:
        """What happened since the last call (drained)."""
        events, self._events = self._events, []
        return events

    # -- commands ----------------------------------------------------------------------------

    def join_request(self, target: bytes) -> bytes:
        """The friend-request message for ``target`` (what :meth:`join` sends)."""
        return JoinRequest(
            self.network_id, request_proof(self._secret, self.own_key, target)
        ).encode()

    def join(self, inviter: ToxId) -> None:
        """Use an invite: send the inviting member a friend request that proves the secret."""
        if inviter.public_key == self.own_key:
            return
        self._actions.append(SendFriendRequest(inviter, self.join_request(inviter.public_key)))

    def remove(self, target: bytes) -> None:
        """Revoke ``target`` (our own key: leave the network) and tell everyone."""
        revoke = Revoke(target, self.own_key, revoke_proof(self._secret, target, self.own_key))
        self._apply_revoke(revoke, sender=None)

    def update_own(self, own: MemberRecord) -> None:
        """A new own record (new pins or nospam; raise ``serial``): spread it."""
        if own.public_key != self.own_key:
            raise ValueError("own record must keep our key")
        self.own = own
        self._records[self.own_key] = own
        self._events.append(MembersChanged())
        self._flood(Members((own,)).encode(), exclude=None)

    # -- inputs from the node ----------------------------------------------------------------

    def handle_friend_request(self, public_key: bytes, message: bytes) -> bool:
        """A Tox friend request arrived; True (and :class:`AcceptFriend`) if it proves."""
        if self.removed:
            return False
        if public_key in self._revoked:
            self._stats["requests_revoked"] += 1
            return False
        try:
            request = JoinRequest.decode(message)
        except BadPacket:
            self._stats["requests_bad"] += 1
            return False
        expected = request_proof(self._secret, public_key, self.own_key)
        if request.network_id != self.network_id or not hmac.compare_digest(
            request.proof, expected
        ):
            self._stats["requests_bad"] += 1
            return False
        self._stats["requests_accepted"] += 1
        self._actions.append(AcceptFriend(public_key))
        return True

    def friend_online(self, public_key: bytes, now: float) -> None:
        """A friend connection came up: prove ourselves with HELLO."""
        if self.removed:
            return
        if public_key in self._revoked:
            self._actions.append(RemoveFriend(public_key))
            return
        self._online.add(public_key)
        if self._next_resync is None:
            self._next_resync = now + RESYNC_INTERVAL_S
        if self.params is None:
            v4: Prefix | None = None
            v6: Prefix | None = None
            name = ""
        else:
            v4, v6 = self.params.wire()
            name = self.params.name
        hello = Hello(
            self.network_id,
            hello_proof(self._secret, self.own_key, public_key),
            self.max_ip_packet,
            self.own,
            v4,
            v6,
            name,
        )
        self._actions.append(SendControl(public_key, hello.encode()))

    def friend_offline(self, public_key: bytes) -> None:
        """A friend connection went down."""
        self._online.discard(public_key)
        if self._verified.pop(public_key, None) is not None:
            self._events.append(PeerDown(public_key))

    def handle_control(self, public_key: bytes, data: bytes) -> None:
        """A VPN control packet (custom lossless 0xB0) from friend ``public_key``."""
        if self.removed:
            return
        try:
            message = decode_control_untrusted(data)
        except BadPacket:
            self._stats["control_malformed"] += 1
            return
        if isinstance(message, Hello):
            self._handle_hello(public_key, message)
        elif public_key not in self._verified:
            self._stats["control_unverified"] += 1
        elif isinstance(message, Members):
            self._handle_members(public_key, message)
        else:
            self._apply_revoke(message, sender=public_key)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` wants to run (seconds on the Trio clock)."""
        return self._next_resync

    def handle_timer(self, now: float) -> None:
        """Anti-entropy: full member list to every verified peer, re-request missing ones."""
        if self._next_resync is None or now < self._next_resync:
            return
        self._next_resync = now + RESYNC_INTERVAL_S
        if self.removed:
            return
        for key in sorted(self._verified):
            self._send_everything(key)
        for key, record in self.records().items():
            if key != self.own_key and key not in self._verified:
                self._actions.append(SendFriendRequest(record.tox_id, self.join_request(key)))

    # -- internals ---------------------------------------------------------------------------

    def _reject(self, public_key: bytes, counter: str, reason: str) -> None:
        self._stats[counter] += 1
        self._events.append(PeerRejected(public_key, reason))

    def _handle_hello(self, public_key: bytes, hello: Hello) -> None:
        if hello.version != PROTOCOL_VERSION:
            self._reject(public_key, "hello_bad_version", f"protocol version {hello.version}")
            return
        expected = hello_proof(self._secret, public_key, self.own_key)
        if hello.network_id != self.network_id or not hmac.compare_digest(hello.proof, expected):
            self._reject(public_key, "hello_bad_proof", "membership proof does not verify")
            return
        if hello.record.public_key != public_key:
            self._reject(public_key, "hello_key_mismatch", "record of another key")
            return
        if public_key in self._revoked:
            self._stats["hello_revoked"] += 1
            self._actions.append(RemoveFriend(public_key))
            return
        try:
            params = NetworkParams.from_hello(hello)
        except BadPacket:
            self._reject(public_key, "hello_params_mismatch", "malformed network parameters")
            return
        if params.ipv4_pool is None and params.ipv6_prefix is None:
            pass  # a joining member that has not learned the parameters yet: it adopts ours
        elif self.params is None:
            self.params = params
            self._events.append(ParamsLearned(params))
        elif (params.ipv4_pool, params.ipv6_prefix) != (
            self.params.ipv4_pool,
            self.params.ipv6_prefix,
        ):
            self._reject(public_key, "hello_params_mismatch", "different address pools")
            return
        self._online.add(public_key)
        first = public_key not in self._verified
        self._verified[public_key] = min(
            max(hello.max_ip_packet, MIN_PEER_PACKET_BYTES), self.max_ip_packet
        )
        if self._merge(hello.record):
            self._events.append(MembersChanged())
            self._flood(Members((hello.record,)).encode(), exclude=public_key)
        if first:
            self._events.append(PeerUp(public_key, self._verified[public_key]))
            self._send_everything(public_key)

    def _send_everything(self, public_key: bytes) -> None:
        records = [r for k, r in self.records().items() if k != public_key]
        for start in range(0, len(records), MAX_RECORDS_PER_PACKET):
            chunk = tuple(records[start : start + MAX_RECORDS_PER_PACKET])
            self._actions.append(SendControl(public_key, Members(chunk).encode()))
        for target in sorted(self._revoked):
            issuer = self._revoked[target]
            proof = revoke_proof(self._secret, target, issuer)
            self._actions.append(SendControl(public_key, Revoke(target, issuer, proof).encode()))

    def _merge(self, record: MemberRecord) -> bool:
        """Take ``record`` if it is new or wins; True when something changed."""
        key = record.public_key
        if key == self.own_key or key in self._revoked:
            return False
        old = self._records.get(key)
        if old is not None and not _record_wins(record, old):
            return False
        if old is None and len(self._records) >= MAX_MEMBERS:
            self._stats["records_over_limit"] += 1
            return False
        self._records[key] = record
        if old is None and key not in self._online:
            self._actions.append(SendFriendRequest(record.tox_id, self.join_request(key)))
        return True

    def _handle_members(self, sender: bytes, message: Members) -> None:
        changed = [record for record in message.records if self._merge(record)]
        self._stats["records_ignored"] += len(message.records) - len(changed)
        if changed:
            self._events.append(MembersChanged())
            for start in range(0, len(changed), MAX_RECORDS_PER_PACKET):
                chunk = tuple(changed[start : start + MAX_RECORDS_PER_PACKET])
                self._flood(Members(chunk).encode(), exclude=sender)

    def _apply_revoke(self, revoke: Revoke, sender: bytes | None) -> None:
        expected = revoke_proof(self._secret, revoke.target, revoke.issuer)
        if not hmac.compare_digest(revoke.proof, expected):
            self._stats["revoke_bad_proof"] += 1
            return
        target = revoke.target
        if target in self._revoked:
            return
        self._revoked[target] = revoke.issuer
        self._flood(revoke.encode(), exclude=sender)
        if target == self.own_key:
            self.removed = True
            self._events.append(RemovedFromNetwork(revoke.issuer))
            return
        if self._records.pop(target, None) is not None:
            self._events.append(MembersChanged())
        if self._verified.pop(target, None) is not None:
            self._events.append(PeerDown(target))
        self._online.discard(target)
        self._actions.append(RemoveFriend(target))

    def _flood(self, data: bytes, exclude: bytes | None) -> None:
        for key in sorted(self._verified):
            if key != exclude:
                self._actions.append(SendControl(key, data))
