"""YAML configuration: the ``node`` and ``bootstrapd`` roles.

Files are parsed with ``yaml.safe_load`` into frozen dataclasses. Every problem is a
:class:`~tunnel.errors.ConfigError` whose message starts with the key path, e.g.
``friends[2].public_key: expected 64 hex characters`` or ``udp.prot: unknown key``; a file that
cannot be read or is not YAML gives one line naming the file.

Validation uses :mod:`tunnel.config_toolkit` (re-exported here): :class:`Section` and the
``check_*`` functions, meant for later roles too.

Relative paths in a file are resolved against the file's directory; ``~`` is expanded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

import yaml

from tunnel.config_toolkit import (
    MISSING,
    PUBLIC_KEY_HEX_LENGTH,
    Missing,
    Section,
    check_bool,
    check_choice,
    check_friend_key,
    check_hex_key,
    check_host,
    check_int,
    check_list,
    check_path,
    check_port,
    check_str,
    describe,
    join_path,
)
from tunnel.errors import ConfigError
from tunnel.tor.config import TorConfig

__all__ = [
    "MISSING",
    "PUBLIC_KEY_HEX_LENGTH",
    "BootstrapNode",
    "BootstrapdConfig",
    "Config",
    "FriendConfig",
    "Missing",
    "NodeConfig",
    "ProxyConfig",
    "Section",
    "TcpRelayConfig",
    "UdpConfig",
    "check_bool",
    "check_choice",
    "check_friend_key",
    "check_hex_key",
    "check_host",
    "check_int",
    "check_list",
    "check_path",
    "check_port",
    "check_str",
    "config_dir",
    "config_to_dict",
    "default_bootstrapd_keys_path",
    "default_control_socket_path",
    "default_profile_path",
    "describe",
    "dump_config",
    "join_path",
    "load_bootstrapd_config",
    "load_config",
    "load_node_config",
    "parse_bootstrapd_config",
    "parse_config",
    "parse_node_config",
    "parse_proxy_url",
    "read_yaml_file",
]

DEFAULT_UDP_PORT_START = 33445
"""toxcore's default UDP port range (``TOX_PORTRANGE_FROM``..``TOX_PORTRANGE_TO``)."""
DEFAULT_UDP_PORT_END = 33545
DEFAULT_BOOTSTRAPD_PORT = 33445
DEFAULT_BOOTSTRAPD_TCP_RELAY_PORTS: tuple[int, ...] = (33445,)
DEFAULT_BOOTSTRAPD_MOTD = "tunnel bootstrapd"
MAX_MOTD_LENGTH_BYTES = 256
"""toxcore ``MAX_MOTD_LENGTH`` (bootstrap info, 0xF0)."""
MAX_FRIEND_NAME_LENGTH_BYTES = 128
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "info"
ROLES = ("node", "bootstrapd")

ProxyKind = Literal["socks5", "http"]
PROXY_KINDS: tuple[ProxyKind, ...] = ("socks5", "http")
PROXY_SCHEMES: dict[str, ProxyKind] = {"socks5": "socks5", "socks5h": "socks5", "http": "http"}
DEFAULT_PROXY_PORTS: dict[ProxyKind, int] = {"socks5": 1080, "http": 8080}


