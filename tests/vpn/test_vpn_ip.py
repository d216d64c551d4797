"""IP header checks, checksums, IPv4 fragmentation and ICMP too-big replies."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.vpn.icmp import frag_needed_v4, packet_too_big_v6, too_big_reply
from tunnel.vpn.ip import (
    IpError,
    check_packet,
    dst_address,
    fragment_ipv4,
    internet_checksum,
    ipv4_header_checksum_ok,
    is_multicast,
    ones_complement_sum,
    src_address,
)

# The classic worked example (Wikipedia "IPv4 header checksum"): checksum 0xb861.
GOLDEN_V4_HEADER = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def ipv4_packet(
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    payload: bytes = b"hello",
    proto: int = 17,
    flags: int = 0x4000,
) -> bytes:
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(payload),
            0x1234,
            flags,
            64,
            proto,
            0,
            ipaddress.IPv4Address(src).packed,
            ipaddress.IPv4Address(dst).packed,
        )
    )
    struct.pack_into("!H", header, 10, internet_checksum(header))
    return bytes(header) + payload


def ipv6_packet(
    src: str = "fd00::1", dst: str = "fd00::2", payload: bytes = b"hello", nh: int = 17
) -> bytes:
    return (
        struct.pack(
            "!IHBB16s16s",
            0x60000000,
            len(payload),
            nh,
            64,
            ipaddress.IPv6Address(src).packed,
            ipaddress.IPv6Address(dst).packed,
        )
        + payload
    )


def test_golden_ipv4_header_checksum() -> None:
    assert internet_checksum(GOLDEN_V4_HEADER) == 0xB861
    fixed = GOLDEN_V4_HEADER[:10] + b"\xb8\x61" + GOLDEN_V4_HEADER[12:]
    assert ones_complement_sum(fixed) == 0xFFFF


def test_check_valid_packets_and_addresses() -> None:
    v4 = ipv4_packet()
    assert check_packet(v4, len(v4)) == 4
    assert src_address(v4, 4) == bytes([10, 0, 0, 1])
    assert dst_address(memoryview(v4), 4) == bytes([10, 0, 0, 2])
    assert ipv4_header_checksum_ok(v4)
    v6 = ipv6_packet()
    assert check_packet(bytearray(v6), len(v6)) == 6
    assert src_address(v6, 6) == ipaddress.IPv6Address("fd00::1").packed
    assert dst_address(v6, 6) == ipaddress.IPv6Address("fd00::2").packed


def test_check_uses_length_not_buffer_size() -> None:
    v4 = ipv4_packet()
    buf = bytearray(2048)
    buf[: len(v4)] = v4
    assert check_packet(buf, len(v4)) == 4
    assert check_packet(buf, len(v4) + 1) == IpError.LENGTH_MISMATCH


@pytest.mark.parametrize(
    ("packet", "error"),
    [
        (b"", IpError.TOO_SHORT),
        (ipv4_packet()[:19], IpError.TOO_SHORT),
        (b"\x44" + ipv4_packet()[1:], IpError.BAD_HEADER_LENGTH),
        (b"\x4f" + ipv4_packet()[1:], IpError.BAD_HEADER_LENGTH),
        (ipv4_packet() + b"x", IpError.LENGTH_MISMATCH),
        (ipv4_packet()[:-1], IpError.LENGTH_MISMATCH),
        (b"\x55" + ipv4_packet()[1:], IpError.BAD_VERSION),
        (ipv6_packet()[:39], IpError.TOO_SHORT),
        (ipv6_packet() + b"x", IpError.LENGTH_MISMATCH),
        (ipv6_packet(payload=b""), 6),
        (ipv6_packet()[:4] + b"\x00\x00" + ipv6_packet()[6:40], 6),
    ],
)
def test_check_rejections(packet: bytes, error: int) -> None:
    assert check_packet(packet, len(packet)) == error


@given(st.binary(max_size=120))
def test_check_never_raises(data: bytes) -> None:
    result = check_packet(data, len(data))
    assert result in (4, 6) or result in set(IpError)
    if result in (4, 6):
        assert len(src_address(data, result)) == (4 if result == 4 else 16)


def test_multicast() -> None:
    assert is_multicast(bytes([224, 0, 0, 1]))
    assert is_multicast(b"\xff" * 4)
    assert not is_multicast(bytes([10, 0, 0, 1]))
    assert is_multicast(ipaddress.IPv6Address("ff02::1").packed)
    assert not is_multicast(ipaddress.IPv6Address("fd00::1").packed)


@given(st.integers(min_value=1, max_value=3000), st.integers(min_value=28, max_value=1500))
def test_fragment_ipv4_reassembles(size: int, mtu: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    packet = ipv4_packet(payload=payload, flags=0)
    fragments = fragment_ipv4(packet, mtu)
    rebuilt = bytearray()
    for i, fragment in enumerate(fragments):
        assert len(fragment) <= mtu
        assert check_packet(fragment, len(fragment)) == 4
        assert ipv4_header_checksum_ok(fragment)
        flags_offset = struct.unpack_from("!H", fragment, 6)[0]
        assert (flags_offset & 0x1FFF) * 8 == len(rebuilt)
        assert bool(flags_offset & 0x2000) == (i < len(fragments) - 1)
        rebuilt += fragment[20:]
    assert bytes(rebuilt) == payload


def test_fragment_ipv4_too_small_mtu() -> None:
    with pytest.raises(ValueError, match="too small"):
        fragment_ipv4(ipv4_packet(payload=b"x" * 100), 27)


def test_frag_needed_v4_golden_shape() -> None:
    original = ipv4_packet(payload=b"x" * 1400)
    reply = frag_needed_v4(original, len(original), 1200)
    assert reply is not None
    assert check_packet(reply, len(reply)) == 4
    assert ipv4_header_checksum_ok(reply)
    assert src_address(reply, 4) == dst_address(original, 4)
    assert dst_address(reply, 4) == src_address(original, 4)
    assert reply[9] == 1
    icmp = reply[20:]
    assert icmp[:2] == b"\x03\x04"
    assert struct.unpack_from("!H", icmp, 6)[0] == 1200
    assert ones_complement_sum(icmp) == 0xFFFF
    assert icmp[8:] == original[: len(icmp) - 8]
    assert len(reply) <= 576


def test_packet_too_big_v6_golden_shape() -> None:
    original = ipv6_packet(payload=b"y" * 1500)
    reply = packet_too_big_v6(original, len(original), 1300)
    assert reply is not None
    assert check_packet(reply, len(reply)) == 6
    assert len(reply) == 1280
    assert reply[6] == 58
    assert src_address(reply, 6) == dst_address(original, 6)
    icmp = reply[40:]
    assert icmp[0] == 2
    assert struct.unpack_from("!I", icmp, 4)[0] == 1300
    pseudo = reply[8:40] + struct.pack("!I3xB", len(icmp), 58)
    assert ones_complement_sum(icmp, ones_complement_sum(pseudo)) == 0xFFFF
    assert icmp[8:] == original[: len(icmp) - 8]


def test_no_reply_to_icmp_errors() -> None:
    err4 = ipv4_packet(proto=1, payload=b"\x03\x01" + b"\x00" * 30)
    assert too_big_reply(err4, len(err4), 4, 100) is None
    echo4 = ipv4_packet(proto=1, payload=b"\x08\x00" + b"\x00" * 30)
    assert too_big_reply(echo4, len(echo4), 4, 100) is not None
    err6 = ipv6_packet(nh=58, payload=b"\x01\x00" + b"\x00" * 30)
    assert too_big_reply(err6, len(err6), 6, 1280) is None
    echo6 = ipv6_packet(nh=58, payload=b"\x80\x00" + b"\x00" * 30)
    assert too_big_reply(echo6, len(echo6), 6, 1280) is not None
    second_fragment = ipv4_packet(flags=0x0010)
    assert frag_needed_v4(second_fragment, len(second_fragment), 100) is None
