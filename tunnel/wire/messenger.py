"""friend_connection and Messenger packets inside net_crypto data (tox-protocol.md 8.1-8.2).

Every packet is ``[id][payload]`` carried as one net_crypto lossless (16..191) or lossy
(192..254) packet:

=====  ===============  ======================================  ===========================
id     name             payload                                 rule on receipt (toxcore)
=====  ===============  ======================================  ===========================
16     ALIVE            none                                    refreshes the 32 s timer
17     SHARE_RELAYS     0..3 packed nodes (TCP relays)          extra bytes ignored
18     FRIEND_REQUESTS  nospam(4) + message                     -
24     ONLINE           none (exactly 1 byte)                   friend becomes online
25     OFFLINE          none                                    friend shown offline
48     NICKNAME         0..128 bytes                            longer ignored
49     STATUSMESSAGE    0..1007 bytes                           longer ignored
50     USERSTATUS       1 byte, 0..2                            >= 3 ignored
51     TYPING           1 byte                                  -
64     MESSAGE          1..1372 bytes UTF-8                     empty ignored
65     ACTION           1..1372 bytes UTF-8                     empty ignored
=====  ===============  ======================================  ===========================
"""

from __future__ import annotations

from collections.abc import Sequence

from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.packed_node import PackedNode, encode_nodes

PACKET_ID_ALIVE = 16
PACKET_ID_SHARE_RELAYS = 17
PACKET_ID_FRIEND_REQUESTS = 18
PACKET_ID_ONLINE = 24
PACKET_ID_OFFLINE = 25
PACKET_ID_NICKNAME = 48
PACKET_ID_STATUSMESSAGE = 49
PACKET_ID_USERSTATUS = 50
PACKET_ID_TYPING = 51
PACKET_ID_MESSAGE = 64
PACKET_ID_ACTION = 65

CUSTOM_LOSSLESS_FIRST = 160
CUSTOM_LOSSLESS_LAST = 191
CUSTOM_LOSSY_FIRST = 200
CUSTOM_LOSSY_LAST = 254

MAX_SHARED_RELAYS = 3
MAX_NAME_LENGTH_BYTES = 128
MAX_STATUS_MESSAGE_LENGTH_BYTES = 1007
MAX_MESSAGE_LENGTH_BYTES = 1372
MAX_CUSTOM_PACKET_SIZE_BYTES = 1373  # including the id byte
USERSTATUS_MAX = 2

ALIVE = bytes([PACKET_ID_ALIVE])
ONLINE = bytes([PACKET_ID_ONLINE])
OFFLINE = bytes([PACKET_ID_OFFLINE])


def encode_share_relays(relays: Sequence[PackedNode]) -> bytes:
    """``[17][up to 3 packed nodes]``."""
    if len(relays) > MAX_SHARED_RELAYS:
        raise ValueError("at most 3 relays are shared")
    return bytes([PACKET_ID_SHARE_RELAYS]) + encode_nodes(relays)


def decode_share_relays_untrusted(payload: bytes) -> list[PackedNode]:
    """The relays in a SHARE_RELAYS packet (first 3 nodes; bytes after them ignored).

    Raises:
        BadPacket: wrong id, or the first node entries are malformed.
    """
    if not payload or payload[0] != PACKET_ID_SHARE_RELAYS:
        raise BadPacket("not a share-relays packet")
    reader = Reader(payload, 1)
    nodes: list[PackedNode] = []
    while not reader.at_end() and len(nodes) < MAX_SHARED_RELAYS:
        nodes.append(PackedNode.read(reader))
    return nodes


def encode_text(packet_id: int, text: bytes) -> bytes:
    """``[id][text]`` for NICKNAME, STATUSMESSAGE, MESSAGE or ACTION, length checked.

    Raises:
        ValueError: too long for the id, or an empty message/action (a bug in the caller).
    """
    limits = {
        PACKET_ID_NICKNAME: (0, MAX_NAME_LENGTH_BYTES),
        PACKET_ID_STATUSMESSAGE: (0, MAX_STATUS_MESSAGE_LENGTH_BYTES),
        PACKET_ID_MESSAGE: (1, MAX_MESSAGE_LENGTH_BYTES),
        PACKET_ID_ACTION: (1, MAX_MESSAGE_LENGTH_BYTES),
    }
    if packet_id not in limits:
        raise ValueError(f"{packet_id} is not a text packet id")
    low, high = limits[packet_id]
    if not low <= len(text) <= high:
        raise ValueError(f"text of {len(text)} bytes outside {low}..{high} for id {packet_id}")
    return bytes([packet_id]) + text


def encode_userstatus(status: int) -> bytes:
    """``[50][status]`` (0 none, 1 away, 2 busy)."""
    if not 0 <= status <= USERSTATUS_MAX:
        raise ValueError("user status is 0, 1 or 2")
    return bytes([PACKET_ID_USERSTATUS, status])


def encode_typing(typing: bool) -> bytes:
    """``[51][0|1]``."""
    return bytes([PACKET_ID_TYPING, int(typing)])


def decode_text_untrusted(payload: bytes) -> bytes:
    """The text of a NICKNAME/STATUSMESSAGE/MESSAGE/ACTION packet, under toxcore's rules.

    Raises:
        BadPacket: unknown id, empty message/action, or longer than the limit.
    """
    if not payload:
        raise BadPacket("empty packet")
    text = payload[1:]
    packet_id = payload[0]
    if packet_id == PACKET_ID_NICKNAME:
        limit, minimum = MAX_NAME_LENGTH_BYTES, 0
    elif packet_id == PACKET_ID_STATUSMESSAGE:
        limit, minimum = MAX_STATUS_MESSAGE_LENGTH_BYTES, 0
    elif packet_id in (PACKET_ID_MESSAGE, PACKET_ID_ACTION):
        limit, minimum = MAX_MESSAGE_LENGTH_BYTES, 1
    else:
        raise BadPacket(f"id {packet_id} is not a text packet")
    if not minimum <= len(text) <= limit:
        raise BadPacket(f"text of {len(text)} bytes for id {packet_id}")
    return text


def decode_byte_untrusted(payload: bytes, packet_id: int, maximum: int = 255) -> int:
    """The single byte of a USERSTATUS or TYPING packet.

    Raises:
        BadPacket: wrong id, wrong length or value above ``maximum``.
    """
    if len(payload) != 2 or payload[0] != packet_id or payload[1] > maximum:
        raise BadPacket(f"bad one-byte packet for id {packet_id}")
    return payload[1]
