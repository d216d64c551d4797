"""Tor control protocol, sans-IO: reply framing, keyword parsing and command builders.

Implements the parts of Tor's ``control-spec.txt`` that tunnel needs (section 2 "Message
format", 3.1 AUTHENTICATE, 3.9 GETINFO, 3.21 PROTOCOLINFO, 3.27 ADD_ONION, 3.38 DEL_ONION,
4.1 asynchronous events). Nothing here touches sockets or clocks; :mod:`tunnel.tor.control`
drives it over Trio and :mod:`tunnel.testing.torlab` over blocking sockets.

Reply framing (control-spec 2.3)::

    Reply     = *(MidReplyLine / DataReplyLine) EndReplyLine
    MidReply  = StatusCode "-" Text CRLF
    DataReply = StatusCode "+" Text CRLF  *(data line CRLF) "." CRLF   (dot-stuffed)
    EndReply  = StatusCode " " Text CRLF

Status 650 marks an asynchronous event; everything else answers the oldest pending command.
Bytes from the control port are parsed by :class:`ReplyParser`, which raises only
:class:`~tunnel.errors.BadPacket` on malformed input.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from tunnel.errors import BadPacket

MAX_REPLY_SIZE_BYTES = 1024 * 1024
"""Cap on one buffered reply; tunnel never asks for large GETINFO keys (ns/all and the like)."""
MAX_LINE_SIZE_BYTES = 64 * 1024
"""Cap on one line without a terminator."""
EVENT_STATUS = 650
"""Status code of asynchronous events (control-spec 4.1)."""

ONION_V3_ADDRESS_LEN = 56
"""Characters in a v3 onion service id (base32 of pubkey || checksum || version)."""
ONION_V3_VERSION = 3
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_EXPANDED_SECRET_KEY_SIZE = 64
"""Tor's ``ED25519-V3`` key blob: the clamped scalar ``a`` (32 bytes) then the nonce prefix."""
ED25519_V3_KEY_TYPE = "ED25519-V3"


# ------------------------------------------------------------------------------------ replies


