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

``--tor`` alone means ``tor: {socks: 127.0.0.1:9050}``; ``--tor HOST:PORT`` names the SOCKS
port. In Tor mode UDP is off and every relay connection goes through Tor's SOCKS port (see
:mod:`tunnel.io.tor_node`). Pure parsing: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunnel.config_toolkit import Missing, Section, check_path
from tunnel.errors import ConfigError
from tunnel.tor.check import BOOTSTRAP_WAIT_S, CONNECT_TIMEOUT_S, TorEndpoints

DEFAULT_SOCKS = "127.0.0.1:9050"
CHECK_INTERVAL_S = 5.0
"""Default pause between a running node's "is Tor still usable" checks."""
MAX_WAIT_S = 3600
DEFAULT_ONION_PORT = 443


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
    def from_flag(cls, value: str | None) -> TorConfig:
        """``--tor`` (``None`` or ``""``: the default SOCKS port) or ``--tor HOST:PORT``.

        Raises:
            ConfigError: not ``host:port``.
        """
        config = cls(socks=value or DEFAULT_SOCKS)
        try:
            config.endpoints()
        except ConfigError as exc:
            raise ConfigError(f"--tor: {exc}".replace("tor.socks: ", "")) from exc
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
        )
        try:
            config.endpoints()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("tor.", f"{path}.", 1)) from exc
        if password is not None and cookie is not None:
            raise ConfigError(f"{path}: give either password or cookie, not both")
        return config


__all__ = ["CHECK_INTERVAL_S", "DEFAULT_SOCKS", "TorConfig"]
