"""The VPN network file and invites (tunnel.vpn.config)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from tunnel.crypto.databox import MAX_DATA_PAYLOAD_BYTES
from tunnel.errors import ConfigError
from tunnel.toxid import ToxId
from tunnel.vpn.config import DEFAULT_MTU_BYTES, Invite, load_vpn_config, parse_vpn_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "vpn" / "network.yaml"
SECRET_HEX = "ab" * 32
TOX_ID = ToxId(bytes(range(32)), b"\x01\x02\x03\x04")


def test_example_parses_and_comments_every_key() -> None:
    cfg = load_vpn_config(EXAMPLE)
    assert cfg.params is not None
    assert cfg.params.name == "office"
    assert cfg.params.ipv4_pool == ipaddress.IPv4Network("10.77.0.0/16")
    assert cfg.mtu == 9000 == DEFAULT_MTU_BYTES
    assert cfg.members[0].ipv4 == ipaddress.IPv4Address("10.77.0.1")
    assert cfg.members[0].tox_id is not None
    assert cfg.members[1].tox_id is None
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    for key in yaml.safe_load(text):
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), key


def test_minimal_new_network_defaults() -> None:
    cfg = parse_vpn_config({"secret": SECRET_HEX, "ipv6_prefix": "fd00:1::/64"})
    assert cfg.secret == bytes.fromhex(SECRET_HEX)
    assert cfg.params is not None
    assert cfg.params.ipv4_pool is None
    assert cfg.interface == "tunnel0"
    assert cfg.join is None
    assert cfg.user is None
    assert cfg.members == ()
    # large by default (safe: probed per path, tunnel/io/vpn_large.py), 1372 to turn it off
    assert cfg.mtu == DEFAULT_MTU_BYTES == min(9000, MAX_DATA_PAYLOAD_BYTES - 1)
    small = parse_vpn_config({"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "mtu": 1372})
    assert small.mtu == 1372


def test_invite_round_trip_and_join_by_invite() -> None:
    invite = Invite(TOX_ID, bytes.fromhex(SECRET_HEX))
    text = invite.encode()
    assert text == f"tunnel-vpn:{TOX_ID}:{SECRET_HEX}"
    assert Invite.parse(f"  {text}\n") == invite
    cfg = parse_vpn_config({"invite": text})
    assert cfg.join == TOX_ID
    assert cfg.secret == invite.secret
    assert cfg.params is None  # learned from the network


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        ({}, "secret: required key is missing"),
        ({"secret": "ab"}, "secret: expected 64 hex characters"),
        ({"secret": SECRET_HEX}, "ipv4_pool: a new network needs"),
        ({"secret": SECRET_HEX, "ipv4_pool": "10.0.0.1/16"}, "ipv4_pool: .*host bits"),
        ({"secret": SECRET_HEX, "ipv4_pool": "fd00::/64"}, "ipv4_pool: expected an IPv4"),
        ({"secret": SECRET_HEX, "ipv4_pool": "10.0.0.0/31"}, "ipv4_pool: expected a /30"),
        ({"secret": SECRET_HEX, "ipv6_prefix": "2001:db8::/64"}, "ipv6_prefix: expected a"),
        ({"secret": SECRET_HEX, "ipv6_prefix": "fd00::/96"}, "ipv6_prefix: expected a"),
        (
            {"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "ipv4": "10.2.0.1"},
            "ipv4: 10.2.0.1 is outside",
        ),
        ({"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "mtu": 100}, "mtu: expected"),
        ({"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "colour": 1}, "colour: unknown key"),
        (
            {"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "interface": "x" * 16},
            "interface: 1-15",
        ),
        ({"invite": "tunnel-vpn:nope"}, "invite: expected"),
        ({"invite": f"tunnel-vpn:{TOX_ID}:abcd"}, "invite: expected 64 hex"),
        ({"secret": SECRET_HEX, "join": "00" * 37 + "01"}, "join: Tox ID checksum"),
        (
            {"secret": "cd" * 32, "invite": f"tunnel-vpn:{TOX_ID}:{SECRET_HEX}"},
            "invite: its secret differs",
        ),
        (
            {
                "secret": SECRET_HEX,
                "ipv4_pool": "10.1.0.0/16",
                "members": [{"public_key": TOX_ID.public_key.hex()}, {"tox_id": str(TOX_ID)}],
            },
            r"members\[1\]: the same member",
        ),
        (
            {"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "members": [{"ipv4": "10.1.0.1"}]},
            r"members\[0\].tox_id: required",
        ),
        (
            {
                "secret": SECRET_HEX,
                "ipv4_pool": "10.1.0.0/16",
                "members": [{"tox_id": str(TOX_ID), "ipv4": "10.9.0.1"}],
            },
            r"members\[0\].ipv4: 10.9.0.1 is outside",
        ),
        ({"role": "node", "secret": SECRET_HEX}, "role: expected one of vpn"),
    ],
)
def test_rejections(mapping: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_vpn_config(mapping)


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(f"secret: {SECRET_HEX}\nipv4_pool: 10.3.0.0/24\nuser: nobody\n")
    cfg = load_vpn_config(path)
    assert cfg.user == "nobody"
    path.write_text("secret: [\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_vpn_config(path)


def test_records_for_membership() -> None:
    cfg = load_vpn_config(EXAMPLE)
    records = cfg.initial_records()
    assert len(records) == 1  # the second member has only a public key
    assert records[0].ipv4 == bytes([10, 77, 0, 1])
    assert records[0].serial == 0
    pinned = parse_vpn_config(
        {"secret": SECRET_HEX, "ipv4_pool": "10.1.0.0/16", "ipv4": "10.1.2.3"}
    ).own_record(TOX_ID, 5)
    assert pinned.ipv4 == bytes([10, 1, 2, 3])
    assert pinned.ipv6 is None
    assert pinned.serial == 5