@dataclass(frozen=True, slots=True)
class ReplyLine:
    """One line of a reply: status, separator (``-``, ``+`` or space), text, data block."""

    status: int
    sep: str
    text: str
    data: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete reply (or asynchronous event) from the control port."""

    lines: tuple[ReplyLine, ...]

    @property
    def status(self) -> int:
        """Status code of the final line."""
        return self.lines[-1].status

    @property
    def is_event(self) -> bool:
        """True for asynchronous events (650)."""
        return self.status == EVENT_STATUS

    @property
    def ok(self) -> bool:
        """True for 2xx replies."""
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        """The final line's text (for errors: Tor's explanation)."""
        return self.lines[-1].text

    def texts(self) -> list[str]:
        """The text of every line, in order."""
        return [line.text for line in self.lines]


@dataclass(slots=True)
class ReplyParser:
    """Incremental reply framer: :meth:`feed` bytes, then pop :meth:`next_reply` until None.

    After a :class:`BadPacket` the parser is broken; the caller should close the connection.
    """

    _buffer: bytearray = field(default_factory=bytearray)
    _lines: list[ReplyLine] = field(default_factory=list)
    _data_head: tuple[int, str] | None = None
    _data_lines: list[str] = field(default_factory=list)
    _pending_size: int = 0
    _ready: list[Reply] = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        """Add bytes read from the control connection.

        Raises:
            BadPacket: malformed framing, or a reply/line over the size caps.
        """
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE_SIZE_BYTES:
                    raise BadPacket("control line too long")
                return
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            self._pending_size += len(raw) + 2
            if self._pending_size > MAX_REPLY_SIZE_BYTES:
                raise BadPacket("control reply too large")
            self._line(raw.decode("utf-8", errors="replace"))

    def next_reply(self) -> Reply | None:
        """The oldest complete reply not yet returned, or None."""
        return self._ready.pop(0) if self._ready else None

    def _line(self, line: str) -> None:
        if self._data_head is not None:
            if line == ".":
                status, text = self._data_head
                self._lines.append(ReplyLine(status, "+", text, "\n".join(self._data_lines)))
                self._data_head = None
                self._data_lines = []
            else:
                self._data_lines.append(line[1:] if line.startswith(".") else line)
            return
        if len(line) < 4 or not line[:3].isdigit() or not line[:3].isascii():
            raise BadPacket(f"bad control reply line {line[:40]!r}")
        status = int(line[:3])
        sep, text = line[3], line[4:]
        if self._lines and self._lines[0].status // 100 != status // 100:
            raise BadPacket("status class changed inside one reply")
        if sep == "-":
            self._lines.append(ReplyLine(status, sep, text))
        elif sep == "+":
            self._data_head = (status, text)
        elif sep == " ":
            self._lines.append(ReplyLine(status, sep, text))
            self._ready.append(Reply(tuple(self._lines)))
            self._lines = []
            self._pending_size = 0
        else:
            raise BadPacket(f"bad control reply separator {sep!r}")


# ---------------------------------------------------------------------------- keyword parsing


def _unquote(text: str, start: int) -> tuple[str, int]:
    """Parse a QuotedString starting at ``text[start] == '"'``; return (value, index after)."""
    out: list[str] = []
    i = start + 1
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            out.append(escapes.get(nxt, nxt))
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        else:
            out.append(ch)
            i += 1
    raise BadPacket("unterminated quoted string in control reply")


def parse_keywords(text: str) -> tuple[list[str], dict[str, str]]:
    """Split ``text`` into positional words and ``KEY=VALUE`` pairs (values may be quoted).

    ``NOTICE BOOTSTRAP PROGRESS=5 SUMMARY="Connecting to a relay"`` gives
    ``(["NOTICE", "BOOTSTRAP"], {"PROGRESS": "5", "SUMMARY": "Connecting to a relay"})``.

    Raises:
        BadPacket: an unterminated quoted string.
    """
    words: list[str] = []
    pairs: dict[str, str] = {}
    i = 0
    n = len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        j = i
        while j < n and text[j] not in ' ="':
            j += 1
        if j < n and text[j] == "=" and j > i:
            key = text[i:j]
            if j + 1 < n and text[j + 1] == '"':
                value, i = _unquote(text, j + 1)
            else:
                k = text.find(" ", j + 1)
                k = n if k < 0 else k
                value, i = text[j + 1 : k], k
            pairs[key] = value
        elif j < n and text[j] == '"' and j == i:
            value, i = _unquote(text, i)
            words.append(value)
        else:
            k = text.find(" ", i)
            k = n if k < 0 else k
            words.append(text[i:k])
            i = k
    return words, pairs


def quote_string(value: str) -> str:
    """A control-protocol QuotedString (for passwords, paths)."""
    if "\r" in value or "\n" in value:
        raise ValueError("control strings cannot contain CR or LF")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------- typed reply views


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    """PROTOCOLINFO: which authentication methods Tor accepts and where the cookie is."""

    auth_methods: frozenset[str]
    cookie_file: str | None
    tor_version: str | None


def parse_protocolinfo(reply: Reply) -> ProtocolInfo:
    """Read a PROTOCOLINFO reply.

    Raises:
        BadPacket: not a 250 reply, or no AUTH line.
    """
    if reply.status != 250:
        raise BadPacket(f"PROTOCOLINFO failed: {reply.status} {reply.message}")
    methods: frozenset[str] | None = None
    cookie: str | None = None
    version: str | None = None
    for text in reply.texts():
        words, pairs = parse_keywords(text)
        if words[:1] == ["AUTH"]:
            methods = frozenset(m for m in pairs.get("METHODS", "").split(",") if m)
            cookie = pairs.get("COOKIEFILE")
        elif words[:1] == ["VERSION"]:
            version = pairs.get("Tor")
    if methods is None:
        raise BadPacket("PROTOCOLINFO reply without an AUTH line")
    return ProtocolInfo(methods, cookie, version)


def parse_getinfo(reply: Reply) -> dict[str, str]:
    """``{key: value}`` from a GETINFO reply (single-line and ``+`` data values).

    Raises:
        BadPacket: not a 250 reply, or a line without ``=``.
    """
    if reply.status != 250:
        raise BadPacket(f"GETINFO failed: {reply.status} {reply.message}")
    values: dict[str, str] = {}
    for line in reply.lines:
        if line.sep == " " and line.text == "OK":
            continue
        key, eq, value = line.text.partition("=")
        if not eq:
            raise BadPacket(f"GETINFO line without '=': {line.text[:40]!r}")
        values[key] = line.data if line.data is not None else value
    return values


def parse_getconf(reply: Reply) -> dict[str, str | None]:
    """``{key: value}`` from a GETCONF reply; ``None`` for a key at its default (no ``=``).

    Raises:
        BadPacket: not a 250 reply.
    """
    if reply.status != 250:
        raise BadPacket(f"GETCONF failed: {reply.status} {reply.message}")
    values: dict[str, str | None] = {}
    for line in reply.lines:
        key, eq, value = line.text.partition("=")
        values[key] = value if eq else None
    return values


@dataclass(frozen=True, slots=True)
class BootstrapStatus:
    """``GETINFO status/bootstrap-phase`` (control-spec 5.5.2 / 4.1.10 BOOTSTRAP)."""

    severity: str
    progress: int
    tag: str
    summary: str
    warning: str | None = None
    reason: str | None = None
    recommendation: str | None = None
    hostaddr: str | None = None

    @property
    def done(self) -> bool:
        """Tor has finished bootstrapping (PROGRESS=100)."""
        return self.progress >= 100

    def describe(self) -> str:
        """``"bootstrap at 5%: Connecting to a relay; warning: Connection refused"``."""
        out = f"bootstrap at {self.progress}%"
        if self.summary:
            out += f": {self.summary}"
        if self.warning:
            out += f"; warning: {self.warning}"
            if self.reason:
                out += f" ({self.reason})"
        if self.hostaddr:
            out += f" [{self.hostaddr}]"
        return out


def parse_bootstrap_phase(text: str) -> BootstrapStatus:
    """Parse ``NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"``.

    Raises:
        BadPacket: missing or non-numeric PROGRESS, or no BOOTSTRAP word.
    """
    words, pairs = parse_keywords(text)
    if "BOOTSTRAP" not in words or "PROGRESS" not in pairs:
        raise BadPacket(f"not a bootstrap status: {text[:60]!r}")
    progress = pairs["PROGRESS"]
    if not progress.isdigit() or not progress.isascii() or len(progress) > 3:
        raise BadPacket(f"bad bootstrap PROGRESS {progress[:10]!r}")
    return BootstrapStatus(
        severity=words[0] if words[0] != "BOOTSTRAP" else "NOTICE",
        progress=int(progress),
        tag=pairs.get("TAG", ""),
        summary=pairs.get("SUMMARY", ""),
        warning=pairs.get("WARNING"),
        reason=pairs.get("REASON"),
        recommendation=pairs.get("RECOMMENDATION"),
        hostaddr=pairs.get("HOSTADDR"),
    )


@dataclass(frozen=True, slots=True)
class AddOnionResult:
    """ADD_ONION's answer: the service id (address without ``.onion``) and key if returned."""

    service_id: str
    private_key: str | None

    @property
    def address(self) -> str:
        """``<service_id>.onion``."""
        return f"{self.service_id}.onion"