# --- default locations ------------------------------------------------------------------------


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/tunnel`` (default ``~/.config/tunnel``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".config"
    return root / "tunnel"


def default_profile_path() -> Path:
    """Where the identity lives unless configured: ``<config dir>/profile.tox``."""
    return config_dir() / "profile.tox"


def default_control_socket_path() -> Path:
    """``$XDG_RUNTIME_DIR/tunnel/control.sock``, else ``<config dir>/control.sock``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    if os.path.isabs(runtime):
        return Path(runtime) / "tunnel" / "control.sock"
    return config_dir() / "control.sock"


def default_bootstrapd_keys_path() -> Path:
    """``<config dir>/bootstrapd.keys``."""
    return config_dir() / "bootstrapd.keys"


# --- the data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BootstrapNode:
    """A DHT node to bootstrap from; ``tcp_ports`` are its TCP relay ports (may be empty)."""

    host: str
    port: int
    public_key: bytes
    tcp_ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TcpRelayConfig:
    """A TCP relay to connect to."""

    host: str
    port: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """An outgoing proxy for TCP connections (``socks5://user:pass@host:port``).

    The one proxy type of the package: config files, ``--proxy`` and the Trio connector
    (:mod:`tunnel.io.proxy`) all use it.
    """

    kind: ProxyKind
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> ProxyConfig:
        """From ``socks5://[user:pass@]host[:port]`` or ``http://[user:pass@]host[:port]``.

        Raises:
            ConfigError: unknown scheme, missing host, a bad port, or a path.
        """
        return parse_proxy_url(url, "proxy")

    def url(self) -> str:
        """The URL form, as written in config files (with credentials, if any)."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{auth}{host}:{self.port}"

    def __str__(self) -> str:
        """The URL without the password (safe to log)."""
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{user}{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class FriendConfig:
    """A friend: long-term public key and a local name."""

    public_key: bytes
    name: str = ""


@dataclass(frozen=True, slots=True)
class UdpConfig:
    """The UDP socket: ``port_start..port_end`` are tried in order, as toxcore does."""

    enabled: bool = True
    ipv6: bool = True
    port_start: int = DEFAULT_UDP_PORT_START
    port_end: int = DEFAULT_UDP_PORT_END


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``role: node`` (the default): one Tox identity on the network."""

    profile: Path
    control_socket: Path
    log_level: str = DEFAULT_LOG_LEVEL
    udp: UdpConfig = UdpConfig()
    lan_discovery: bool = False
    hole_punching: bool = True
    proxy: ProxyConfig | None = None
    bootstrap: tuple[BootstrapNode, ...] = ()
    tcp_relays: tuple[TcpRelayConfig, ...] = ()
    friends: tuple[FriendConfig, ...] = ()
    tor: TorConfig | None = None
    """Tor mode (``tor:`` section, :mod:`tunnel.tor.config`); None: not over Tor."""


@dataclass(frozen=True, slots=True)
class BootstrapdConfig:
    """``role: bootstrapd``: a DHT bootstrap node with optional TCP relay, like tox-bootstrapd."""

    keys_file: Path
    """64 bytes ``public key || secret key``, as tox-bootstrapd's keys file."""
    port: int = DEFAULT_BOOTSTRAPD_PORT
    ipv6: bool = True
    motd: str = DEFAULT_BOOTSTRAPD_MOTD
    bootstrap_nodes: tuple[BootstrapNode, ...] = ()
    tcp_relay_ports: tuple[int, ...] = DEFAULT_BOOTSTRAPD_TCP_RELAY_PORTS
    lan_discovery: bool = False
    onion: bool = True
    log_level: str = DEFAULT_LOG_LEVEL


Config = NodeConfig | BootstrapdConfig


# --- parsing ----------------------------------------------------------------------------------


def parse_proxy_url(value: object, path: str) -> ProxyConfig:
    """``socks5://[user[:password]@]host[:port]`` or ``http://[user[:password]@]host[:port]``.

    The port defaults to 1080 (SOCKS5) or 8080 (HTTP), as curl's does.
    """
    expected = f"{path}: expected a URL like socks5://[user:pass@]host:port or http://host:port"
    if not isinstance(value, str):
        raise ConfigError(f"{expected}, got {describe(value)}")
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{expected}, got {describe(value)} ({exc})") from exc
    kind = PROXY_SCHEMES.get(parts.scheme.lower())
    if kind is None:
        raise ConfigError(f"{expected}, got scheme {describe(parts.scheme)}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{expected}, got a path or query in {describe(value)}")
    if not parts.hostname or port == 0:
        raise ConfigError(f"{expected}, got no host or port in {describe(value)}")
    return ProxyConfig(
        kind=kind,
        host=check_host(parts.hostname, path),
        port=DEFAULT_PROXY_PORTS[kind] if port is None else port,
        username=None if parts.username is None else unquote(parts.username),
        password=None if parts.password is None else unquote(parts.password),
    )


def _parse_bootstrap_node(section: Section) -> BootstrapNode:
    node = BootstrapNode(
        host=section.get_host("host"),
        port=section.get_port("port"),
        public_key=section.get_hex_key("public_key"),
        tcp_ports=section.get_port_list("tcp_ports"),
    )
    section.finish()
    return node


def _parse_tcp_relay(section: Section) -> TcpRelayConfig:
    relay = TcpRelayConfig(
        host=section.get_host("host"),
        port=section.get_port("port"),
        public_key=section.get_hex_key("public_key"),
    )
    section.finish()
    return relay


def _parse_friend(section: Section) -> FriendConfig:
    key = section.raw("public_key")
    if isinstance(key, Missing):
        raise ConfigError(f"{section.key_path('public_key')}: required key is missing")
    friend = FriendConfig(
        public_key=check_friend_key(key, section.key_path("public_key")),
        name=section.get_str("name", "", max_bytes=MAX_FRIEND_NAME_LENGTH_BYTES),
    )
    section.finish()
    return friend


def _parse_udp(section: Section) -> UdpConfig:
    port_start = section.get_port("port_start", DEFAULT_UDP_PORT_START)
    default_end = (
        DEFAULT_UDP_PORT_END
        if port_start <= DEFAULT_UDP_PORT_END
        else min(port_start + DEFAULT_UDP_PORT_END - DEFAULT_UDP_PORT_START, 65535)
    )
    port_end = section.get_port("port_end", default_end)
    if port_end < port_start:
        raise ConfigError(
            f"{section.key_path('port_end')}: expected an integer {port_start}-65535 "
            f"(not below port_start), got {port_end}"
        )
    udp = UdpConfig(
        enabled=section.get_bool("enabled", True),
        ipv6=section.get_bool("ipv6", True),
        port_start=port_start,
        port_end=port_end,
    )
    section.finish()
    return udp


def _check_role(top: Section, expected: str) -> None:
    role = top.get_choice("role", ROLES, expected)
    if role != expected:
        raise ConfigError(f"role: expected {expected!r} here, got {role!r}")


def _top(mapping: object, base_dir: Path | None) -> Section:
    return Section(mapping, "", base_dir)


def parse_node_config(mapping: object, base_dir: Path | None = None) -> NodeConfig:
    """A :class:`NodeConfig` from parsed YAML (``None`` means all defaults).

    Raises:
        ConfigError: the first invalid or unknown key.
    """
    top = _top(mapping, base_dir)
    _check_role(top, "node")
    proxy_value = top.raw("proxy")
    tor_value = top.raw("tor")
    config = NodeConfig(
        profile=top.get_path("profile", default_profile_path()),
        control_socket=top.get_path("control_socket", default_control_socket_path()),
        log_level=top.get_choice("log_level", LOG_LEVELS, DEFAULT_LOG_LEVEL),
        udp=_parse_udp(top.get_section("udp")),
        lan_discovery=top.get_bool("lan_discovery", False),
        hole_punching=top.get_bool("hole_punching", True),
        proxy=None if isinstance(proxy_value, Missing) else parse_proxy_url(proxy_value, "proxy"),
        bootstrap=tuple(_parse_bootstrap_node(s) for s in top.get_sections("bootstrap")),
        tcp_relays=tuple(_parse_tcp_relay(s) for s in top.get_sections("tcp_relays")),
        friends=tuple(_parse_friend(s) for s in top.get_sections("friends")),
        tor=None
        if isinstance(tor_value, Missing) or tor_value is None
        else TorConfig.parse(tor_value, path="tor", base_dir=base_dir),
    )
    top.finish()
    return config


def parse_bootstrapd_config(mapping: object, base_dir: Path | None = None) -> BootstrapdConfig:
    """A :class:`BootstrapdConfig` from parsed YAML.

    Raises:
        ConfigError: the first invalid or unknown key.
    """
    top = _top(mapping, base_dir)
    _check_role(top, "bootstrapd")
    config = BootstrapdConfig(
        keys_file=top.get_path("keys_file", default_bootstrapd_keys_path()),
        port=top.get_port("port", DEFAULT_BOOTSTRAPD_PORT),
        ipv6=top.get_bool("ipv6", True),
        motd=top.get_str("motd", DEFAULT_BOOTSTRAPD_MOTD, max_bytes=MAX_MOTD_LENGTH_BYTES),
        bootstrap_nodes=tuple(
            _parse_bootstrap_node(s) for s in top.get_sections("bootstrap_nodes")
        ),
        tcp_relay_ports=top.get_port_list("tcp_relay_ports", DEFAULT_BOOTSTRAPD_TCP_RELAY_PORTS),
        lan_discovery=top.get_bool("lan_discovery", False),
        onion=top.get_bool("onion", True),
        log_level=top.get_choice("log_level", LOG_LEVELS, DEFAULT_LOG_LEVEL),
    )
    top.finish()
    return config


def parse_config(mapping: object, base_dir: Path | None = None) -> Config:
    """Either role, chosen by the top-level ``role:`` key (default ``node``)."""
    if isinstance(mapping, Mapping):
        role = mapping.get("role")
        if role is not None and check_choice(role, "role", ROLES) == "bootstrapd":
            return parse_bootstrapd_config(mapping, base_dir)
    return parse_node_config(mapping, base_dir)


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: SafeLoader reports it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml_file(path: str | os.PathLike[str]) -> object:
    """``yaml.safe_load`` of a file (duplicate keys rejected), with one-line errors naming it.

    Raises:
        ConfigError: unreadable, not UTF-8, or not YAML.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    try:
        return yaml.load(text, Loader=_StrictSafeLoader)  # a SafeLoader: safe_load semantics
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: YAML syntax error: {detail}") from exc


def _base_dir(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().absolute().parent


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load a config file of either role."""
    return parse_config(read_yaml_file(path), _base_dir(path))


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    """Load a ``role: node`` config file."""
    return parse_node_config(read_yaml_file(path), _base_dir(path))


def load_bootstrapd_config(path: str | os.PathLike[str]) -> BootstrapdConfig:
    """Load a ``role: bootstrapd`` config file."""
    return parse_bootstrapd_config(read_yaml_file(path), _base_dir(path))


# --- dumping ----------------------------------------------------------------------------------


def _node_dict(node: BootstrapNode) -> dict[str, object]:
    return {
        "host": node.host,
        "port": node.port,
        "public_key": node.public_key.hex().upper(),
        "tcp_ports": list(node.tcp_ports),
    }


def config_to_dict(cfg: Config) -> dict[str, object]:
    """The normalised mapping that :func:`parse_config` turns back into ``cfg``."""
    if isinstance(cfg, BootstrapdConfig):
        return {
            "role": "bootstrapd",
            "keys_file": str(cfg.keys_file),
            "port": cfg.port,
            "ipv6": cfg.ipv6,
            "motd": cfg.motd,
            "bootstrap_nodes": [_node_dict(n) for n in cfg.bootstrap_nodes],
            "tcp_relay_ports": list(cfg.tcp_relay_ports),
            "lan_discovery": cfg.lan_discovery,
            "onion": cfg.onion,
            "log_level": cfg.log_level,
        }
    return {
        "role": "node",
        "profile": str(cfg.profile),
        "control_socket": str(cfg.control_socket),
        "log_level": cfg.log_level,
        "udp": {
            "enabled": cfg.udp.enabled,
            "ipv6": cfg.udp.ipv6,
            "port_start": cfg.udp.port_start,
            "port_end": cfg.udp.port_end,
        },
        "lan_discovery": cfg.lan_discovery,
        "hole_punching": cfg.hole_punching,
        "proxy": None if cfg.proxy is None else cfg.proxy.url(),
        "bootstrap": [_node_dict(n) for n in cfg.bootstrap],
        "tcp_relays": [
            {"host": r.host, "port": r.port, "public_key": r.public_key.hex().upper()}
            for r in cfg.tcp_relays
        ],
        "friends": [
            {"public_key": f.public_key.hex().upper(), "name": f.name} for f in cfg.friends
        ],
        "tor": None if cfg.tor is None else cfg.tor.to_dict(),
    }


def dump_config(cfg: Config) -> str:
    """Normalised YAML (every key, defaults filled in, keys as hex) for ``check-config``."""
    # allow_unicode=False: YAML reads U+0085/U+2028/U+2029 as line breaks, so only escaped
    # text survives a dump/load round trip.
    return yaml.safe_dump(
        config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=False
    )
