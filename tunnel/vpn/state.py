"""What a VPN member remembers between runs (issue 9): member records, revocations, serial.

Sans-IO: :class:`VpnState` turns into JSON text and back; the node glue
(:mod:`tunnel.io.vpn_node`) reads and writes the file next to the profile
(``<profile>.vpn-<network id>.json``). Keeping the members means a restarted member
reconnects to everyone it knew without a new invite; keeping the revocations means a removed
member stays removed even if it is the only one who ever hears of it again; keeping our own
record's serial lets a changed pin (``ipv4``/``ipv6`` in the network file) win over the old
copies the other members hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tunnel.errors import BadPacket, ConfigError
from tunnel.wire._reader import Reader
from tunnel.wire.vpn import MemberRecord

STATE_VERSION = 1
MAX_SERIAL = 0xFFFFFFFF


@dataclass(frozen=True)
class VpnState:
    """One network's saved state (``network_id`` guards against reading another's file)."""

    network_id: bytes
    own: MemberRecord | None = None
    members: tuple[MemberRecord, ...] = field(default=())
    revoked: tuple[bytes, ...] = field(default=())

    def own_record(self, fresh: MemberRecord) -> MemberRecord:
        """Our record for this run: ``fresh`` (serial ignored) with the saved serial, raised
        by one when anything in it changed since the last run (first run: serial 1)."""
        if self.own is None or self.own.tox_id.public_key != fresh.tox_id.public_key:
            serial = 1
        else:
            serial = self.own.serial
            same = MemberRecord(fresh.tox_id, serial, fresh.ipv4, fresh.ipv6)
            if same != self.own:
                serial = min(serial + 1, MAX_SERIAL)
        return MemberRecord(fresh.tox_id, serial, fresh.ipv4, fresh.ipv6)

    def to_json(self) -> str:
        """The file contents."""
        return json.dumps(
            {
                "version": STATE_VERSION,
                "network_id": self.network_id.hex(),
                "own": None if self.own is None else self.own.encode().hex(),
                "members": [r.encode().hex() for r in self.members],
                "revoked": [key.hex() for key in self.revoked],
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str, network_id: bytes, what: str = "VPN state") -> VpnState:
        """Parse a state file; one for another network gives an empty state.

        Raises:
            ConfigError: not a valid state file (naming ``what``).
        """
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
                raise ValueError("unknown version")
            if bytes.fromhex(data["network_id"]) != network_id:
                return cls(network_id)
            own = None if data["own"] is None else _record(data["own"])
            members = tuple(_record(item) for item in data["members"])
            revoked = tuple(bytes.fromhex(item) for item in data["revoked"])
            if any(len(key) != 32 for key in revoked):
                raise ValueError("revoked key of the wrong size")
        except (ValueError, KeyError, TypeError, BadPacket) as exc:
            raise ConfigError(f"{what}: not a valid state file ({exc})") from None
        return cls(network_id, own, members, revoked)


def _record(text: object) -> MemberRecord:
    if not isinstance(text, str):
        raise TypeError("record is not a string")
    reader = Reader(bytes.fromhex(text))
    record = MemberRecord.read(reader)
    reader.expect_end()
    return record