def parse_add_onion(reply: Reply) -> AddOnionResult:
    """Read an ADD_ONION reply.

    Raises:
        BadPacket: not a 250 reply, or no valid ServiceID.
    """
    if reply.status != 250:
        raise BadPacket(f"ADD_ONION failed: {reply.status} {reply.message}")
    service_id: str | None = None
    key: str | None = None
    for text in reply.texts():
        name, _, value = text.partition("=")
        if name == "ServiceID":
            service_id = value
        elif name == "PrivateKey":
            key = value
    if service_id is None or not onion_service_id_valid(service_id):
        raise BadPacket("ADD_ONION reply without a valid v3 ServiceID")
    return AddOnionResult(service_id, key)


@dataclass(frozen=True, slots=True)
class HsDescEvent:
    """An ``HS_DESC`` event (control-spec 4.1.25): ``action`` is UPLOAD, UPLOADED, FAILED..."""

    action: str
    service_id: str
    hs_dir: str | None


def parse_hs_desc_event(reply: Reply) -> HsDescEvent | None:
    """The HS_DESC event in ``reply``, or None when it is some other reply or event."""
    if not reply.is_event:
        return None
    words, _ = parse_keywords(reply.lines[0].text)
    if len(words) < 3 or words[0] != "HS_DESC":
        return None
    return HsDescEvent(words[1], words[2], words[4] if len(words) > 4 else None)


