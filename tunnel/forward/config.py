"""``tunnel serve`` configuration (``configs/serve.yaml``): who may connect and what they reach.

Layout (every key optional; errors name the key path, e.g. ``rules[2]: ...``)::

    node: {...}               the Tox node, the keys of configs/node.yaml (profile, udp, ...)
    auth:
      secret: TEXT            shared secret expected in the friend request (tuntox -s)
      secret_file: PATH       or read it from a file (first line)
      allowed_clients: [ID]   public keys / Tox IDs allowed (tuntox -i); absent = anyone
    rules: [host:port, ...]   what friends may reach; absent = everything, a list = only these
    rules_file: PATH          more rules, one per line (tuntox -f format, extended)
    connect_timeout_s: 15     resolve + connect budget per tunnel
    allow_udp: true           accept -U UDP forwarding requests
    legacy_refusal: ack_fin   how plain tuntox clients learn of a refusal ("silent" = tuntox)
    window_kib: 1024          per-tunnel receive window offered to our clients

Reading ``secret_file`` and ``rules_file`` is left to the command (this module does no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunnel.config import NodeConfig, parse_node_config
from tunnel.config_toolkit import Missing, Section, check_friend_key, check_str
from tunnel.errors import ConfigError
from tunnel.forward.auth import MAX_SECRET_BYTES
from tunnel.forward.rules import parse_rule
from tunnel.forward.server_mux import CONNECT_TIMEOUT_S
from tunnel.forward.state import DEFAULT_WINDOW_BYTES

LEGACY_REFUSALS = ("ack_fin", "silent")
MAX_CONNECT_TIMEOUT_S = 600
MAX_WINDOW_KIB = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A parsed ``serve.yaml``."""

    node: NodeConfig
    secret: bytes | None = None
    secret_file: Path | None = None
    allowed_clients: tuple[bytes, ...] | None = None
    rules: tuple[str, ...] | None = None
    rules_file: Path | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    allow_udp: bool = True
    legacy_refusal: str = "ack_fin"
    window_bytes: int = DEFAULT_WINDOW_BYTES


def _parse_auth(section: Section) -> tuple[bytes | None, Path | None, tuple[bytes, ...] | None]:
    secret_value = section.raw("secret")
    secret = None
    if not isinstance(secret_value, Missing):
        text = check_str(
            secret_value, section.key_path("secret"), max_bytes=MAX_SECRET_BYTES, allow_empty=False
        )
        if "\0" in text:
            raise ConfigError(f"{section.key_path('secret')}: must not contain NUL characters")
        secret = text.encode("utf-8")
    secret_file = None
    if not isinstance(section.raw("secret_file"), Missing):
        if secret is not None:
            raise ConfigError(f"{section.key_path('secret_file')}: give secret or secret_file")
        secret_file = section.get_path("secret_file")
    allowed: tuple[bytes, ...] | None = None
    if not isinstance(section.raw("allowed_clients"), Missing):
        allowed = tuple(
            check_friend_key(value, path) for path, value in section.get_list("allowed_clients")
        )
    section.finish()
    return secret, secret_file, allowed


def parse_serve_config(mapping: object, base_dir: Path | None = None) -> ServeConfig:
    """A :class:`ServeConfig` from parsed YAML (``None``: all defaults).

    Raises:
        ConfigError: the first invalid or unknown key, naming it.
    """
    top = Section(mapping, "", base_dir)
    top.get_choice("role", ("serve",), "serve")
    node_value = top.raw("node")
    try:
        node = parse_node_config(None if isinstance(node_value, Missing) else node_value, base_dir)
    except ConfigError as exc:
        raise ConfigError(f"node.{exc}") from None
    secret, secret_file, allowed = _parse_auth(top.get_section("auth"))
    rules: tuple[str, ...] | None = None
    if not isinstance(top.raw("rules"), Missing):
        items: list[str] = []
        for path, value in top.get_list("rules"):
            text = check_str(value, path, allow_empty=False)
            try:
                parse_rule(text)
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            items.append(text)
        rules = tuple(items)
    rules_file = None
    if not isinstance(top.raw("rules_file"), Missing):
        rules_file = top.get_path("rules_file")
    config = ServeConfig(
        node=node,
        secret=secret,
        secret_file=secret_file,
        allowed_clients=allowed,
        rules=rules,
        rules_file=rules_file,
        connect_timeout_s=float(
            top.get_int(
                "connect_timeout_s",
                int(CONNECT_TIMEOUT_S),
                min_value=1,
                max_value=MAX_CONNECT_TIMEOUT_S,
            )
        ),
        allow_udp=top.get_bool("allow_udp", True),
        legacy_refusal=top.get_choice("legacy_refusal", LEGACY_REFUSALS, "ack_fin"),
        window_bytes=1024
        * top.get_int(
            "window_kib", DEFAULT_WINDOW_BYTES // 1024, min_value=16, max_value=MAX_WINDOW_KIB
        ),
    )
    top.finish()
    return config
