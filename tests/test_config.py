"""YAML configuration: defaults, every key, one-line errors naming the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tunnel.config import (
    BootstrapdConfig,
    BootstrapNode,
    FriendConfig,
    NodeConfig,
    ProxyConfig,
    Section,
    TcpRelayConfig,
    UdpConfig,
    dump_config,
    load_bootstrapd_config,
    load_config,
    load_node_config,
    parse_bootstrapd_config,
    parse_config,
    parse_node_config,
)
from tunnel.errors import ConfigError
from tunnel.toxid import ToxId

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PK = bytes.fromhex("A4E09292B651C278B9772C569F5FA9BB13D906B46AB68C9DF9DC2B4409F8A209")
FRIEND_PK = bytes.fromhex("5DFEDD3B6BD47F6FA28EE15D969D5BB0EA53774D488BDAF9DF1C6E0124B3EF22")
FRIEND_ID = str(ToxId(FRIEND_PK, bytes.fromhex("0BADF00D")))


@pytest.fixture(autouse=True)
def _xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))


def error_of(mapping: object, parse: object = parse_config) -> str:
    assert callable(parse)
    with pytest.raises(ConfigError) as info:
        parse(mapping)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- example files ------------------------------------------------------------------------------


def _node_or_bootstrapd(path: Path) -> bool:
    data = yaml.safe_load(path.read_text())
    return data.get("role", "node") in ("node", "bootstrapd")


NODE_EXAMPLES = [p for p in sorted(CONFIGS.glob("*.yaml")) if _node_or_bootstrapd(p)]


@pytest.mark.parametrize("path", NODE_EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_parses(path: Path) -> None:
    cfg = load_config(path)
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_examples_cover_both_roles() -> None:
    node = load_node_config(CONFIGS / "node.yaml")
    assert node.bootstrap[1] == BootstrapNode("::1", 33446, node.bootstrap[1].public_key, ())
    assert node.friends[0] == FriendConfig(FRIEND_PK, "laptop")  # given as a Tox ID
    assert node.profile == Path("~/.config/tunnel/profile.tox").expanduser()
    bsd = load_bootstrapd_config(CONFIGS / "bootstrapd.yaml")
    assert bsd.tcp_relay_ports == (3389, 33445)
    assert isinstance(load_config(CONFIGS / "bootstrapd.yaml"), BootstrapdConfig)


def test_example_files_comment_every_key() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        text = path.read_text()
        lines = text.splitlines()
        for key in yaml.safe_load(text):
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
            assert lines[index - 1].startswith("#") or key == "role", f"{path.name}: {key}"


# --- defaults and full parse --------------------------------------------------------------------


def test_node_defaults(tmp_path: Path) -> None:
    for empty in (None, {}, {"role": "node"}):
        cfg = parse_node_config(empty)
        assert cfg == NodeConfig(
            profile=tmp_path / "xdg" / "tunnel" / "profile.tox",
            control_socket=tmp_path / "run" / "tunnel" / "control.sock",
        )
    assert cfg.udp == UdpConfig(True, True, 33445, 33545)
    assert cfg.lan_discovery is False
    assert cfg.hole_punching is True
    assert cfg.proxy is None
    assert cfg.log_level == "info"


def test_default_paths_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_node_config({})
    assert cfg.profile == tmp_path / ".config" / "tunnel" / "profile.tox"
    assert cfg.control_socket == tmp_path / ".config" / "tunnel" / "control.sock"


def test_null_values_mean_default() -> None:
    nulls = {key: None for key in yaml.safe_load((CONFIGS / "node.yaml").read_text())}
    assert parse_node_config(nulls) == parse_node_config({})
    nulls = {key: None for key in yaml.safe_load((CONFIGS / "bootstrapd.yaml").read_text())}
    assert parse_config(nulls | {"role": "bootstrapd"}) == parse_bootstrapd_config({})


def test_bootstrapd_defaults(tmp_path: Path) -> None:
    cfg = parse_bootstrapd_config({})
    assert cfg == BootstrapdConfig(keys_file=tmp_path / "xdg" / "tunnel" / "bootstrapd.keys")
    assert cfg.port == 33445
    assert cfg.tcp_relay_ports == (33445,)
    assert cfg.lan_discovery is False
    assert cfg.onion is True
    assert parse_bootstrapd_config({"tcp_relay_ports": []}).tcp_relay_ports == ()


def test_full_node_config() -> None:
    cfg = parse_node_config(
        {
            "profile": "/p/profile.tox",
            "control_socket": "/run/t.sock",
            "log_level": "DEBUG",
            "udp": {"enabled": False, "ipv6": False, "port_start": 46000, "port_end": 46009},
            "lan_discovery": True,
            "hole_punching": False,
            "proxy": "socks5://us%3Aer:p%40ss@127.0.0.1:9050",
            "bootstrap": [
                {"host": "[::1]", "port": 46001, "public_key": PK.hex(), "tcp_ports": [46002]}
            ],
            "tcp_relays": [{"host": "relay.example.org", "port": 443, "public_key": PK.hex()}],
            "friends": [{"public_key": FRIEND_ID, "name": "bob"}, {"public_key": PK.hex()}],
        }
    )
    assert cfg.profile == Path("/p/profile.tox")
    assert cfg.log_level == "debug"
    assert cfg.udp == UdpConfig(False, False, 46000, 46009)
    assert cfg.proxy == ProxyConfig("socks5", "127.0.0.1", 9050, "us:er", "p@ss")
    assert cfg.bootstrap == (BootstrapNode("::1", 46001, PK, (46002,)),)
    assert cfg.tcp_relays == (TcpRelayConfig("relay.example.org", 443, PK),)
    assert cfg.friends == (FriendConfig(FRIEND_PK, "bob"), FriendConfig(PK, ""))
    dumped = dump_config(cfg)
    assert PK.hex().upper() in dumped
    assert parse_node_config(yaml.safe_load(dumped)) == cfg


def test_proxy_forms() -> None:
    assert parse_node_config({"proxy": "http://[::1]:8080"}).proxy == ProxyConfig(
        "http", "::1", 8080
    )
    assert parse_node_config({"proxy": "SOCKS5://user@localhost:1080"}).proxy == ProxyConfig(
        "socks5", "localhost", 1080, "user", None
    )
    assert parse_node_config({"proxy": "socks5://host"}).proxy == ProxyConfig(
        "socks5", "host", 1080
    )
    assert parse_node_config({"proxy": "http://h"}).proxy == ProxyConfig("http", "h", 8080)
    for url in ("ftp://a:1", "socks5://:1080", "socks5://h:0", "http://h:1/path", "h:1", 5):
        assert error_of({"proxy": url}).startswith("proxy: expected a URL like socks5://")
    assert "proxy: expected a URL" in error_of({"proxy": "socks5://h:99999"})


def test_udp_port_end_follows_high_port_start() -> None:
    assert parse_node_config({"udp": {"port_start": 46000}}).udp.port_end == 46100
    assert parse_node_config({"udp": {"port_start": 65500}}).udp.port_end == 65535


def test_relative_paths_come_from_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "sub" / "node.yaml"
    conf.parent.mkdir()
    conf.write_text("profile: me.tox\n")
    assert load_node_config(conf).profile == tmp_path / "sub" / "me.tox"
    conf.write_text("role: bootstrapd\nkeys_file: k.keys\n")
    assert load_bootstrapd_config(conf).keys_file == tmp_path / "sub" / "k.keys"


# --- errors name the key path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"udp": {"prot": 1}}, "udp.prot: unknown key"),
        ({"frends": []}, "frends: unknown key"),
        ({"udp": {"port_start": "abc"}}, "udp.port_start: expected an integer 1-65535, got 'abc'"),
        ({"udp": {"port_start": 0}}, "udp.port_start: expected an integer 1-65535, got 0"),
        ({"udp": {"port_end": True}}, "udp.port_end: expected an integer 1-65535, got True"),
        (
            {"udp": {"port_start": 46010, "port_end": 46000}},
            "udp.port_end: expected an integer 46010-65535 (not below port_start), got 46000",
        ),
        (
            {"udp": {"enabled": "yes please"}},
            "udp.enabled: expected true or false, got 'yes please'",
        ),
        ({"udp": [1]}, "udp: expected a mapping of keys to values, got [1]"),
        ({"lan_discovery": 1}, "lan_discovery: expected true or false, got 1"),
        ({"log_level": "loud"}, "log_level: expected one of debug, info, warning, error"),
        ({"profile": ""}, "profile: expected a non-empty string"),
        ({"profile": 5}, "profile: expected a string, got 5"),
        ({"bootstrap": {"host": "x"}}, "bootstrap: expected a list, got {'host': 'x'}"),
        ({"bootstrap": ["x"]}, "bootstrap[0]: expected a mapping of keys to values, got 'x'"),
        ({"bootstrap": [{"port": 1, "public_key": PK.hex()}]}, "bootstrap[0].host: required key"),
        (
            {"bootstrap": [{"host": "a b", "port": 1, "public_key": PK.hex()}]},
            "bootstrap[0].host: expected a host name or IP address, got 'a b'",
        ),
        (
            {"bootstrap": [{"host": "h", "port": 1, "public_key": PK.hex()[:-1]}]},
            "bootstrap[0].public_key: expected 64 hex characters",
        ),
        (
            {"bootstrap": [{"host": "h", "port": 1, "public_key": "g" * 64}]},
            "bootstrap[0].public_key: expected 64 hex characters",
        ),
        (
            {"bootstrap": [{"host": "h", "port": 1, "public_key": PK.hex(), "tcp_ports": [1, 0]}]},
            "bootstrap[0].tcp_ports[1]: expected an integer 1-65535, got 0",
        ),
        (
            {"bootstrap": [{"host": "h", "port": 1, "public_key": PK.hex(), "tpc_ports": []}]},
            "bootstrap[0].tpc_ports: unknown key",
        ),
        (
            {"tcp_relays": [{"host": "h", "port": 1, "public_key": PK.hex(), "tcp_ports": []}]},
            "tcp_relays[0].tcp_ports: unknown key",
        ),
        ({"friends": [{"name": "x"}]}, "friends[0].public_key: required key is missing"),
        (
            {"friends": [{"public_key": PK.hex()}] * 2 + [{"public_key": "ab"}]},
            "friends[2].public_key: expected 64 hex characters (public key) or 76 (Tox ID)",
        ),
        (
            {"friends": [{"public_key": FRIEND_ID[:-1] + ("0" if FRIEND_ID[-1] != "0" else "1")}]},
            "friends[0].public_key: Tox ID checksum does not match",
        ),
        (
            {"friends": [{"public_key": "00" * 31 + "80"}]},
            "friends[0].public_key: not a valid public key",
        ),
        ({"friends": [{"public_key": PK.hex(), "name": 3}]}, "friends[0].name: expected a string"),
        ({"role": "client"}, "role: expected one of node, bootstrapd, got 'client'"),
        (["a"], "top level: expected a mapping of keys to values, got ['a']"),
        ({"role": "bootstrapd", "udp": {}}, "udp: unknown key"),
        ({"role": "bootstrapd", "motd": "x" * 257}, "motd: expected at most 256 bytes of UTF-8"),
        ({"role": "bootstrapd", "motd": "é" * 129}, "motd: expected at most 256 bytes"),
        ({"role": "bootstrapd", "tcp_relay_ports": 5}, "tcp_relay_ports: expected a list, got 5"),
        ({"role": "bootstrapd", "onion": "no"}, "onion: expected true or false, got 'no'"),
        (
            {"role": "bootstrapd", "bootstrap_nodes": [{"host": "h", "port": 70000}]},
            "bootstrap_nodes[0].port: expected an integer 1-65535, got 70000",
        ),
    ],
)
def test_error_names_key_path(mapping: object, message: str) -> None:
    assert error_of(mapping).startswith(message)


def test_role_mismatch_for_specific_parsers() -> None:
    assert error_of({"role": "bootstrapd"}, parse_node_config) == (
        "role: expected 'node' here, got 'bootstrapd'"
    )
    assert error_of({"role": "node"}, parse_bootstrapd_config) == (
        "role: expected 'bootstrapd' here, got 'node'"
    )


def test_motd_at_limit_is_fine() -> None:
    assert len(parse_bootstrapd_config({"motd": "é" * 128}).motd.encode()) == 256


# --- files ------------------------------------------------------------------------------------


def file_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read config file: No such file or directory" in file_error(tmp_path / "nope")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    assert "cannot read config file" in file_error(tmp_path)


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("udp:\n  enabled: true\n   ipv6: [\n")
    assert "YAML syntax error at line" in file_error(path)
    path.write_text("key: !!python/object:os.system 'echo hi'\n")
    assert "YAML syntax error" in file_error(path)
    path.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in file_error(path)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("udp:\n  port_start: 46000\n  port_start: 46001\n")
    assert file_error(path).endswith("line 3, column 3: duplicate key 'port_start'")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == parse_node_config({})


# --- the toolkit --------------------------------------------------------------------------------


def test_section_toolkit() -> None:
    section = Section({"a": 5, "b": None, "c": [1, 2], "n": {"x": True}}, "top")
    assert section.get_int("a", min_value=0, max_value=9) == 5
    assert section.get_int("b", 7, min_value=0, max_value=9) == 7  # null means default
    assert section.get_port_list("c") == (1, 2)
    nested = section.get_section("n")
    assert nested.get_bool("x") is True
    nested.finish()
    section.finish()
    with pytest.raises(ConfigError, match=r"^top.z: required key is missing$"):
        section.get_str("z")
    with pytest.raises(ConfigError, match=r"^top.extra: unknown key$"):
        Section({"extra": 1}, "top").finish()


@given(
    st.builds(
        NodeConfig,
        profile=st.just(Path("/tmp/p.tox")),
        control_socket=st.just(Path("/tmp/c.sock")),
        log_level=st.sampled_from(["debug", "info", "warning", "error"]),
        udp=st.integers(1, 65535).flatmap(
            lambda start: st.builds(
                UdpConfig, st.booleans(), st.booleans(), st.just(start), st.integers(start, 65535)
            )
        ),
        lan_discovery=st.booleans(),
        hole_punching=st.booleans(),
        proxy=st.none()
        | st.builds(
            ProxyConfig,
            st.sampled_from(["socks5", "http"]),
            st.sampled_from(["127.0.0.1", "::1", "proxy.example"]),
            st.integers(1, 65535),
            st.none() | st.text(max_size=8),
        ),
        bootstrap=st.lists(
            st.builds(
                BootstrapNode,
                st.just("10.0.0.1"),
                st.integers(1, 65535),
                st.binary(min_size=32, max_size=32),
                st.lists(st.integers(1, 65535), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
        friends=st.lists(
            st.builds(
                FriendConfig,
                st.binary(min_size=32, max_size=32).map(lambda k: k[:31] + bytes((k[31] & 0x7F,))),
                st.text(max_size=20),
            ),
            max_size=3,
        ).map(tuple),
    )
)
def test_dump_then_parse_is_identity(cfg: NodeConfig) -> None:
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg
