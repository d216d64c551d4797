"""``tunnel status`` text: friends (and their packet size), a VPN's members, their paths and
the probed packet size."""

from __future__ import annotations

from pathlib import Path

from tunnel.commands.status import format_status, format_vpn


def _vpn(*members: dict[str, object]) -> dict[str, object]:
    return {
        "network": "home",
        "ipv4_pool": "10.77.0.0/16",
        "ipv6_prefix": "fd00:77::/64",
        "interface": "tun7",
        "addresses": ["10.77.0.1"],
        "members": list(members),
        "counters": {"dropped_offline": 2, "out_packets": 10},
    }


def test_members_show_path_and_probed_packet_size() -> None:
    lines = format_vpn(
        _vpn(
            {
                "public_key": "AA" * 32,
                "ipv4": "10.77.0.2",
                "connected": True,
                "path": "udp",
                "packet_limit": 9000,
                "path_cap": 9000,
            },
            {
                "public_key": "BB" * 32,
                "ipv4": "10.77.0.3",
                "connected": True,
                "path": "udp",
                "packet_limit": 9000,
                "path_cap": 1372,
            },
            {
                "public_key": "CC" * 32,
                "ipv4": "10.77.0.4",
                "connected": True,
                "path": "tcp",
                "packet_limit": None,
                "path_cap": None,
            },
            {
                "public_key": "EE" * 32,
                "ipv4": "10.77.0.6",
                "connected": True,
                "path": "tcp",
                "packet_limit": 9000,
                "path_cap": 1372,
            },
            {
                "public_key": "DD" * 32,
                "ipv4": "10.77.0.5",
                "connected": False,
                "path_cap": 1372,
                "packet_limit": 9000,
            },
        )
    )
    assert lines[1] == (
        f"  member {'AA' * 8}... 10.77.0.2 connected via udp, IP packets up to 9000 bytes"
    )
    assert lines[2] == (
        f"  member {'BB' * 8}... 10.77.0.3 connected via udp, IP packets up to 9000 bytes"
        " (path probed to 1372, larger split)"
    )
    assert lines[3] == f"  member {'CC' * 8}... 10.77.0.4 connected via tcp"
    assert lines[4] == (
        f"  member {'EE' * 8}... 10.77.0.6 connected via tcp, IP packets up to 9000 bytes"
        " (split to 1372 over the relay)"
    )
    assert lines[5] == f"  member {'DD' * 8}... 10.77.0.5 offline"
    assert lines[-1] == "  packets dropped_offline 2"


def test_friends_show_large_packets_only_when_agreed() -> None:
    friend = {"public_key": "AB" * 32, "online": True, "path": "udp", "rtt_ms": 0.4}
    status = {
        "role": "connect",
        "friends": [
            {**friend, "packet_limit": 16384, "sent_bytes": 5, "received_bytes": 7},
            {**friend, "packet_limit": 1373, "sent_bytes": 1, "received_bytes": 2},
        ],
    }
    text = format_status(Path("/run/t.sock"), status)
    large, small = (line for line in text.splitlines() if "friend ABAB" in line)
    assert ", packets up to 16384 B," in large
    assert "packets up to" not in small
