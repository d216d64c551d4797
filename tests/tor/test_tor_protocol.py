"""Tor control protocol, sans-IO: framing, keyword parsing, typed replies, commands, onion ids.

Golden replies are the shapes tor 0.4.9.11 sends (tor-offline.md sections 2b/3; control-spec).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.tor.protocol import (
    SAFECOOKIE_CLIENT_KEY,
    SAFECOOKIE_SERVER_KEY,
    Reply,
    ReplyLine,
    ReplyParser,
    add_onion_command,
    authchallenge_command,
    authenticate_command,
    del_onion_command,
    getinfo_command,
    onion_service_id,
    onion_service_id_valid,
    parse_add_onion,
    parse_bootstrap_phase,
    parse_getinfo,
    parse_hs_desc_event,
    parse_keywords,
    parse_protocolinfo,
    quote_string,
    safecookie_response,
    setconf_command,
    socks_reply_meaning,
    split_onion_address,
)

# torproject.org's v3 onion service id: a real, valid address
TORPROJECT_ID = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid"
SERVICE_ID = TORPROJECT_ID


def parse_all(data: bytes) -> list[Reply]:
    parser = ReplyParser()
    parser.feed(data)
    out = []
    while (reply := parser.next_reply()) is not None:
        out.append(reply)
    return out


# ------------------------------------------------------------------------------- framing


def test_single_line_reply() -> None:
    (reply,) = parse_all(b"250 OK\r\n")
    assert reply.status == 250
    assert reply.ok
    assert not reply.is_event
    assert reply.message == "OK"


def test_multi_line_getinfo_reply() -> None:
    data = (
        b'250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"\r\n'
        b"250-network-liveness=up\r\n"
        b"250 OK\r\n"
    )
    (reply,) = parse_all(data)
    assert parse_getinfo(reply) == {
        "status/bootstrap-phase": 'NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"',
        "network-liveness": "up",
    }


def test_data_reply_with_dot_stuffing() -> None:
    data = b"250+config-text=\r\nSocksPort 9050\r\n..hidden\r\n.\r\n250 OK\r\n"
    (reply,) = parse_all(data)
    assert reply.lines[0] == ReplyLine(250, "+", "config-text=", "SocksPort 9050\n.hidden")
    assert parse_getinfo(reply) == {"config-text": "SocksPort 9050\n.hidden"}


def test_event_between_replies_and_lf_only() -> None:
    data = b"650 HS_DESC UPLOADED " + SERVICE_ID.encode() + b" UNKNOWN $ABCD desc\n250 OK\n"
    event, ok = parse_all(data)
    assert event.is_event
    assert ok.ok
    hs = parse_hs_desc_event(event)
    assert hs is not None
    assert (hs.action, hs.service_id, hs.hs_dir) == ("UPLOADED", SERVICE_ID, "$ABCD")
    assert parse_hs_desc_event(ok) is None


def test_error_reply() -> None:
    (reply,) = parse_all(b'552 Unrecognized key "bogus"\r\n')
    assert not reply.ok
    assert reply.status == 552
    with pytest.raises(BadPacket):
        parse_getinfo(reply)


def test_byte_at_a_time_gives_the_same_replies() -> None:
    data = (
        b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE "
        b'COOKIEFILE="/var/lib/tor/control_auth_cookie"\r\n'
        b'250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n650 CIRC 1 BUILT\r\n'
    )
    parser = ReplyParser()
    got: list[Reply] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        while (reply := parser.next_reply()) is not None:
            got.append(reply)
    assert got == parse_all(data)
    assert len(got) == 2


@pytest.mark.parametrize(
    "data",
    [
        b"25 OK\r\n",  # short status
        b"abc OK\r\n",  # not digits
        b"250*OK\r\n",  # bad separator
        b"250-a\r\n550 b\r\n",  # status class changes inside one reply
        b"\r\n",  # empty line
    ],
)
def test_reject_malformed_framing(data: bytes) -> None:
    with pytest.raises(BadPacket):
        parse_all(data)


def test_reject_overlong_line_and_reply() -> None:
    with pytest.raises(BadPacket):
        parse_all(b"250-" + b"x" * (70 * 1024))
    with pytest.raises(BadPacket):
        parse_all(b"250-" + b"x" * 1000 + b"\r\n" * 1 + b"250-y\r\n" * 200_000)


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_badpacket(data: bytes) -> None:
    parser = ReplyParser()
    try:
        parser.feed(data)
        while (reply := parser.next_reply()) is not None:
            for text in reply.texts():
                parse_keywords(text)
    except BadPacket:
        pass


@given(st.lists(st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"))))
def test_typed_parsers_raise_only_badpacket(texts: list[str]) -> None:
    lines = (*(ReplyLine(250, "-", t) for t in texts), ReplyLine(250, " ", "OK"))
    reply = Reply(lines)
    for parse in (parse_getinfo, parse_protocolinfo, parse_add_onion):
        try:
            parse(reply)
        except BadPacket:
            pass
    for t in texts:
        try:
            parse_bootstrap_phase(t)
        except BadPacket:
            pass


# ----------------------------------------------------------------------- keyword parsing


def test_parse_keywords_quoted_and_escaped() -> None:
    words, pairs = parse_keywords(
        r'WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
        r'WARNING="Connection refused \"x\"" REASON=CONNECTREFUSED COUNT=1'
    )
    assert words == ["WARN", "BOOTSTRAP"]
    assert pairs["SUMMARY"] == "Connecting to a relay"
    assert pairs["WARNING"] == 'Connection refused "x"'
    assert pairs["COUNT"] == "1"


def test_parse_keywords_unterminated_quote() -> None:
    with pytest.raises(BadPacket):
        parse_keywords('SUMMARY="never ends')


def test_quote_string_round_trip() -> None:
    value = 'pa"ss\\word'
    words, _ = parse_keywords(quote_string(value))
    assert words == [value]
    with pytest.raises(ValueError, match="CR or LF"):
        quote_string("a\nb")


# ------------------------------------------------------------------------- typed replies


def test_bootstrap_phase_done_and_stuck() -> None:
    done = parse_bootstrap_phase('NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"')
    assert done.done
    assert done.describe() == "bootstrap at 100%: Done"
    stuck = parse_bootstrap_phase(
        'WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="Connecting to a relay" '
        'WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=3 RECOMMENDATION=ignore '
        'HOSTID="$AB" HOSTADDR="127.0.0.1:48290"'
    )
    assert not stuck.done
    assert stuck.severity == "WARN"
    assert stuck.describe() == (
        "bootstrap at 5%: Connecting to a relay; warning: Connection refused (CONNECTREFUSED)"
        " [127.0.0.1:48290]"
    )


@pytest.mark.parametrize(
    "text",
    ["NOTICE BOOTSTRAP TAG=done", "NOTICE BOOTSTRAP PROGRESS=x", "NOTICE CIRC PROGRESS=5", ""],
)
def test_bootstrap_phase_rejects(text: str) -> None:
    with pytest.raises(BadPacket):
        parse_bootstrap_phase(text)


def test_protocolinfo() -> None:
    (reply,) = parse_all(
        b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE "
        b'COOKIEFILE="/tmp/lab/client04/control_auth_cookie"\r\n'
        b'250-VERSION Tor="0.4.9.11"\r\n250 OK\r\n'
    )
    info = parse_protocolinfo(reply)
    assert info.auth_methods == {"COOKIE", "SAFECOOKIE"}
    assert info.cookie_file == "/tmp/lab/client04/control_auth_cookie"
    assert info.tor_version == "0.4.9.11"
    (null,) = parse_all(b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=NULL\r\n250 OK\r\n")
    assert parse_protocolinfo(null).auth_methods == {"NULL"}
    (bad,) = parse_all(b"250-PROTOCOLINFO 1\r\n250 OK\r\n")
    with pytest.raises(BadPacket):
        parse_protocolinfo(bad)


def test_add_onion_reply() -> None:
    key = "ED25519-V3:" + base64.b64encode(bytes(64)).decode()
    (reply,) = parse_all(
        f"250-ServiceID={SERVICE_ID}\r\n250-PrivateKey={key}\r\n250 OK\r\n".encode()
    )
    result = parse_add_onion(reply)
    assert result.service_id == SERVICE_ID
    assert result.private_key == key
    assert result.address == SERVICE_ID + ".onion"
    (bad,) = parse_all(b"250-ServiceID=notanonion\r\n250 OK\r\n")
    with pytest.raises(BadPacket):
        parse_add_onion(bad)
    (refused,) = parse_all(b"550 Onion address collision\r\n")
    with pytest.raises(BadPacket, match="collision"):
        parse_add_onion(refused)


# ------------------------------------------------------------------------------ commands


def test_commands_golden() -> None:
    assert authenticate_command() == b"AUTHENTICATE\r\n"
    assert authenticate_command(cookie=bytes(range(4))) == b"AUTHENTICATE 00010203\r\n"
    assert authenticate_command(password='a"b') == b'AUTHENTICATE "a\\"b"\r\n'
    assert getinfo_command("status/bootstrap-phase", "version") == (
        b"GETINFO status/bootstrap-phase version\r\n"
    )
    assert setconf_command({"DisableNetwork": "0"}) == b'SETCONF DisableNetwork="0"\r\n'
    assert add_onion_command("ED25519-V3:AAAA", [(33445, "127.0.0.1:48100")]) == (
        b"ADD_ONION ED25519-V3:AAAA Flags=DiscardPK Port=33445,127.0.0.1:48100\r\n"
    )
    assert add_onion_command(
        "NEW:ED25519-V3", [(1, "127.0.0.1:2"), (3, "127.0.0.1:4")], detach=True, discard_pk=False
    ) == (b"ADD_ONION NEW:ED25519-V3 Flags=Detach Port=1,127.0.0.1:2 Port=3,127.0.0.1:4\r\n")
    assert del_onion_command(SERVICE_ID) == f"DEL_ONION {SERVICE_ID}\r\n".encode()


def test_commands_reject_misuse() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        getinfo_command("a\r\nSIGNAL\tHALT")
    with pytest.raises(ValueError):
        getinfo_command()
    with pytest.raises(ValueError):
        add_onion_command("NEW:ED25519-V3", [])
    with pytest.raises(ValueError):
        add_onion_command("NEW:ED25519-V3", [(0, "127.0.0.1:1")])
    with pytest.raises(ValueError):
        del_onion_command("x" * 56)
    with pytest.raises(ValueError):
        authenticate_command(cookie=b"x", password="y")


def test_safecookie_exchange() -> None:
    cookie, cnonce, snonce = bytes(range(32)), b"\x01" * 32, b"\x02" * 32
    server_hash = hmac.digest(SAFECOOKIE_SERVER_KEY, cookie + cnonce + snonce, "sha256")
    assert authchallenge_command(cnonce) == b"AUTHCHALLENGE SAFECOOKIE " + b"01" * 32 + b"\r\n"
    (reply,) = parse_all(
        f"250 AUTHCHALLENGE SERVERHASH={server_hash.hex().upper()} "
        f"SERVERNONCE={snonce.hex().upper()}\r\n".encode()
    )
    line = safecookie_response(reply, cookie, cnonce)
    expected = hmac.digest(SAFECOOKIE_CLIENT_KEY, cookie + cnonce + snonce, "sha256")
    assert line == b"AUTHENTICATE " + expected.hex().encode() + b"\r\n"
    with pytest.raises(BadPacket, match="server hash"):
        safecookie_response(reply, bytes(32), cnonce)  # Tor does not know our cookie
    (no_fields,) = parse_all(b"250 AUTHCHALLENGE\r\n")
    with pytest.raises(BadPacket):
        safecookie_response(no_fields, cookie, cnonce)


# ------------------------------------------------------------------------- onion ids


def test_onion_service_id_golden() -> None:
    assert onion_service_id_valid(TORPROJECT_ID)
    raw = base64.b32decode(TORPROJECT_ID.upper())
    assert onion_service_id(raw[:32]) == TORPROJECT_ID
    # the checksum is SHA3-256(".onion checksum" || pubkey || 0x03)[:2] (rend-spec-v3 6)
    assert raw[32:34] == hashlib.sha3_256(b".onion checksum" + raw[:32] + b"\x03").digest()[:2]


@pytest.mark.parametrize(
    "candidate",
    [
        TORPROJECT_ID[:-1],  # too short
        TORPROJECT_ID[:-1] + "a",  # checksum/version broken
        "a" * 56,  # bad checksum
        TORPROJECT_ID.replace("2", "1", 1),  # not base32
        "é" * 56,
    ],
)
def test_onion_service_id_rejects(candidate: str) -> None:
    assert not onion_service_id_valid(candidate)


def test_split_onion_address() -> None:
    assert split_onion_address(TORPROJECT_ID.upper() + ".onion.") == TORPROJECT_ID
    assert split_onion_address("www." + TORPROJECT_ID + ".onion") == TORPROJECT_ID
    assert split_onion_address("127.0.0.1") is None
    assert split_onion_address("bad.onion") is None


def test_socks_reply_meanings() -> None:
    assert "descriptor not found" in socks_reply_meaning(0xF0)
    assert "TTL" in socks_reply_meaning(0x06)
    assert socks_reply_meaning(0x42) == "SOCKS reply 0x42"
    assert socks_reply_meaning(None) == "unknown SOCKS failure"
