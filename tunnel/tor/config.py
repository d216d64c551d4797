"""The ``tor:`` section of a node config file, and the ``--tor`` flag (issue 10, Tor mode).

::

    tor:
      socks: 127.0.0.1:9050          # required: Tor's SocksPort
      control: 127.0.0.1:9051        # optional: bootstrap checks (and onion services)
      cookie: /run/tor/control.authcookie   # or password: ...
      bootstrap_wait_s: 30           # Tor gets this long to reach 100 % before an error
      connect_timeout_s: 30          # bound on one relay connection through Tor
      check_interval_s: 5            # how often a running node checks Tor is still usable
      isolate: true                  # our relay streams get their own Tor circuits
      onion_service: false           # publish our relay for friends as an onion service
      onion_key: onion.key           # its persistent key (default: beside the profile)
      onion_port: 443                # the onion service's virtual port
      only: false                    # Tor-only: no DHT, no bootstrap nodes, friends by .onion
      friends:                       # friends' onion relays (Tor-only needs them)
        - id: <Tox ID or public key>
          onion: <56 characters>.onion   # optional :PORT (default 443)

``--tor`` alone means ``tor: {socks: 127.0.0.1:9050, control: 127.0.0.1:9051}`` (Tor's usual
ports; cookie authentication as Tor's PROTOCOLINFO says); ``--tor HOST:PORT`` names the SOCKS
port (no control port unless ``--tor-control HOST:PORT``; ``--tor-control off`` drops it).

In Tor mode UDP is off and every relay connection goes through Tor's SOCKS port (see
:mod:`tunnel.io.tor_node`). With ``only: true`` the node uses no bootstrap node, no DHT and no
public relay: a friend is its Tox ID plus its .onion, reached on the friend's onion relay.
Pure parsing: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tunnel.config_toolkit import Missing, Section, check_friend_key, check_path
from tunnel.errors import ConfigError
from tunnel.tor.check import BOOTSTRAP_WAIT_S, CONNECT_TIMEOUT_S, TorEndpoints
from tunnel.tor.protocol import split_onion_address

DEFAULT_SOCKS = "127.0.0.1:9050"
DEFAULT_CONTROL = "127.0.0.1:9051"
CHECK_INTERVAL_S = 5.0
"""Default pause between a running node's "is Tor still usable" checks."""
MAX_WAIT_S = 3600
DEFAULT_ONION_PORT = 443


@dataclass(frozen=True, slots=True)
class TorFriend:
    """A friend's onion relay: its long-term public key and ``<id>.onion:port``."""

    public_key: bytes
    onion: str
    """``<56 characters>.onion`` (lower case)."""
    port: int = DEFAULT_ONION_PORT

    @classmethod
    def parse(cls, data: object, path: str) -> TorFriend:
        """``{id: <Tox ID or key>, onion: <id>.onion[:port]}``.

        Raises:
            ConfigError: naming the key.
        """
        section = Section(data, path)
        public_key = check_friend_key(section.raw("id"), section.key_path("id"))
        onion, port = parse_onion_target(section.raw("onion"), section.key_path("onion"))
        section.finish()
        return cls(public_key, onion, port)


