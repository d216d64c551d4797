"""-L/-U/-W/-D specifications and the SOCKS5 handshake."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import ConfigError
from tunnel.forward.rules import RuleSet
from tunnel.forward.socks5 import Reply, Socks5Handshake, State, reply_for
from tunnel.forward.specs import (
    LocalForward,
    PipeForward,
    SocksListen,
    parse_local_forward,
    parse_pipe_forward,
    parse_socks_listen,
)
from tunnel.wire.tuntox import DenyCode


def test_local_forward_specs() -> None:
    local = "127.0.0.1"
    assert parse_local_forward("2222:127.0.0.1:22") == LocalForward(local, 2222, "127.0.0.1", 22)
    assert parse_local_forward("2222@localhost@22") == LocalForward(local, 2222, "localhost", 22)
    assert parse_local_forward("*:80:web:8080") == LocalForward("*", 80, "web", 8080)
    v6 = parse_local_forward("[::1]:80:[2001:db8::1]:8080")
    assert v6 == LocalForward("::1", 80, "2001:db8::1", 8080)
    udp = parse_local_forward("5353:dns:53", udp=True)
    assert udp == LocalForward(local, 5353, "dns", 53, True)


@pytest.mark.parametrize(
    "spec",
    ["22", "a:b:c", "1:host", "0:h:1", "1:h:65536", "1:bad host:2", "[::1:1:h:2", "1:h:2:3:4"],
)
def test_bad_local_forward_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="-L"):
        parse_local_forward(spec)


def test_pipe_and_socks_specs() -> None:
    assert parse_pipe_forward("127.0.0.1:22") == PipeForward("127.0.0.1", 22)
    assert parse_pipe_forward("host@22") == PipeForward("host", 22)
    assert parse_socks_listen("1080") == SocksListen("127.0.0.1", 1080)
    assert parse_socks_listen("0.0.0.0:1080") == SocksListen("0.0.0.0", 1080)
    with pytest.raises(ConfigError, match="-W"):
        parse_pipe_forward("host")
    with pytest.raises(ConfigError, match="-D"):
        parse_socks_listen("a:b:c")


def test_rules_accept_tuntox_at_separator() -> None:
    assert RuleSet.parse(["localhost@22"]).evaluate("localhost", 22).allowed


def test_socks5_connect_domain_with_early_data() -> None:
    hs = Socks5Handshake()
    hs.receive(b"\x05\x02\x00\x02")
    assert hs.data_to_send() == b"\x05\x00"
    request = b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"
    hs.receive(request[:7])
    assert hs.target is None
    hs.receive(request[7:] + b"GET /")
    assert hs.target == ("example.com", 443)
    assert hs.leftover == b"GET /"
    hs.receive(b" HTTP/1.0")
    assert hs.leftover == b"GET / HTTP/1.0"
    hs.result(None)
    assert hs.data_to_send() == b"\x05\x00\x00\x01" + bytes(6)
    assert hs.state is State.DONE


def test_socks5_ipv4_ipv6_and_failures() -> None:
    hs = Socks5Handshake()
    hs.receive(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x16")
    assert hs.target == ("127.0.0.1", 22)
    hs.result(DenyCode.NOT_ALLOWED)
    assert hs.data_to_send() == b"\x05\x00" + b"\x05\x02\x00\x01" + bytes(6)
    assert hs.failed
    hs6 = Socks5Handshake()
    hs6.receive(b"\x05\x01\x00\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x50")
    assert hs6.target == ("::1", 80)


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        (b"\x05\x01\x02", b"\x05\xff"),  # only user/password offered
        (b"\x04\x01\x00\x50", b""),  # SOCKS4
        (b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x16", b"\x05\x00\x05\x07"),  # BIND
        (b"\x05\x01\x00\x05\x01\x00\x09", b"\x05\x00\x05\x08"),  # bad ATYP
        (b"\x05\x01\x00\x05\x01\x00\x03\x03a b\x00\x16", b"\x05\x00\x05\x01"),  # bad name
        (b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", b"\x05\x00\x05\x01"),  # port 0
    ],
)
def test_socks5_rejections(data: bytes, reply: bytes) -> None:
    hs = Socks5Handshake()
    hs.receive(data)
    assert hs.failed
    assert hs.data_to_send()[: len(reply)] == reply


def test_socks5_reply_mapping() -> None:
    assert reply_for(DenyCode.CONNECT_FAILED) is Reply.CONNECTION_REFUSED
    assert reply_for(DenyCode.LIMIT) is Reply.GENERAL_FAILURE
    with pytest.raises(ValueError, match="waiting"):
        Socks5Handshake().result(None)


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_socks5_random_input_never_raises(chunks: list[bytes]) -> None:
    hs = Socks5Handshake()
    for chunk in chunks:
        hs.receive(chunk)
    assert len(hs.data_to_send()) <= 12


@given(st.text(max_size=40))
def test_spec_and_rule_parsers_raise_only_config_error(text: str) -> None:
    from tunnel.forward.rules import parse_rule

    for parse in (parse_local_forward, parse_pipe_forward, parse_socks_listen, parse_rule):
        try:
            parse(text)  # type: ignore[operator]
        except ConfigError:
            pass
