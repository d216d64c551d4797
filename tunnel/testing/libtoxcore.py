"""ctypes declarations for Debian's ``libtoxcore.so.2`` (c-toxcore 0.2.18 public API, ``tox.h``).

Only what the interop harness (:mod:`tunnel.testing.toxcore`) needs. Every function gets
explicit ``argtypes``/``restype``; C enums are ``int``; ``Tox *`` and ``Tox_Options *`` are
opaque ``void *``; byte buffers are ``char *`` (pass ``bytes`` or a ``create_string_buffer``).
Callback buffers arrive as ``void *`` addresses: copy them with ``ctypes.string_at(ptr, n)``.
Keep every callback object referenced for as long as the Tox instance lives.

Error enums: the ``*_ERRORS`` tuples map a ``Tox_Err_*`` value to its name (0.2.18 has no
``*_to_string`` functions).
"""

from __future__ import annotations

import ctypes
import enum
from typing import Any

LIBTOXCORE_NAME = "libtoxcore.so.2"

TOX_PUBLIC_KEY_SIZE = 32
TOX_SECRET_KEY_SIZE = 32
TOX_ADDRESS_SIZE = 38
TOX_MAX_CUSTOM_PACKET_SIZE_BYTES = 1373
TOX_MAX_MESSAGE_LENGTH_BYTES = 1372
TOX_MAX_FRIEND_REQUEST_LENGTH_BYTES = 1016
TOX_MAX_NAME_LENGTH_BYTES = 128


class Connection(enum.IntEnum):
    """``Tox_Connection``."""

    NONE = 0
    TCP = 1
    UDP = 2


class MessageType(enum.IntEnum):
    """``Tox_Message_Type``."""

    NORMAL = 0
    ACTION = 1


class SavedataType(enum.IntEnum):
    """``Tox_Savedata_Type``."""

    NONE = 0
    TOX_SAVE = 1
    SECRET_KEY = 2