# --------------------------------------------------------------------------------- commands


def _command(*parts: str) -> bytes:
    line = " ".join(p for p in parts if p)
    if "\r" in line or "\n" in line:
        raise ValueError("control command arguments cannot contain CR or LF")
    return line.encode("utf-8") + b"\r\n"


def protocolinfo_command() -> bytes:
    """``PROTOCOLINFO 1`` (allowed before authentication)."""
    return _command("PROTOCOLINFO", "1")


def authenticate_command(*, cookie: bytes | None = None, password: str | None = None) -> bytes:
    """AUTHENTICATE with a cookie (hex), a password (quoted) or nothing (NULL auth)."""
    if cookie is not None and password is not None:
        raise ValueError("give a cookie or a password, not both")
    if cookie is not None:
        return _command("AUTHENTICATE", cookie.hex().upper())
    if password is not None:
        return _command("AUTHENTICATE", quote_string(password))
    return _command("AUTHENTICATE")


def getinfo_command(*keys: str) -> bytes:
    """``GETINFO key1 key2 ...``."""
    if not keys or any(not k or " " in k for k in keys):
        raise ValueError("GETINFO needs non-empty keys without spaces")
    return _command("GETINFO", *keys)


def getconf_command(*keys: str) -> bytes:
    """``GETCONF key1 key2 ...``."""
    if not keys or any(not k or " " in k for k in keys):
        raise ValueError("GETCONF needs non-empty keys without spaces")
    return _command("GETCONF", *keys)


def setconf_command(settings: dict[str, str]) -> bytes:
    """``SETCONF key=value ...`` (values quoted)."""
    return _command("SETCONF", *(f"{k}={quote_string(v)}" for k, v in settings.items()))


def setevents_command(*events: str) -> bytes:
    """``SETEVENTS EV1 EV2`` (no events: unsubscribe all)."""
    return _command("SETEVENTS", *events)


def add_onion_command(
    key_blob: str,
    ports: list[tuple[int, str]],
    *,
    detach: bool = False,
    discard_pk: bool = True,
    max_streams: int | None = None,
) -> bytes:
    """``ADD_ONION <KeyType:KeyBlob> [Flags=...] Port=virt,target ...``.

    ``key_blob`` is ``"ED25519-V3:<base64>"`` or ``"NEW:ED25519-V3"``; each port is
    ``(virtual_port, "127.0.0.1:NNNN")``.
    """
    if not ports:
        raise ValueError("ADD_ONION needs at least one port")
    flags = [f for f, on in (("Detach", detach), ("DiscardPK", discard_pk)) if on]
    parts = ["ADD_ONION", key_blob]
    if flags:
        parts.append("Flags=" + ",".join(flags))
    if max_streams is not None:
        parts.append(f"MaxStreams={max_streams}")
    for virt, target in ports:
        if not 1 <= virt <= 65535 or " " in target or "," in target:
            raise ValueError(f"bad onion port mapping {virt} -> {target!r}")
        parts.append(f"Port={virt},{target}")
    return _command(*parts)


def del_onion_command(service_id: str) -> bytes:
    """``DEL_ONION <service id>``."""
    if not onion_service_id_valid(service_id):
        raise ValueError(f"not a v3 onion service id: {service_id!r}")
    return _command("DEL_ONION", service_id)


# ------------------------------------------------------------------------- v3 onion keys


def _onion_checksum(public_key: bytes) -> bytes:
    version = bytes([ONION_V3_VERSION])
    return hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]


