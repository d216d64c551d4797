"""c-toxcore 0.2.18 save data ("profile.tox"): read and write, losing nothing.

tox-protocol.md section 10, checked against c-toxcore v0.2.18 ``toxcore/state.c``,
``toxcore/Messenger.c`` (plugins ``save_nospam_keys`` .. ``save_path_nodes``, ``friend_save``),
``toxcore/DHT.c`` (``dht_save``/``dht_load``) and ``toxcore/tox.c`` (``tox_get_savedata``,
``tox_load``). Header integers are little-endian::

    [0: 4][STATE_COOKIE_GLOBAL 0x15ED1B1F: 4 LE]
    section* = [length: 4 LE][type: 2 LE][STATE_COOKIE_TYPE 0x01CE: 2 LE][payload: length]
    END section (type 255, length 0)

Sections written by 0.2.18, in this order: NOSPAMKEYS (1), DHT (2), FRIENDS (3), NAME (4),
STATUSMESSAGE (5), STATUS (6), TCP_RELAY (10), PATH_NODE (11), CONFERENCES (20), END (255).
``tox_get_savedata_size`` reserves room for 8 TCP relays and 8 path nodes even when fewer are
written, so real save data ends with zero bytes after END; toxcore ignores whatever follows END,
and so do we. Sections we do not interpret (conferences, and anything newer) are kept as raw
``(type, payload)`` pairs and written back after the known ones, where toxcore puts them.

The DHT payload nests the same framing with its own cookies::

    [DHT_STATE_COOKIE_GLOBAL 0x0159000D: 4 LE]
    sub-section* = [length: 4 LE][type: 2 LE][DHT_STATE_COOKIE_TYPE 0x11CE: 2 LE][payload]
    sub-type 4 = packed nodes (UDP only; DHT keys of the nodes, not ours, are saved)

A friend record is 2216 bytes, integers big-endian, paddings zero::

    [status: 1][real pk: 32][request message: 1024][pad: 1][request message length: 2 BE]
    [name: 128][name length: 2 BE][status message: 1007][pad: 1][status message length: 2 BE]
    [user status: 1][pad: 3][request nospam: 4, Tox-ID byte order][last seen: 8 BE unix time]

The nospam in NOSPAMKEYS is the little-endian image of toxcore's host ``uint32_t``, whose memory
is the Tox ID's nospam bytes; on every little-endian host (all toxcore builds we meet) the four
saved bytes therefore equal the Tox ID's nospam bytes, and we store them as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnel.crypto.keys import PUBLIC_KEY_SIZE, SECRET_KEY_SIZE, KeyPair
from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.packed_node import PackedNode, decode_nodes_untrusted, encode_nodes

STATE_COOKIE_GLOBAL = 0x15ED1B1F
STATE_COOKIE_TYPE = 0x01CE
DHT_STATE_COOKIE_GLOBAL = 0x0159000D
DHT_STATE_COOKIE_TYPE = 0x11CE

SECTION_NOSPAMKEYS = 1
SECTION_DHT = 2
SECTION_FRIENDS = 3
SECTION_NAME = 4
SECTION_STATUSMESSAGE = 5
SECTION_STATUS = 6
SECTION_TCP_RELAY = 10
SECTION_PATH_NODE = 11
SECTION_CONFERENCES = 20
SECTION_END = 255
KNOWN_SECTIONS = frozenset(
    {
        SECTION_NOSPAMKEYS,
        SECTION_DHT,
        SECTION_FRIENDS,
        SECTION_NAME,
        SECTION_STATUSMESSAGE,
        SECTION_STATUS,
        SECTION_TCP_RELAY,
        SECTION_PATH_NODE,
        SECTION_END,
    }
)
DHT_SUBSECTION_NODES = 4

NOSPAM_SIZE = 4
NOSPAMKEYS_SIZE_BYTES = NOSPAM_SIZE + PUBLIC_KEY_SIZE + SECRET_KEY_SIZE
SECTION_HEADER_SIZE_BYTES = 8
SAVEDATA_HEADER_SIZE_BYTES = 8
MAX_NAME_LENGTH_BYTES = 128
MAX_STATUS_MESSAGE_LENGTH_BYTES = 1007
SAVED_FRIEND_REQUEST_SIZE_BYTES = 1024
SAVED_FRIEND_SIZE_BYTES = 2216
NUM_SAVED_TCP_RELAYS = 8
"""toxcore loads at most this many TCP relays (and path nodes) and ignores the rest."""
NUM_SAVED_PATH_NODES = 8

# Messenger friend status values (Messenger.h FRIEND_*).
FRIEND_STATUS_ADDED = 1
FRIEND_STATUS_REQUESTED = 2
FRIEND_STATUS_CONFIRMED = 3
FRIEND_STATUS_ONLINE = 4

# User status (tox.h TOX_USER_STATUS_*).
USER_STATUS_NONE = 0
USER_STATUS_AWAY = 1
USER_STATUS_BUSY = 2

_U32_MAX = 0xFFFFFFFF


def _le32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def _section(section_type: int, payload: bytes, cookie: int = STATE_COOKIE_TYPE) -> bytes:
    return (
        _le32(len(payload))
        + section_type.to_bytes(2, "little")
        + cookie.to_bytes(2, "little")
        + payload
    )


def _check_byte(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be 0-255, got {value}")


@dataclass(frozen=True, slots=True)
class SavedFriend:
    """One friend record (2216 bytes on disk).

    toxcore only uses ``request_message``/``nospam`` when ``status`` < 3 (it re-sends the friend
    request on load) and ``name``/``status_message``/``user_status``/``last_seen`` when
    ``status`` >= 3; we keep every field as read so a round trip is exact.
    """

    status: int
    public_key: bytes
    request_message: bytes = b""
    name: bytes = b""
    status_message: bytes = b""
    user_status: int = USER_STATUS_NONE
    nospam: bytes = bytes(NOSPAM_SIZE)
    last_seen: int = 0
    """Unix time in seconds of the last time the friend was seen online (0 = never)."""

    def __post_init__(self) -> None:
        _check_byte("status", self.status)
        _check_byte("user_status", self.user_status)
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("public key must be 32 bytes")
        if len(self.request_message) > SAVED_FRIEND_REQUEST_SIZE_BYTES:
            raise ValueError(f"request message longer than {SAVED_FRIEND_REQUEST_SIZE_BYTES}")
        if len(self.name) > MAX_NAME_LENGTH_BYTES:
            raise ValueError(f"name longer than {MAX_NAME_LENGTH_BYTES} bytes")
        if len(self.status_message) > MAX_STATUS_MESSAGE_LENGTH_BYTES:
            raise ValueError(f"status message longer than {MAX_STATUS_MESSAGE_LENGTH_BYTES}")
        if len(self.nospam) != NOSPAM_SIZE:
            raise ValueError("nospam must be 4 bytes")
        if not 0 <= self.last_seen < 1 << 64:
            raise ValueError("last_seen must fit in 64 bits")

    def encode(self) -> bytes:
        """The 2216-byte record."""
        out = b"".join(
            (
                bytes((self.status,)),
                self.public_key,
                self.request_message.ljust(SAVED_FRIEND_REQUEST_SIZE_BYTES, b"\0"),
                b"\0",
                len(self.request_message).to_bytes(2, "big"),
                self.name.ljust(MAX_NAME_LENGTH_BYTES, b"\0"),
                len(self.name).to_bytes(2, "big"),
                self.status_message.ljust(MAX_STATUS_MESSAGE_LENGTH_BYTES, b"\0"),
                b"\0",
                len(self.status_message).to_bytes(2, "big"),
                bytes((self.user_status,)),
                bytes(3),
                self.nospam,
                self.last_seen.to_bytes(8, "big"),
            )
        )
        assert len(out) == SAVED_FRIEND_SIZE_BYTES
        return out

    @classmethod
    def read(cls, reader: Reader) -> SavedFriend:
        """Read one record. Padding and bytes past each length are ignored, as toxcore does.

        Raises:
            BadPacket: truncated, or a length larger than its field.
        """
        status = reader.u8()
        public_key = reader.read(PUBLIC_KEY_SIZE)
        request_field = reader.read(SAVED_FRIEND_REQUEST_SIZE_BYTES)
        reader.read(1)
        request_length = reader.u16()
        name_field = reader.read(MAX_NAME_LENGTH_BYTES)
        name_length = reader.u16()
        status_field = reader.read(MAX_STATUS_MESSAGE_LENGTH_BYTES)
        reader.read(1)
        status_length = reader.u16()
        user_status = reader.u8()
        reader.read(3)
        nospam = reader.read(NOSPAM_SIZE)
        last_seen = reader.u64()
        if request_length > SAVED_FRIEND_REQUEST_SIZE_BYTES:
            raise BadPacket(f"friend request message length {request_length} > 1024")
        if name_length > MAX_NAME_LENGTH_BYTES:
            raise BadPacket(f"friend name length {name_length} > {MAX_NAME_LENGTH_BYTES}")
        if status_length > MAX_STATUS_MESSAGE_LENGTH_BYTES:
            raise BadPacket(f"friend status message length {status_length} > 1007")
        return cls(
            status=status,
            public_key=public_key,
            request_message=request_field[:request_length],
            name=name_field[:name_length],
            status_message=status_field[:status_length],
            user_status=user_status,
            nospam=nospam,
            last_seen=last_seen,
        )


@dataclass(frozen=True, slots=True)
class SaveData:
    """Everything a toxcore profile holds.

    ``extra_sections`` are top-level sections we do not interpret (conferences, newer types),
    ``extra_dht_sections`` likewise inside the DHT section; both are written back verbatim.
    """

    nospam: bytes
    public_key: bytes
    secret_key: bytes = field(repr=False)
    friends: tuple[SavedFriend, ...] = ()
    name: bytes = b""
    status_message: bytes = b""
    user_status: int = USER_STATUS_NONE
    tcp_relays: tuple[PackedNode, ...] = ()
    path_nodes: tuple[PackedNode, ...] = ()
    dht_nodes: tuple[PackedNode, ...] = ()
    extra_sections: tuple[tuple[int, bytes], ...] = ()
    extra_dht_sections: tuple[tuple[int, bytes], ...] = ()

    def __post_init__(self) -> None:
        if len(self.nospam) != NOSPAM_SIZE:
            raise ValueError("nospam must be 4 bytes")
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("public key must be 32 bytes")
        if len(self.secret_key) != SECRET_KEY_SIZE:
            raise ValueError("secret key must be 32 bytes")
        if len(self.name) > MAX_NAME_LENGTH_BYTES:
            raise ValueError(f"name longer than {MAX_NAME_LENGTH_BYTES} bytes")
        if len(self.status_message) > MAX_STATUS_MESSAGE_LENGTH_BYTES:
            raise ValueError(f"status message longer than {MAX_STATUS_MESSAGE_LENGTH_BYTES}")
        _check_byte("user_status", self.user_status)
        if any(node.tcp for node in self.dht_nodes + self.path_nodes):
            raise ValueError("DHT and path nodes must be UDP nodes")
        for section_type, payload in self.extra_sections:
            if not 0 <= section_type <= 0xFFFF or section_type in KNOWN_SECTIONS:
                raise ValueError(f"extra section type {section_type} is reserved or invalid")
            if len(payload) > _U32_MAX:
                raise ValueError("section too long")
        for section_type, _ in self.extra_dht_sections:
            if not 0 <= section_type <= 0xFFFF or section_type == DHT_SUBSECTION_NODES:
                raise ValueError(f"extra DHT section type {section_type} is reserved or invalid")

    @property
    def key_pair(self) -> KeyPair:
        """The long-term key pair."""
        return KeyPair(self.public_key, self.secret_key)

    def encode(self) -> bytes:
        """The save data as toxcore 0.2.18 writes it (without its trailing zero padding)."""
        dht_payload = (
            _le32(DHT_STATE_COOKIE_GLOBAL)
            + _section(DHT_SUBSECTION_NODES, encode_nodes(self.dht_nodes), DHT_STATE_COOKIE_TYPE)
            + b"".join(
                _section(t, payload, DHT_STATE_COOKIE_TYPE)
                for t, payload in self.extra_dht_sections
            )
        )
        parts = [
            _le32(0),
            _le32(STATE_COOKIE_GLOBAL),
            _section(SECTION_NOSPAMKEYS, self.nospam + self.public_key + self.secret_key),
            _section(SECTION_DHT, dht_payload),
            _section(SECTION_FRIENDS, b"".join(f.encode() for f in self.friends)),
            _section(SECTION_NAME, self.name),
            _section(SECTION_STATUSMESSAGE, self.status_message),
            _section(SECTION_STATUS, bytes((self.user_status,))),
            _section(SECTION_TCP_RELAY, encode_nodes(self.tcp_relays)),
            _section(SECTION_PATH_NODE, encode_nodes(self.path_nodes)),
        ]
        parts.extend(_section(t, payload) for t, payload in self.extra_sections)
        parts.append(_section(SECTION_END, b""))
        return b"".join(parts)


def _read_sections(reader: Reader, cookie: int, what: str) -> list[tuple[int, bytes]]:
    """Sections up to END (exclusive) or the end of ``reader``, as toxcore's ``state_load``.

    END (255) is only special at the top level (``cookie == STATE_COOKIE_TYPE``).
    """
    sections: list[tuple[int, bytes]] = []
    while reader.remaining() >= SECTION_HEADER_SIZE_BYTES:
        length = int.from_bytes(reader.read(4), "little")
        section_type = int.from_bytes(reader.read(2), "little")
        section_cookie = int.from_bytes(reader.read(2), "little")
        if section_cookie != cookie:
            raise BadPacket(f"{what} section cookie {section_cookie:#06x} != {cookie:#06x}")
        if length > reader.remaining():
            raise BadPacket(f"{what} section type {section_type} truncated")
        payload = reader.read(length)
        if cookie == STATE_COOKIE_TYPE and section_type == SECTION_END:
            if length != 0:
                raise BadPacket("END section is not empty")
            reader.rest()  # toxcore ignores anything after END (it pads with zeros)
            return sections
        sections.append((section_type, payload))
    if not reader.at_end():
        raise BadPacket(f"{reader.remaining()} unparsed bytes at the end of the {what} data")
    return sections


def _decode_dht(payload: bytes) -> tuple[tuple[PackedNode, ...], tuple[tuple[int, bytes], ...]]:
    reader = Reader(payload)
    if int.from_bytes(reader.read(4), "little") != DHT_STATE_COOKIE_GLOBAL:
        raise BadPacket("DHT section cookie mismatch")
    nodes: tuple[PackedNode, ...] | None = None
    extra: list[tuple[int, bytes]] = []
    for sub_type, sub_payload in _read_sections(reader, DHT_STATE_COOKIE_TYPE, "DHT"):
        if sub_type == DHT_SUBSECTION_NODES:
            if nodes is not None:
                raise BadPacket("duplicate DHT nodes section")
            nodes = tuple(decode_nodes_untrusted(sub_payload, allow_tcp=False))
        else:
            extra.append((sub_type, sub_payload))
    return nodes or (), tuple(extra)


def _decode_friends(payload: bytes) -> tuple[SavedFriend, ...]:
    if len(payload) % SAVED_FRIEND_SIZE_BYTES:
        raise BadPacket(f"friends section length {len(payload)} is not a multiple of 2216")
    reader = Reader(payload)
    friends = []
    while not reader.at_end():
        friends.append(SavedFriend.read(reader))
    return tuple(friends)


def decode_savedata_untrusted(data: bytes) -> SaveData:
    """Parse toxcore save data (from a file: treat it as untrusted).

    Stricter than toxcore where toxcore would silently drop state: malformed known sections,
    duplicate known sections, or a missing NOSPAMKEYS section are errors.

    Raises:
        BadPacket: not save data (wrong magic), malformed or truncated sections, or a secret key
            that does not derive the stored public key.
    """
    reader = Reader(data)
    if reader.remaining() < SAVEDATA_HEADER_SIZE_BYTES:
        raise BadPacket("too short for save data")
    if int.from_bytes(reader.read(4), "little") != 0:
        raise BadPacket("save data does not start with four zero bytes")
    if int.from_bytes(reader.read(4), "little") != STATE_COOKIE_GLOBAL:
        raise BadPacket("save data cookie mismatch (not a toxcore profile)")

    seen: set[int] = set()
    keys: bytes | None = None
    dht_nodes: tuple[PackedNode, ...] = ()
    extra_dht: tuple[tuple[int, bytes], ...] = ()
    friends: tuple[SavedFriend, ...] = ()
    name = b""
    status_message = b""
    user_status = USER_STATUS_NONE
    tcp_relays: tuple[PackedNode, ...] = ()
    path_nodes: tuple[PackedNode, ...] = ()
    extra: list[tuple[int, bytes]] = []

    for section_type, payload in _read_sections(reader, STATE_COOKIE_TYPE, "save data"):
        if section_type not in KNOWN_SECTIONS:
            extra.append((section_type, payload))
            continue
        if section_type in seen:
            raise BadPacket(f"duplicate section type {section_type}")
        seen.add(section_type)
        if section_type == SECTION_NOSPAMKEYS:
            if len(payload) != NOSPAMKEYS_SIZE_BYTES:
                raise BadPacket(f"NOSPAMKEYS section is {len(payload)} bytes, not 68")
            keys = payload
        elif section_type == SECTION_DHT:
            dht_nodes, extra_dht = _decode_dht(payload)
        elif section_type == SECTION_FRIENDS:
            friends = _decode_friends(payload)
        elif section_type == SECTION_NAME:
            if len(payload) > MAX_NAME_LENGTH_BYTES:
                raise BadPacket(f"name is {len(payload)} bytes (max {MAX_NAME_LENGTH_BYTES})")
            name = payload
        elif section_type == SECTION_STATUSMESSAGE:
            if len(payload) > MAX_STATUS_MESSAGE_LENGTH_BYTES:
                raise BadPacket(f"status message is {len(payload)} bytes (max 1007)")
            status_message = payload
        elif section_type == SECTION_STATUS:
            if len(payload) != 1:
                raise BadPacket(f"status section is {len(payload)} bytes, not 1")
            user_status = payload[0]
        elif section_type == SECTION_TCP_RELAY:
            tcp_relays = tuple(decode_nodes_untrusted(payload, allow_tcp=True))
        elif section_type == SECTION_PATH_NODE:
            path_nodes = tuple(decode_nodes_untrusted(payload, allow_tcp=False))

    if keys is None:
        raise BadPacket("save data has no NOSPAMKEYS section")
    nospam = keys[:NOSPAM_SIZE]
    public_key = keys[NOSPAM_SIZE : NOSPAM_SIZE + PUBLIC_KEY_SIZE]
    secret_key = keys[NOSPAM_SIZE + PUBLIC_KEY_SIZE :]
    if KeyPair.from_secret_key(secret_key).public_key != public_key:
        raise BadPacket("the saved secret key does not derive the saved public key")
    return SaveData(
        nospam=nospam,
        public_key=public_key,
        secret_key=secret_key,
        friends=friends,
        name=name,
        status_message=status_message,
        user_status=user_status,
        tcp_relays=tcp_relays,
        path_nodes=path_nodes,
        dht_nodes=dht_nodes,
        extra_sections=tuple(extra),
        extra_dht_sections=extra_dht,
    )
