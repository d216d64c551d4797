"""`tunnel serve` configuration (configs/serve.yaml, ServeConfig) and CLI errors that name the
flag or key at fault."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.cli import main
from tunnel.config import read_yaml_file
from tunnel.errors import ConfigError
from tunnel.forward.config import parse_serve_config
from tunnel.io.node_runner import parse_bootstrap

REPO = Path(__file__).resolve().parents[2]
SERVER_ID = "5DFEDD3B6BD47F6FA28EE15D969D5BB0EA53774D488BDAF9DF1C6E0124B3EF220BADF00D94C0"


def test_example_serve_yaml_parses() -> None:
    config = parse_serve_config(read_yaml_file(REPO / "configs/serve.yaml"), REPO / "configs")
    assert config.secret == b"change me to something long and random"
    assert config.allowed_clients is not None
    assert len(config.allowed_clients) == 1
    assert config.rules is not None
    assert "127.0.0.1:22" in config.rules
    assert config.connect_timeout_s == 15.0
    assert config.window_bytes == 1024 * 1024
    assert config.node.bootstrap[0].port == 33445


def test_defaults() -> None:
    config = parse_serve_config(None)
    assert config.secret is None
    assert config.allowed_clients is None
    assert config.rules is None  # everything allowed
    assert config.allow_udp


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"rules": ["127.0.0.1:22", "nonsense"]}, "rules[1]"),
        ({"rules": "127.0.0.1:22"}, "rules"),
        ({"auth": {"secret": ""}}, "auth.secret"),
        ({"auth": {"secret": "x", "secret_file": "f"}}, "auth.secret_file"),
        ({"auth": {"allowed_clients": ["abc"]}}, "auth.allowed_clients[0]"),
        ({"auth": {"password": "x"}}, "auth.password"),
        ({"node": {"udp": {"port_start": 0}}}, "node.udp.port_start"),
        ({"connect_timeout_s": 0}, "connect_timeout_s"),
        ({"legacy_refusal": "loud"}, "legacy_refusal"),
        ({"window_kib": 1}, "window_kib"),
        ({"listen": 1}, "listen"),
    ],
)
def test_errors_name_the_key(mapping: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_serve_config(mapping)
    assert str(info.value).startswith(key + ":")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["connect", SERVER_ID, "-L", "22:host"], "-L"),
        (["connect", SERVER_ID, "-L", "99999:host:22"], "-L"),
        (["connect", SERVER_ID, "-U", "53:host"], "-U"),
        (["connect", SERVER_ID, "-W", "host"], "-W"),
        (["connect", SERVER_ID, "-D", "a:b:c"], "-D"),
        (["connect", SERVER_ID], "nothing to do"),
        (["connect", SERVER_ID, "-W", "h:22", "-L", "1:h:2"], "-W"),
        (["connect", "1234", "-p"], "ID"),
        (["connect", SERVER_ID, "-p", "--bootstrap", "1.2.3.4:1"], "--bootstrap"),
        (["connect", SERVER_ID, "-p", "--udp-port", "9-1"], "--udp-port"),
        (["serve", "--rule", "bad rule"], "--rule"),
        (["serve", "-i", "abcd"], "-i"),
    ],
)
def test_cli_errors_name_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert flag in err
    assert err.startswith(f"tunnel {argv[0]}: error:")


def test_parse_bootstrap() -> None:
    key = "AB" * 32
    (node,) = parse_bootstrap(f"127.0.0.1:33445:{key}:3389")
    assert (node.host, node.port, node.public_key, node.tcp_ports) == (
        "127.0.0.1",
        33445,
        bytes.fromhex(key),
        (3389,),
    )
    (node6,) = parse_bootstrap(f"[::1]:5000:{key}")
    assert (node6.host, node6.port, node6.tcp_ports) == ("::1", 5000, ())
