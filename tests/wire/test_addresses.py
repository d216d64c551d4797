"""Packed IP/port, packed nodes and the onion IP_Port (tox-protocol.md 3.3)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.errors import BadPacket
from tunnel.wire._reader import Reader
from tunnel.wire.ip_port import (
    IPPort,
    decode_onion_ip_port_untrusted,
    encode_onion_ip_port,
    encode_packed_ip_port,
    ip_is_lan,
    read_packed_ip_port,
)
from tunnel.wire.packed_node import PackedNode, decode_nodes_untrusted, encode_nodes

PK = bytes(range(32))

# Golden vectors, laid out byte by byte as c-toxcore's pack_ip_port/pack_nodes write them.
IP4_NODE = bytes.fromhex("027f00000182a5") + PK
IP6_NODE = bytes.fromhex("0a20010db80000000000000000000000010050") + PK
TCP4_NODE = bytes.fromhex("82c612000101bb") + PK
TCP6_NODE = bytes.fromhex("8afe800000000000000000000000001234ffff") + PK
ONION_IP4 = bytes.fromhex("02c0a80001" + "00" * 12 + "82a5")
ONION_IP6 = bytes.fromhex("0a20010db800000000000000000000000182a5")


def test_golden_packed_nodes() -> None:
    assert PackedNode(IPPort.parse("127.0.0.1", 33445), PK).encode() == IP4_NODE
    assert PackedNode(IPPort.parse("2001:db8::1", 80), PK).encode() == IP6_NODE
    assert PackedNode(IPPort.parse("198.18.0.1", 443), PK, tcp=True).encode() == TCP4_NODE
    assert PackedNode(IPPort.parse("fe80::1234", 65535), PK, tcp=True).encode() == TCP6_NODE
    assert len(IP4_NODE) == 39
    assert len(IP6_NODE) == 51
    nodes = decode_nodes_untrusted(IP4_NODE + IP6_NODE + TCP4_NODE + TCP6_NODE)
    assert [n.tcp for n in nodes] == [False, False, True, True]
    assert nodes[1].ip_port == IPPort(IPv6Address("2001:db8::1"), 80)


def test_golden_onion_ip_port() -> None:
    assert encode_onion_ip_port(IPPort.parse("192.168.0.1", 33445)) == ONION_IP4
    assert encode_onion_ip_port(IPPort.parse("2001:db8::1", 33445)) == ONION_IP6
    assert decode_onion_ip_port_untrusted(ONION_IP4) == IPPort.parse("192.168.0.1", 33445)
    assert decode_onion_ip_port_untrusted(ONION_IP6) == IPPort.parse("2001:db8::1", 33445)


def test_ipv4_mapped_is_normalised() -> None:
    assert IPPort.parse("::ffff:1.2.3.4", 5) == IPPort(IPv4Address("1.2.3.4"), 5)
    assert IPPort.from_addr(("::ffff:1.2.3.4", 5, 0, 0)).to_addr() == ("1.2.3.4", 5)


ip_ports = st.builds(
    IPPort,
    st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None),
    ),
    st.integers(0, 65535),
)
nodes = st.builds(PackedNode, ip_ports, st.binary(min_size=32, max_size=32), st.booleans())


@given(st.lists(nodes, max_size=8))
def test_nodes_round_trip(node_list: list[PackedNode]) -> None:
    assert decode_nodes_untrusted(encode_nodes(node_list)) == node_list


@given(ip_ports)
def test_onion_ip_port_round_trip(ip_port: IPPort) -> None:
    assert decode_onion_ip_port_untrusted(encode_onion_ip_port(ip_port)) == ip_port


@given(st.binary(max_size=200))
def test_decode_nodes_untrusted_raises_only_bad_packet(data: bytes) -> None:
    try:
        for node in decode_nodes_untrusted(data):
            assert decode_nodes_untrusted(node.encode()) == [node]
    except BadPacket:
        pass


@given(st.binary(max_size=40))
def test_onion_ip_port_untrusted_raises_only_bad_packet(data: bytes) -> None:
    try:
        decode_onion_ip_port_untrusted(data)
    except BadPacket:
        pass


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (IP4_NODE[:-1], "truncated"),
        (IP6_NODE[:20], "truncated"),
        (b"\x03" + IP4_NODE[1:], "ip_type"),
        (b"\x00" + IP4_NODE[1:], "ip_type"),
        (IP4_NODE + b"\x02", "truncated"),
    ],
)
def test_reject_malformed_nodes(data: bytes, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_nodes_untrusted(data)


def test_reject_tcp_node_where_udp_only() -> None:
    with pytest.raises(BadPacket, match="TCP"):
        decode_nodes_untrusted(TCP4_NODE, allow_tcp=False)


def test_reject_too_many_nodes() -> None:
    with pytest.raises(BadPacket, match="more than 1"):
        decode_nodes_untrusted(IP4_NODE * 2, max_nodes=1)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (ONION_IP4[:18], "19 bytes"),
        (ONION_IP4 + b"\x00", "19 bytes"),
        (b"\x82" + ONION_IP4[1:], "family"),
    ],
)
def test_reject_malformed_onion_ip_port(data: bytes, why: str) -> None:
    with pytest.raises(BadPacket, match=why):
        decode_onion_ip_port_untrusted(data)


def test_packed_ip_port_reader() -> None:
    ip_port, tcp = read_packed_ip_port(Reader(encode_packed_ip_port(IPPort.parse("::1", 1))))
    assert ip_port == IPPort.parse("::1", 1)
    assert not tcp


@pytest.mark.parametrize(
    ("ip", "lan"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.1", True),
        ("169.254.1.1", True),
        ("169.254.0.1", False),
        ("100.64.0.1", True),
        ("100.128.0.1", False),
        ("198.18.0.1", False),
        ("8.8.8.8", False),
        ("::1", True),
        ("fe80::1", True),
        ("ff02::1", True),
        ("2001:db8::1", False),
        ("::ffff:10.0.0.1", True),
    ],
)
def test_ip_is_lan(ip: str, lan: bool) -> None:
    assert ip_is_lan(IPPort.parse(ip, 0).ip) is lan