def parse_onion_target(value: object, path: str) -> tuple[str, int]:
    """``<56 characters>.onion`` or ``<...>.onion:PORT`` -> (address, port).

    Raises:
        ConfigError: naming ``path``.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected <56 characters>.onion[:PORT]")
    host, sep, port_text = value.strip().partition(":")
    port = DEFAULT_ONION_PORT
    if sep:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ConfigError(f"{path}: bad port {port_text!r} (1-65535)")
        port = int(port_text)
    service_id = split_onion_address(host)
    if service_id is None:
        raise ConfigError(f"{path}: not a v3 onion address: {host!r}")
    return f"{service_id}.onion", port


@dataclass(frozen=True, slots=True)
class TorConfig:
    """Tor mode settings (see the module docstring for the YAML form)."""

    socks: str = DEFAULT_SOCKS
    control: str | None = None
    control_password: str | None = None
    cookie: Path | None = None
    bootstrap_wait_s: float = BOOTSTRAP_WAIT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    check_interval_s: float = CHECK_INTERVAL_S
    isolate: bool = True
    onion_service: bool = False
    onion_key: Path | None = None
    onion_port: int = DEFAULT_ONION_PORT
    only: bool = False
    """Tor-only mode: no DHT, no bootstrap nodes or public relays; friends by .onion."""
    friends: tuple[TorFriend, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """The normalised YAML mapping that :meth:`parse` turns back into this config."""
        out: dict[str, object] = {"socks": self.socks}
        if self.control is not None:
            out["control"] = self.control
        if self.control_password is not None:
            out["password"] = self.control_password
        if self.cookie is not None:
            out["cookie"] = str(self.cookie)
        out.update(
            bootstrap_wait_s=int(self.bootstrap_wait_s),
            connect_timeout_s=int(self.connect_timeout_s),
            check_interval_s=int(self.check_interval_s),
            isolate=self.isolate,
            onion_service=self.onion_service,
        )
        if self.onion_key is not None:
            out["onion_key"] = str(self.onion_key)
        out["onion_port"] = self.onion_port
        out["only"] = self.only
        out["friends"] = [
            {"id": f.public_key.hex().upper(), "onion": f"{f.onion}:{f.port}"} for f in self.friends
        ]
        return out

    def endpoints(self) -> TorEndpoints:
        """Where Tor listens.

        Raises:
            ConfigError: ``socks`` or ``control`` is not ``host:port``.
        """
        return TorEndpoints.parse(
            self.socks,
            self.control,
            control_password=self.control_password,
            cookie_path=str(self.cookie) if self.cookie is not None else None,
        )

    @classmethod
    def from_flag(
        cls, value: str | None, control: str | None = None, *, base: TorConfig | None = None
    ) -> TorConfig:
        """``--tor`` (``None`` or ``""``: the usual ports, SOCKS 127.0.0.1:9050 and control
        127.0.0.1:9051) or ``--tor HOST:PORT`` (that SOCKS port, no control port), then
        ``--tor-control HOST:PORT`` (or ``off``) on top. ``base`` (the config file's ``tor:``)
        keeps its other settings.

        Raises:
            ConfigError: naming the flag.
        """
        start = base if base is not None else cls()
        if value:
            config = replace(start, socks=value, control=None if base is None else start.control)
        elif base is not None:
            config = start
        else:
            config = replace(start, socks=DEFAULT_SOCKS, control=DEFAULT_CONTROL)
        if control is not None:
            off = control.strip().lower() in ("", "off", "none")
            config = replace(config, control=None if off else control)
        try:
            config.endpoints()
        except ConfigError as exc:
            text = str(exc)
            flag = "--tor-control" if text.startswith("tor.control") else "--tor"
            text = text.replace("tor.socks: ", "").replace("tor.control: ", "")
            raise ConfigError(f"{flag}: {text}") from exc
        if config.onion_service and config.control is None:
            raise ConfigError("--tor-control off: tor.onion_service needs the control port")
        return config

    @classmethod
    def parse(cls, data: object, *, path: str = "tor", base_dir: Path | None = None) -> TorConfig:
        """From the parsed YAML of the ``tor:`` section.

        Raises:
            ConfigError: naming the key, e.g. ``tor.socks: required key is missing``.
        """
        section = Section(data, path, base_dir)
        socks = section.get_str("socks", allow_empty=False)
        control = section.get_str("control", "", allow_empty=True) or None
        password = section.get_str("password", "", allow_empty=True) or None
        cookie_raw = section.raw("cookie")
        cookie = (
            None
            if isinstance(cookie_raw, Missing)
            else check_path(cookie_raw, section.key_path("cookie"), base_dir)
        )
        bootstrap_wait_s = section.get_int(
            "bootstrap_wait_s", int(BOOTSTRAP_WAIT_S), min_value=0, max_value=MAX_WAIT_S
        )
        connect_timeout_s = section.get_int(
            "connect_timeout_s", int(CONNECT_TIMEOUT_S), min_value=1, max_value=MAX_WAIT_S
        )
        check_interval_s = section.get_int(
            "check_interval_s", int(CHECK_INTERVAL_S), min_value=1, max_value=MAX_WAIT_S
        )
        isolate = section.get_bool("isolate", True)
        onion_service = section.get_bool("onion_service", False)
        key_raw = section.raw("onion_key")
        onion_key = (
            None
            if isinstance(key_raw, Missing)
            else check_path(key_raw, section.key_path("onion_key"), base_dir)
        )
        onion_port = section.get_port("onion_port", DEFAULT_ONION_PORT)
        only = section.get_bool("only", False)
        friends = tuple(TorFriend.parse(item, key) for key, item in section.get_list("friends"))
        section.finish()
        if onion_service and control is None:
            raise ConfigError(f"{path}.onion_service: needs {path}.control (Tor's control port)")
        config = cls(
            socks=socks,
            control=control,
            control_password=password,
            cookie=cookie,
            bootstrap_wait_s=float(bootstrap_wait_s),
            connect_timeout_s=float(connect_timeout_s),
            check_interval_s=float(check_interval_s),
            isolate=isolate,
            onion_service=onion_service,
            onion_key=onion_key,
            onion_port=onion_port,
            only=only,
            friends=friends,
        )
        try:
            config.endpoints()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("tor.", f"{path}.", 1)) from exc
        if password is not None and cookie is not None:
            raise ConfigError(f"{path}: give either password or cookie, not both")
        return config


__all__ = [
    "CHECK_INTERVAL_S",
    "DEFAULT_CONTROL",
    "DEFAULT_SOCKS",
    "TorConfig",
    "TorFriend",
    "parse_onion_target",
]