def onion_service_id(public_key: bytes) -> str:
    """The 56-character v3 service id for an ed25519 public key (rend-spec-v3 6)."""
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError("an ed25519 public key is 32 bytes")
    raw = public_key + _onion_checksum(public_key) + bytes([ONION_V3_VERSION])
    return base64.b32encode(raw).decode("ascii").lower()


def onion_service_id_valid(service_id: str) -> bool:
    """True for a well-formed v3 service id (length, alphabet, version and checksum)."""
    if len(service_id) != ONION_V3_ADDRESS_LEN or not service_id.isascii():
        return False
    try:
        raw = base64.b32decode(service_id.upper())
    except ValueError:
        return False
    public_key, checksum, version = raw[:32], raw[32:34], raw[34]
    return version == ONION_V3_VERSION and checksum == _onion_checksum(public_key)


def split_onion_address(address: str) -> str | None:
    """The service id of ``<id>.onion`` (any case, optional trailing dot), or None."""
    host = address.lower().rstrip(".")
    if not host.endswith(".onion"):
        return None
    service_id = host[: -len(".onion")].rsplit(".", 1)[-1]
    return service_id if onion_service_id_valid(service_id) else None


# ------------------------------------------------------------------------ SAFECOOKIE auth

SAFECOOKIE_SERVER_KEY = b"Tor safe cookie authentication server-to-controller hash"
SAFECOOKIE_CLIENT_KEY = b"Tor safe cookie authentication controller-to-server hash"
SAFECOOKIE_NONCE_SIZE = 32
COOKIE_SIZE_BYTES = 32


def authchallenge_command(client_nonce: bytes) -> bytes:
    """``AUTHCHALLENGE SAFECOOKIE <client nonce hex>`` (control-spec 3.24)."""
    return _command("AUTHCHALLENGE", "SAFECOOKIE", client_nonce.hex().upper())


def safecookie_response(reply: Reply, cookie: bytes, client_nonce: bytes) -> bytes:
    """Check Tor's AUTHCHALLENGE answer and return the AUTHENTICATE command to send.

    Raises:
        BadPacket: an error reply, missing fields, or a SERVERHASH that proves Tor does not
            know the cookie (someone else is listening on the control port).
    """
    if reply.status != 250:
        raise BadPacket(f"AUTHCHALLENGE failed: {reply.status} {reply.message}")
    _, pairs = parse_keywords(reply.message)
    try:
        server_hash = bytes.fromhex(pairs["SERVERHASH"])
        server_nonce = bytes.fromhex(pairs["SERVERNONCE"])
    except (KeyError, ValueError) as exc:
        raise BadPacket("AUTHCHALLENGE reply without SERVERHASH/SERVERNONCE") from exc
    message = cookie + client_nonce + server_nonce
    expected = hmac.digest(SAFECOOKIE_SERVER_KEY, message, "sha256")
    if not hmac.compare_digest(expected, server_hash):
        raise BadPacket("Tor's SAFECOOKIE server hash is wrong (not the Tor we expected)")
    return _command("AUTHENTICATE", hmac.digest(SAFECOOKIE_CLIENT_KEY, message, "sha256").hex())


# --------------------------------------------------------------------------- SOCKS replies

SOCKS5_REPLY_MEANINGS: dict[int, str] = {
    0x01: "general failure (closed port or refused behind the exit)",
    0x02: "not allowed by the exit policy",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired (Tor found no circuit in time)",
    0x07: "command not supported (Tor carries no UDP)",
    0x08: "address type not supported",
    # Tor's ExtendedErrors (proposal 304)
    0xF0: "onion service descriptor not found (not published yet, or offline)",
    0xF1: "onion service descriptor invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service needs client authorization",
    0xF5: "onion service client authorization is wrong",
    0xF6: "invalid onion address",
    0xF7: "onion service introduction timed out",
}


def socks_reply_meaning(code: int | None) -> str:
    """Human text for a SOCKS5 reply code, including Tor's extended 0xF0-0xF7 codes."""
    if code is None:
        return "unknown SOCKS failure"
    return SOCKS5_REPLY_MEANINGS.get(code, f"SOCKS reply 0x{code:02X}")
