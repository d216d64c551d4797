"""VPN state persistence (:mod:`tunnel.vpn.state`) and the ``tunnel vpn`` command without a
network: invites, config errors, the state file next to the profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunnel.cli import main
from tunnel.errors import ConfigError
from tunnel.io.node_runner import load_or_create_profile
from tunnel.io.vpn_setup import build_membership, load_state, state_path_for
from tunnel.testing.rng import SeededRng
from tunnel.toxid import ToxId
from tunnel.vpn.config import parse_vpn_config
from tunnel.vpn.membership import SendFriendRequest, network_id
from tunnel.vpn.state import VpnState
from tunnel.wire.vpn import MemberRecord

SECRET = "11" * 32


def _tox_id(seed: int) -> ToxId:
    rng = SeededRng(seed)
    raw = rng(32)
    return ToxId(raw[:31] + bytes([raw[31] & 0x7F]), rng(4))


def test_state_round_trip() -> None:
    net = network_id(bytes.fromhex(SECRET))
    own = MemberRecord(_tox_id(1), 7, bytes([10, 0, 0, 5]))
    state = VpnState(net, own, (MemberRecord(_tox_id(2), 3),), (_tox_id(3).public_key,))
    assert VpnState.from_json(state.to_json(), net) == state


def test_own_serial_starts_at_one_and_rises_only_on_change() -> None:
    net = network_id(bytes.fromhex(SECRET))
    tox_id = _tox_id(1)
    first = VpnState(net).own_record(MemberRecord(tox_id, 0))
    assert first.serial == 1
    saved = VpnState(net, first)
    assert saved.own_record(MemberRecord(tox_id, 0)) == first
    pinned = saved.own_record(MemberRecord(tox_id, 0, bytes([10, 0, 0, 9])))
    assert pinned.serial == 2
    assert pinned.ipv4 == bytes([10, 0, 0, 9])


def test_state_of_another_network_is_ignored_and_garbage_is_an_error() -> None:
    net = network_id(bytes.fromhex(SECRET))
    other = VpnState(network_id(bytes(32)), MemberRecord(_tox_id(1), 5))
    assert VpnState.from_json(other.to_json(), net) == VpnState(net)
    for text in ("", "[]", '{"version": 1}', '{"version": 1, "network_id": "zz"}'):
        with pytest.raises(ConfigError, match="state file"):
            VpnState.from_json(text, net)
    data = json.loads(VpnState(net, None, (MemberRecord(_tox_id(2)),)).to_json())
    data["members"][0] = "00" + data["members"][0]
    bad = json.dumps(data)
    with pytest.raises(ConfigError):
        VpnState.from_json(bad, net)


def test_saved_members_and_revocations_come_back(tmp_path: Path) -> None:
    config = parse_vpn_config({"secret": SECRET, "ipv4_pool": "10.123.0.0/24"})
    me, friend, banned = _tox_id(1), _tox_id(2), _tox_id(3)
    path = state_path_for(tmp_path / "profile.tox", config)
    assert path.parent == tmp_path
    assert load_state(path, config) == VpnState(network_id(config.secret))
    state = VpnState(
        network_id(config.secret),
        MemberRecord(me, 4),
        (MemberRecord(friend, 2), MemberRecord(banned, 1)),
        (banned.public_key,),
    )
    path.write_text(state.to_json())
    loaded = load_state(path, config)
    membership = build_membership(config, me, loaded)
    assert membership.own.serial == 4
    assert set(membership.records()) == {me.public_key, friend.public_key}
    assert membership.revoked() == {banned.public_key}
    path.write_text("not json")
    with pytest.raises(ConfigError, match=str(path)):
        load_state(path, config)


def test_join_from_config_or_argument() -> None:
    config = parse_vpn_config({"invite": f"tunnel-vpn:{_tox_id(2)}:{SECRET}"})
    membership = build_membership(config, _tox_id(1), VpnState(network_id(config.secret)))
    actions = membership.actions()
    assert len(actions) == 1
    assert isinstance(actions[0], SendFriendRequest)
    assert actions[0].tox_id == _tox_id(2)


def test_cli_invite_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = tmp_path / "network.yaml"
    network.write_text(yaml.safe_dump({"secret": SECRET, "ipv4_pool": "10.123.0.0/24"}))
    profile = tmp_path / "me.tox"
    tox_id = load_or_create_profile(profile).tox_id
    assert main(["vpn", "invite", "-c", str(network), "--profile", str(profile)]) == 0
    assert capsys.readouterr().out.strip() == f"tunnel-vpn:{tox_id}:{SECRET}"
    other = f"tunnel-vpn:{tox_id}:{'22' * 32}"
    assert main(["vpn", "-c", str(network), "--join", other, "--profile", str(profile)]) == 1
    assert "another network" in capsys.readouterr().err
    assert main(["vpn", "--profile", str(profile)]) == 1
    assert "-c/--config" in capsys.readouterr().err
    assert main(["vpn", "remove", "--control-socket", str(tmp_path / "x.ctl")]) == 1
    assert "remove" in capsys.readouterr().err
    key = tox_id.public_key.hex()
    assert main(["vpn", "remove", key, "--control-socket", str(tmp_path / "x.ctl")]) == 1
    assert "no running tunnel vpn" in capsys.readouterr().err
