"""Constants and helpers shared by the onion codecs (:mod:`tunnel.wire.onion`,
:mod:`tunnel.wire.onion_data`); tox-protocol.md section 5, c-toxcore 0.2.18 sizes."""

from __future__ import annotations

import nacl.exceptions

from tunnel.crypto import MAC_SIZE, NONCE_SIZE, PUBLIC_KEY_SIZE, SharedKeyCache, shared_key
from tunnel.errors import BadPacket, DecryptError
from tunnel.wire.ip_port import ONION_IP_PORT_SIZE

# --- packet kinds (tox-protocol.md 3.2) ---------------------------------------------------
PACKET_ONION_REQUEST_0 = 0x80
PACKET_ONION_REQUEST_1 = 0x81
PACKET_ONION_REQUEST_2 = 0x82
PACKET_ANNOUNCE_REQUEST = 0x83
PACKET_ANNOUNCE_RESPONSE = 0x84
PACKET_ONION_DATA_REQUEST = 0x85
PACKET_ONION_DATA_RESPONSE = 0x86
PACKET_ONION_RESPONSE_3 = 0x8C
PACKET_ONION_RESPONSE_2 = 0x8D
PACKET_ONION_RESPONSE_1 = 0x8E
TCP_PACKET_ONION_REQUEST = 0x08
TCP_PACKET_ONION_RESPONSE = 0x09

ONION_DATA_DHTPK = 0x9C
ONION_DATA_FRIEND_REQUEST = 0x20

# --- sizes (c-toxcore onion.h / onion_announce.h / onion_client.h) ------------------------
ONION_MAX_PACKET_SIZE_BYTES = 1400
ONION_RETURN_1_SIZE = NONCE_SIZE + ONION_IP_PORT_SIZE + MAC_SIZE  # 59
ONION_RETURN_2_SIZE = NONCE_SIZE + ONION_IP_PORT_SIZE + MAC_SIZE + ONION_RETURN_1_SIZE  # 118
ONION_RETURN_3_SIZE = NONCE_SIZE + ONION_IP_PORT_SIZE + MAC_SIZE + ONION_RETURN_2_SIZE  # 177
ONION_SEND_BASE_SIZE = PUBLIC_KEY_SIZE + ONION_IP_PORT_SIZE + MAC_SIZE  # 67
ONION_SEND_3_SIZE = NONCE_SIZE + ONION_SEND_BASE_SIZE + ONION_RETURN_2_SIZE  # 209
ONION_SEND_2_SIZE = NONCE_SIZE + ONION_SEND_BASE_SIZE * 2 + ONION_RETURN_1_SIZE  # 217
ONION_SEND_1_SIZE = NONCE_SIZE + ONION_SEND_BASE_SIZE * 3  # 225
ONION_MAX_DATA_SIZE_BYTES = ONION_MAX_PACKET_SIZE_BYTES - (ONION_SEND_1_SIZE + 1)  # 1174
ONION_RESPONSE_MAX_DATA_SIZE_BYTES = ONION_MAX_PACKET_SIZE_BYTES - (1 + ONION_RETURN_3_SIZE)
TCP_ONION_REQUEST_MIN_SIZE_EXCLUSIVE = 1 + NONCE_SIZE + ONION_SEND_BASE_SIZE * 2  # 159

ONION_PING_ID_SIZE = 32
ONION_SENDBACK_SIZE = 8
ANNOUNCE_REQUEST_PLAIN_SIZE = ONION_PING_ID_SIZE + 2 * PUBLIC_KEY_SIZE + ONION_SENDBACK_SIZE
ANNOUNCE_REQUEST_SIZE = 1 + NONCE_SIZE + PUBLIC_KEY_SIZE + ANNOUNCE_REQUEST_PLAIN_SIZE + MAC_SIZE
ANNOUNCE_RESPONSE_MIN_SIZE = 2 + ONION_SENDBACK_SIZE + NONCE_SIZE + ONION_PING_ID_SIZE + MAC_SIZE
ANNOUNCE_RESPONSE_MAX_SIZE = ANNOUNCE_RESPONSE_MIN_SIZE + 136 * 4  # 626, toxcore's bound
MAX_SENT_NODES = 4
ANNOUNCE_IS_STORED_NO = 0
ANNOUNCE_IS_STORED_OTHER = 1
ANNOUNCE_IS_STORED_SELF = 2

DATA_REQUEST_MIN_SIZE = 1 + PUBLIC_KEY_SIZE + NONCE_SIZE + PUBLIC_KEY_SIZE + MAC_SIZE  # 105
DATA_RESPONSE_MIN_SIZE = 1 + NONCE_SIZE + PUBLIC_KEY_SIZE + MAC_SIZE  # 73
DATA_IN_RESPONSE_MIN_SIZE = PUBLIC_KEY_SIZE + MAC_SIZE  # 48
MAX_DATA_REQUEST_SIZE_BYTES = ONION_MAX_DATA_SIZE_BYTES - DATA_REQUEST_MIN_SIZE  # 1069
ONION_CLIENT_MAX_DATA_SIZE_BYTES = MAX_DATA_REQUEST_SIZE_BYTES - DATA_IN_RESPONSE_MIN_SIZE  # 1021

DHTPK_MIN_SIZE = 1 + 8 + PUBLIC_KEY_SIZE  # 41
NOSPAM_SIZE = 4
FRIEND_REQUEST_MAX_MESSAGE_BYTES = ONION_CLIENT_MAX_DATA_SIZE_BYTES - (1 + NOSPAM_SIZE)  # 1016

RESPONSE_KINDS = (PACKET_ANNOUNCE_RESPONSE, PACKET_ONION_DATA_RESPONSE)
EXIT_KINDS = (PACKET_ANNOUNCE_REQUEST, PACKET_ONION_DATA_REQUEST)


def shared_key_untrusted(public_key: bytes, secret_key: bytes) -> bytes:
    """``K(public_key, secret_key)`` for a public key taken from the network.

    libsodium refuses low-order points (PyNaCl raises ``RuntimeError``); such a key can only
    come from a forger, so it is reported as a decryption failure.

    Raises:
        DecryptError: the key is unusable.
    """
    try:
        return shared_key(public_key, secret_key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptError("unusable public key") from exc


def cached_shared_key_untrusted(cache: SharedKeyCache, public_key: bytes) -> bytes:
    """:func:`shared_key_untrusted` through a :class:`SharedKeyCache`.

    Raises:
        DecryptError: the key is unusable.
    """
    try:
        return cache.get(public_key)
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise DecryptError("unusable public key") from exc


def check_size(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


def expect_kind(data: bytes, kind: int) -> None:
    if not data:
        raise BadPacket("empty packet")
    if data[0] != kind:
        raise BadPacket(f"packet kind {data[0]:#04x}, expected {kind:#04x}")


def check_length(data: bytes, min_exclusive: int, max_inclusive: int) -> None:
    if not min_exclusive < len(data) <= max_inclusive:
        raise BadPacket(
            f"length {len(data)} outside ({min_exclusive}, {max_inclusive}] for kind {data[0]:#04x}"
        )