class LogLevel(enum.IntEnum):
    """``Tox_Log_Level``."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARNING = 3
    ERROR = 4


ERR_OPTIONS_NEW = ("TOX_ERR_OPTIONS_NEW_OK", "TOX_ERR_OPTIONS_NEW_MALLOC")
ERR_NEW = (
    "TOX_ERR_NEW_OK",
    "TOX_ERR_NEW_NULL",
    "TOX_ERR_NEW_MALLOC",
    "TOX_ERR_NEW_PORT_ALLOC",
    "TOX_ERR_NEW_PROXY_BAD_TYPE",
    "TOX_ERR_NEW_PROXY_BAD_HOST",
    "TOX_ERR_NEW_PROXY_BAD_PORT",
    "TOX_ERR_NEW_PROXY_NOT_FOUND",
    "TOX_ERR_NEW_LOAD_ENCRYPTED",
    "TOX_ERR_NEW_LOAD_BAD_FORMAT",
)
ERR_BOOTSTRAP = (
    "TOX_ERR_BOOTSTRAP_OK",
    "TOX_ERR_BOOTSTRAP_NULL",
    "TOX_ERR_BOOTSTRAP_BAD_HOST",
    "TOX_ERR_BOOTSTRAP_BAD_PORT",
)
ERR_SET_INFO = ("TOX_ERR_SET_INFO_OK", "TOX_ERR_SET_INFO_NULL", "TOX_ERR_SET_INFO_TOO_LONG")
ERR_FRIEND_ADD = (
    "TOX_ERR_FRIEND_ADD_OK",
    "TOX_ERR_FRIEND_ADD_NULL",
    "TOX_ERR_FRIEND_ADD_TOO_LONG",
    "TOX_ERR_FRIEND_ADD_NO_MESSAGE",
    "TOX_ERR_FRIEND_ADD_OWN_KEY",
    "TOX_ERR_FRIEND_ADD_ALREADY_SENT",
    "TOX_ERR_FRIEND_ADD_BAD_CHECKSUM",
    "TOX_ERR_FRIEND_ADD_SET_NEW_NOSPAM",
    "TOX_ERR_FRIEND_ADD_MALLOC",
)
ERR_FRIEND_DELETE = ("TOX_ERR_FRIEND_DELETE_OK", "TOX_ERR_FRIEND_DELETE_FRIEND_NOT_FOUND")
ERR_FRIEND_BY_PUBLIC_KEY = (
    "TOX_ERR_FRIEND_BY_PUBLIC_KEY_OK",
    "TOX_ERR_FRIEND_BY_PUBLIC_KEY_NULL",
    "TOX_ERR_FRIEND_BY_PUBLIC_KEY_NOT_FOUND",
)
ERR_FRIEND_GET_PUBLIC_KEY = (
    "TOX_ERR_FRIEND_GET_PUBLIC_KEY_OK",
    "TOX_ERR_FRIEND_GET_PUBLIC_KEY_FRIEND_NOT_FOUND",
)
ERR_FRIEND_QUERY = (
    "TOX_ERR_FRIEND_QUERY_OK",
    "TOX_ERR_FRIEND_QUERY_NULL",
    "TOX_ERR_FRIEND_QUERY_FRIEND_NOT_FOUND",
)
ERR_FRIEND_SEND_MESSAGE = (
    "TOX_ERR_FRIEND_SEND_MESSAGE_OK",
    "TOX_ERR_FRIEND_SEND_MESSAGE_NULL",
    "TOX_ERR_FRIEND_SEND_MESSAGE_FRIEND_NOT_FOUND",
    "TOX_ERR_FRIEND_SEND_MESSAGE_FRIEND_NOT_CONNECTED",
    "TOX_ERR_FRIEND_SEND_MESSAGE_SENDQ",
    "TOX_ERR_FRIEND_SEND_MESSAGE_TOO_LONG",
    "TOX_ERR_FRIEND_SEND_MESSAGE_EMPTY",
)
ERR_FRIEND_CUSTOM_PACKET = (
    "TOX_ERR_FRIEND_CUSTOM_PACKET_OK",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_NULL",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_FOUND",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_CONNECTED",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_INVALID",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_EMPTY",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_TOO_LONG",
    "TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ",
)
ERR_GET_PORT = ("TOX_ERR_GET_PORT_OK", "TOX_ERR_GET_PORT_NOT_BOUND")


def err_name(names: tuple[str, ...], code: int) -> str:
    """The enum constant name for ``code`` (or ``UNKNOWN(code)``)."""
    return names[code] if 0 <= code < len(names) else f"UNKNOWN({code})"


_P = ctypes.c_void_p
_BUF = ctypes.c_char_p
_ERR = ctypes.POINTER(ctypes.c_int)
_U16 = ctypes.c_uint16
_U32 = ctypes.c_uint32
_SIZE = ctypes.c_size_t
_BOOL = ctypes.c_bool
_INT = ctypes.c_int

# Callback types (tox.h typedefs), each ending in ``void *user_data``.
LOG_CB = ctypes.CFUNCTYPE(None, _P, _INT, _BUF, _U32, _BUF, _BUF, _P)
SELF_CONNECTION_STATUS_CB = ctypes.CFUNCTYPE(None, _P, _INT, _P)
FRIEND_REQUEST_CB = ctypes.CFUNCTYPE(None, _P, _P, _P, _SIZE, _P)
FRIEND_CONNECTION_STATUS_CB = ctypes.CFUNCTYPE(None, _P, _U32, _INT, _P)
FRIEND_MESSAGE_CB = ctypes.CFUNCTYPE(None, _P, _U32, _INT, _P, _SIZE, _P)
FRIEND_READ_RECEIPT_CB = ctypes.CFUNCTYPE(None, _P, _U32, _U32, _P)
FRIEND_PACKET_CB = ctypes.CFUNCTYPE(None, _P, _U32, _P, _SIZE, _P)
"""Both lossless and lossy custom packets, and friend name changes."""

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "tox_version_major": (_U32, []),
    "tox_version_minor": (_U32, []),
    "tox_version_patch": (_U32, []),
    "tox_options_new": (_P, [_ERR]),
    "tox_options_free": (None, [_P]),
    "tox_options_set_ipv6_enabled": (None, [_P, _BOOL]),
    "tox_options_set_udp_enabled": (None, [_P, _BOOL]),
    "tox_options_set_local_discovery_enabled": (None, [_P, _BOOL]),
    "tox_options_set_dht_announcements_enabled": (None, [_P, _BOOL]),
    "tox_options_set_hole_punching_enabled": (None, [_P, _BOOL]),
    "tox_options_set_start_port": (None, [_P, _U16]),
    "tox_options_set_end_port": (None, [_P, _U16]),
    "tox_options_set_tcp_port": (None, [_P, _U16]),
    "tox_options_set_savedata_type": (None, [_P, _INT]),
    "tox_options_set_savedata_data": (None, [_P, _BUF, _SIZE]),
    "tox_options_set_log_callback": (None, [_P, LOG_CB]),
    "tox_new": (_P, [_P, _ERR]),
    "tox_kill": (None, [_P]),
    "tox_get_savedata_size": (_SIZE, [_P]),
    "tox_get_savedata": (None, [_P, _BUF]),
    "tox_bootstrap": (_BOOL, [_P, _BUF, _U16, _BUF, _ERR]),
    "tox_add_tcp_relay": (_BOOL, [_P, _BUF, _U16, _BUF, _ERR]),
    "tox_self_get_connection_status": (_INT, [_P]),
    "tox_iteration_interval": (_U32, [_P]),
    "tox_iterate": (None, [_P, _P]),
    "tox_self_get_address": (None, [_P, _BUF]),
    "tox_self_set_nospam": (None, [_P, _U32]),
    "tox_self_get_nospam": (_U32, [_P]),
    "tox_self_get_public_key": (None, [_P, _BUF]),
    "tox_self_get_secret_key": (None, [_P, _BUF]),
    "tox_self_get_dht_id": (None, [_P, _BUF]),
    "tox_self_get_udp_port": (_U16, [_P, _ERR]),
    "tox_self_get_tcp_port": (_U16, [_P, _ERR]),
    "tox_self_set_name": (_BOOL, [_P, _BUF, _SIZE, _ERR]),
    "tox_self_get_name_size": (_SIZE, [_P]),
    "tox_self_get_name": (None, [_P, _BUF]),
    "tox_self_set_status_message": (_BOOL, [_P, _BUF, _SIZE, _ERR]),
    "tox_friend_add": (_U32, [_P, _BUF, _BUF, _SIZE, _ERR]),
    "tox_friend_add_norequest": (_U32, [_P, _BUF, _ERR]),
    "tox_friend_delete": (_BOOL, [_P, _U32, _ERR]),
    "tox_friend_by_public_key": (_U32, [_P, _BUF, _ERR]),
    "tox_friend_get_public_key": (_BOOL, [_P, _U32, _BUF, _ERR]),
    "tox_self_get_friend_list_size": (_SIZE, [_P]),
    "tox_self_get_friend_list": (None, [_P, ctypes.POINTER(_U32)]),
    "tox_friend_get_connection_status": (_INT, [_P, _U32, _ERR]),
    "tox_friend_send_message": (_U32, [_P, _U32, _INT, _BUF, _SIZE, _ERR]),
    "tox_friend_send_lossless_packet": (_BOOL, [_P, _U32, _BUF, _SIZE, _ERR]),
    "tox_friend_send_lossy_packet": (_BOOL, [_P, _U32, _BUF, _SIZE, _ERR]),
    "tox_callback_self_connection_status": (None, [_P, SELF_CONNECTION_STATUS_CB]),
    "tox_callback_friend_request": (None, [_P, FRIEND_REQUEST_CB]),
    "tox_callback_friend_connection_status": (None, [_P, FRIEND_CONNECTION_STATUS_CB]),
    "tox_callback_friend_message": (None, [_P, FRIEND_MESSAGE_CB]),
    "tox_callback_friend_read_receipt": (None, [_P, FRIEND_READ_RECEIPT_CB]),
    "tox_callback_friend_lossless_packet": (None, [_P, FRIEND_PACKET_CB]),
    "tox_callback_friend_lossy_packet": (None, [_P, FRIEND_PACKET_CB]),
    "tox_callback_friend_name": (None, [_P, FRIEND_PACKET_CB]),
}


class ToxcoreUnavailableError(RuntimeError):
    """libtoxcore.so.2 cannot be loaded (install Debian's ``libtoxcore2``)."""


_lib: ctypes.CDLL | None = None


def load_libtoxcore() -> ctypes.CDLL:
    """The loaded library with every harness function declared (loaded once per process)."""
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBTOXCORE_NAME)
        except OSError as exc:
            raise ToxcoreUnavailableError(
                f"cannot load {LIBTOXCORE_NAME}: {exc}; apt-get install libtoxcore2 "
                "(scripts/install.sh --dev)"
            ) from exc
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(lib, name)
            func.restype = restype
            func.argtypes = argtypes
        _lib = lib
    return _lib


def toxcore_version() -> tuple[int, int, int]:
    """``(major, minor, patch)`` of the loaded library, e.g. ``(0, 2, 18)``."""
    lib = load_libtoxcore()
    return (
        int(lib.tox_version_major()),
        int(lib.tox_version_minor()),
        int(lib.tox_version_patch()),
    )
