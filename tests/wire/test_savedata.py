"""toxcore 0.2.18 save data (tox-protocol.md section 10): vectors, round trips, rejections."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.crypto.keys import KeyPair
from tunnel.errors import BadPacket
from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId
from tunnel.wire.ip_port import IPPort
from tunnel.wire.packed_node import PackedNode
from tunnel.wire.savedata import (
    FRIEND_STATUS_ADDED,
    FRIEND_STATUS_CONFIRMED,
    SAVED_FRIEND_SIZE_BYTES,
    SECTION_CONFERENCES,
    SaveData,
    SavedFriend,
    decode_savedata_untrusted,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

KEYS = KeyPair.from_secret_key(bytes(range(100, 132)))
PK_A = bytes(range(32))
PK_B = bytes(range(32, 64))


def section(section_type: int, payload: bytes, cookie: int = 0x01CE) -> bytes:
    """A section header written independently of the codec: ``<I H H`` little-endian."""
    return struct.pack("<IHH", len(payload), section_type, cookie) + payload


def friend_record(
    status: int,
    pk: bytes,
    info: bytes,
    name: bytes,
    status_message: bytes,
    user_status: int,
    nospam: bytes,
    last_seen: int,
) -> bytes:
    """The 2216-byte Saved_Friend record, field by field as Messenger.c friend_save lays it."""
    return (
        struct.pack(">B32s1024sxH", status, pk, info, len(info))
        + struct.pack(">128sH1007sxH", name, len(name), status_message, len(status_message))
        + struct.pack(">B3x4sQ", user_status, nospam, last_seen)
    )


def test_friend_record_layout_is_2216_bytes() -> None:
    assert len(friend_record(3, PK_A, b"", b"", b"", 0, bytes(4), 0)) == SAVED_FRIEND_SIZE_BYTES


def golden_bytes() -> bytes:
    udp_node = bytes.fromhex("027f000001b3b0") + PK_B  # 127.0.0.1:46000
    tcp_relay = bytes.fromhex("827f000001b3b1") + PK_A  # TCP 127.0.0.1:46001
    path_node = bytes.fromhex("0a" + "00" * 15 + "01" + "b3b2") + PK_A  # [::1]:46002
    dht = struct.pack("<I", 0x0159000D) + section(4, udp_node, cookie=0x11CE)
    friends = friend_record(
        FRIEND_STATUS_ADDED, PK_A, b"add me", b"", b"", 0, b"\xa1\xb2\xc3\xd4", 0
    ) + friend_record(FRIEND_STATUS_CONFIRMED, PK_B, b"", b"bob", b"busy", 2, bytes(4), 1700000000)
    return (
        bytes(4)
        + struct.pack("<I", 0x15ED1B1F)
        + section(1, b"\x01\x02\x03\x04" + KEYS.public_key + KEYS.secret_key)
        + section(2, dht)
        + section(3, friends)
        + section(4, b"alice")
        + section(5, b"hello")
        + section(6, b"\x01")
        + section(10, tcp_relay)
        + section(11, path_node)
        + section(20, b"")
        + section(255, b"")
    )


def golden_value() -> SaveData:
    return SaveData(
        nospam=b"\x01\x02\x03\x04",
        public_key=KEYS.public_key,
        secret_key=KEYS.secret_key,
        friends=(
            SavedFriend(
                FRIEND_STATUS_ADDED, PK_A, request_message=b"add me", nospam=b"\xa1\xb2\xc3\xd4"
            ),
            SavedFriend(
                FRIEND_STATUS_CONFIRMED,
                PK_B,
                name=b"bob",
                status_message=b"busy",
                user_status=2,
                last_seen=1700000000,
            ),
        ),
        name=b"alice",
        status_message=b"hello",
        user_status=1,
        tcp_relays=(PackedNode(IPPort.parse("127.0.0.1", 46001), PK_A, tcp=True),),
        path_nodes=(PackedNode(IPPort.parse("::1", 46002), PK_A),),
        dht_nodes=(PackedNode(IPPort.parse("127.0.0.1", 46000), PK_B),),
        extra_sections=((SECTION_CONFERENCES, b""),),
    )


def test_golden_layout_encode_and_decode() -> None:
    assert golden_value().encode() == golden_bytes()
    assert decode_savedata_untrusted(golden_bytes()) == golden_value()


def test_real_toxcore_savedata() -> None:
    """``tox_get_savedata`` of libtoxcore 0.2.18 (Debian libtoxcore2), UDP off, after
    ``tox_self_set_name("alice")``, ``..._status_message("testing")``, ``..._status(BUSY)``,
    ``tox_self_set_nospam(0x04030201)``, ``tox_friend_add(<pk 00..1f + nospam a1b2c3d4>,
    "hello, add me")`` and ``tox_friend_add_norequest(<pk 20..3f>)``. The address it reported
    was DF4BF764...2749 04030201 B02D."""
    data = (VECTORS / "savedata_toxcore_0_2_18.bin").read_bytes()
    save = decode_savedata_untrusted(data)
    assert str(ToxId(save.public_key, save.nospam)) == (
        "DF4BF764B08C2AAE0DB55F32B1FBC15E317C4053AC374F97CD4AEDE2B36E274904030201B02D"
    )
    assert save.name == b"alice"
    assert save.status_message == b"testing"
    assert save.user_status == 2
    assert save.friends == (
        SavedFriend(
            FRIEND_STATUS_ADDED,
            PK_A,
            request_message=b"hello, add me",
            nospam=bytes.fromhex("a1b2c3d4"),
        ),
        SavedFriend(FRIEND_STATUS_CONFIRMED, PK_B),
    )
    assert save.extra_sections == ((SECTION_CONFERENCES, b""),)
    # toxcore reserves room for 8 TCP relays and 8 path nodes: zero padding after END.
    encoded = save.encode()
    assert data[: len(encoded)] == encoded
    assert set(data[len(encoded) :]) == {0}


# --- Hypothesis round trips -------------------------------------------------------------------

pks = st.binary(min_size=32, max_size=32)
ip_ports = st.builds(
    IPPort,
    st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None),
    ),
    st.integers(0, 0xFFFF),
)
udp_nodes = st.builds(PackedNode, ip_ports, pks, st.just(False))
any_nodes = st.builds(PackedNode, ip_ports, pks, st.booleans())
friends = st.builds(
    SavedFriend,
    status=st.integers(0, 255),
    public_key=pks,
    request_message=st.binary(max_size=1024),
    name=st.binary(max_size=128),
    status_message=st.binary(max_size=1007),
    user_status=st.integers(0, 255),
    nospam=st.binary(min_size=4, max_size=4),
    last_seen=st.integers(0, (1 << 64) - 1),
)
extra_types = st.integers(0, 0xFFFF).filter(lambda t: t not in {1, 2, 3, 4, 5, 6, 10, 11, 255})


@st.composite
def savedatas(draw: st.DrawFn) -> SaveData:
    keys = KeyPair.from_secret_key(draw(st.binary(min_size=32, max_size=32)))
    return SaveData(
        nospam=draw(st.binary(min_size=4, max_size=4)),
        public_key=keys.public_key,
        secret_key=keys.secret_key,
        friends=tuple(draw(st.lists(friends, max_size=3))),
        name=draw(st.binary(max_size=128)),
        status_message=draw(st.binary(max_size=1007)),
        user_status=draw(st.integers(0, 255)),
        tcp_relays=tuple(draw(st.lists(any_nodes, max_size=8))),
        path_nodes=tuple(draw(st.lists(udp_nodes, max_size=8))),
        dht_nodes=tuple(draw(st.lists(udp_nodes, max_size=20))),
        extra_sections=tuple(draw(st.lists(st.tuples(extra_types, st.binary(max_size=40))))),
        extra_dht_sections=tuple(
            draw(
                st.lists(
                    st.tuples(
                        st.integers(0, 0xFFFF).filter(lambda t: t != 4), st.binary(max_size=9)
                    )
                )
            )
        ),
    )


@given(savedatas())
def test_roundtrip(save: SaveData) -> None:
    data = save.encode()
    assert decode_savedata_untrusted(data) == save
    # trailing bytes after END are ignored, as toxcore ignores its zero padding
    assert decode_savedata_untrusted(data + bytes(816)) == save


@given(st.binary(max_size=400))
def test_random_bytes_raise_only_bad_packet(data: bytes) -> None:
    try:
        decode_savedata_untrusted(data)
    except BadPacket:
        pass


@given(st.data())
def test_mutated_savedata_raises_only_bad_packet(data: st.DataObject) -> None:
    raw = bytearray(golden_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        save = decode_savedata_untrusted(bytes(raw[:cut]))
    except BadPacket:
        return
    assert decode_savedata_untrusted(save.encode()) == save


# --- rejections -------------------------------------------------------------------------------


def _replace_section(data: bytes, section_type: int, new: bytes | None) -> bytes:
    """Rewrite the golden save data with one top-level section replaced (or dropped)."""
    out = bytearray(data[:8])
    pos = 8
    while pos < len(data):
        length, stype, _ = struct.unpack_from("<IHH", data, pos)
        chunk = data[pos : pos + 8 + length]
        pos += 8 + length
        if stype == section_type:
            if new is not None:
                out += section(section_type, new)
        else:
            out += chunk
    return bytes(out)


def _rejects(data: bytes, match: str) -> None:
    with pytest.raises(BadPacket, match=match):
        decode_savedata_untrusted(data)


def test_reject_bad_magic() -> None:
    good = golden_bytes()
    _rejects(b"\x01" + good[1:], "four zero bytes")
    _rejects(good[:4] + b"\x00" + good[5:], "cookie mismatch")
    _rejects(good[:7], "too short")
    _rejects(b"toxEsave" + bytes(100), "zero bytes")


def test_reject_section_cookie() -> None:
    good = bytearray(golden_bytes())
    good[14] ^= 0xFF  # inner cookie of the first section
    _rejects(bytes(good), "section cookie")


def test_reject_truncated_section() -> None:
    good = golden_bytes()
    _rejects(good[:100], "truncated")


def test_reject_unparsed_tail_without_end() -> None:
    good = golden_bytes()
    no_end = good[:-8]
    assert decode_savedata_untrusted(no_end) == golden_value()  # END is optional for toxcore
    _rejects(no_end + b"\x01\x02\x03", "unparsed")


def test_reject_nonempty_end() -> None:
    _rejects(golden_bytes()[:-8] + section(255, b"x"), "END")


def test_reject_missing_keys() -> None:
    _rejects(_replace_section(golden_bytes(), 1, None), "no NOSPAMKEYS")


def test_reject_key_mismatch() -> None:
    other = KeyPair.from_secret_key(bytes(32))
    bad = b"\x01\x02\x03\x04" + other.public_key + KEYS.secret_key
    _rejects(_replace_section(golden_bytes(), 1, bad), "does not derive")
    _rejects(_replace_section(golden_bytes(), 1, bad[:-1]), "not 68")


def test_reject_duplicate_section() -> None:
    good = golden_bytes()
    _rejects(good[:-8] + section(4, b"again") + section(255, b""), "duplicate")


def test_reject_friends_not_multiple() -> None:
    _rejects(_replace_section(golden_bytes(), 3, bytes(2215)), "multiple of 2216")


def test_reject_friend_lengths_too_long() -> None:
    record = bytearray(friend_record(3, PK_A, b"", b"", b"", 0, bytes(4), 0))
    record[1058:1060] = (1025).to_bytes(2, "big")
    _rejects(_replace_section(golden_bytes(), 3, bytes(record)), "request message length")
    record = bytearray(friend_record(3, PK_A, b"", b"", b"", 0, bytes(4), 0))
    record[1188:1190] = (129).to_bytes(2, "big")
    _rejects(_replace_section(golden_bytes(), 3, bytes(record)), "name length")
    record = bytearray(friend_record(3, PK_A, b"", b"", b"", 0, bytes(4), 0))
    record[2198:2200] = (1008).to_bytes(2, "big")
    _rejects(_replace_section(golden_bytes(), 3, bytes(record)), "status message length")


def test_reject_name_status_lengths() -> None:
    _rejects(_replace_section(golden_bytes(), 4, b"n" * 129), "name is 129")
    _rejects(_replace_section(golden_bytes(), 5, b"s" * 1008), "status message is 1008")
    _rejects(_replace_section(golden_bytes(), 6, b""), "status section")


def test_reject_bad_nodes() -> None:
    tcp_node = bytes.fromhex("827f000001b3b1") + PK_A
    _rejects(_replace_section(golden_bytes(), 11, tcp_node), "TCP node")
    _rejects(_replace_section(golden_bytes(), 10, tcp_node[:-1]), "truncated")
    _rejects(_replace_section(golden_bytes(), 10, b"\x07" + tcp_node[1:]), "ip_type")
    dht = struct.pack("<I", 0x0159000D) + section(4, tcp_node, cookie=0x11CE)
    _rejects(_replace_section(golden_bytes(), 2, dht), "TCP node")


def test_reject_bad_dht_framing() -> None:
    udp_node = bytes.fromhex("027f000001b3b0") + PK_B
    _rejects(_replace_section(golden_bytes(), 2, b"\0\0\0\0" + section(4, udp_node, 0x11CE)), "DHT")
    _rejects(
        _replace_section(
            golden_bytes(), 2, struct.pack("<I", 0x0159000D) + section(4, b"", 0x01CE)
        ),
        "DHT section cookie",
    )
    twice = struct.pack("<I", 0x0159000D) + section(4, b"", 0x11CE) * 2
    _rejects(_replace_section(golden_bytes(), 2, twice), "duplicate DHT")


def test_unknown_dht_subsection_is_kept() -> None:
    dht = struct.pack("<I", 0x0159000D) + section(4, b"", 0x11CE) + section(9, b"xyz", 0x11CE)
    save = decode_savedata_untrusted(_replace_section(golden_bytes(), 2, dht))
    assert save.dht_nodes == ()
    assert save.extra_dht_sections == ((9, b"xyz"),)
    assert decode_savedata_untrusted(save.encode()) == save


def test_constructor_rejects_local_misuse() -> None:
    value = golden_value()
    with pytest.raises(ValueError, match="reserved"):
        SaveData(value.nospam, value.public_key, value.secret_key, extra_sections=((3, b""),))
    with pytest.raises(ValueError, match="UDP"):
        SaveData(value.nospam, value.public_key, value.secret_key, dht_nodes=value.tcp_relays)
    with pytest.raises(ValueError, match="name"):
        SavedFriend(3, PK_A, name=b"x" * 129)


def test_seeded_identity_is_stable() -> None:
    keys = KeyPair.generate(SeededRng(1))
    save = SaveData(b"\0\0\0\0", keys.public_key, keys.secret_key)
    assert decode_savedata_untrusted(save.encode()).key_pair == keys
