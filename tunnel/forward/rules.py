"""What a forwarding server lets its friends reach (tuntox ``-f`` rules, extended).

tuntox (tuntox-toxvpn.md 1.4 "Rules file"): one ``host:port`` per line, ``#`` comments and
empty lines ignored, ``*`` = any host, host compared as an exact string, and once a rules file
is given everything not listed is refused. tuntox's loader rejects port 0 and 65535 although
its matcher treats 0 as "any port"; here ``0`` and ``*`` both mean any port and 65535 works.

Extensions (all still default-deny once any rule is given)::

    host:22                 exact host name (case-insensitive, trailing dot ignored)
    *:443                   any host
    *.example.com:80        any subdomain of example.com (not example.com itself)
    10.0.0.0/8:22           IP literals inside a network; host NAMES only via resolution
    [2001:db8::/32]:8000-8100   bracketed IPv6 (plain, or with prefix), port range
    host:53/udp             applies to UDP forwarding only (``/tcp`` the default, ``/any`` both)

A requested host name matches name rules directly. If only network rules match its port, the
request is allowed *restricted*: the driver must connect only to resolved addresses inside
those networks (:class:`Decision.restrict_to`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from tunnel.errors import ConfigError

MAX_HOST_NAME_BYTES = 253
IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
_PROTOCOLS = {
    "tcp": frozenset({"tcp"}),
    "udp": frozenset({"udp"}),
    "any": frozenset({"tcp", "udp"}),
}


@dataclass(frozen=True, slots=True)
class Rule:
    """One allow rule. Exactly one of ``name``/``suffix``/``network`` is set, or none (any)."""

    port_low: int
    port_high: int
    name: str | None = None
    suffix: str | None = None
    network: IPNetwork | None = None
    protocols: frozenset[str] = frozenset({"tcp"})

    def port_matches(self, port: int, protocol: str) -> bool:
        return protocol in self.protocols and self.port_low <= port <= self.port_high

    @property
    def any_host(self) -> bool:
        return self.name is None and self.suffix is None and self.network is None


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of :meth:`RuleSet.evaluate`."""

    allowed: bool
    restrict_to: tuple[IPNetwork, ...] | None = None


def normalise_host(host: str) -> str:
    """Lower-case, without a trailing dot or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.endswith(".") and host != ".":
        host = host[:-1]
    return host


def ip_literal(host: str) -> IPAddress | None:
    """The address if ``host`` (normalised) is an IP literal, else ``None``."""
    try:
        addr = ipaddress.ip_address(normalise_host(host))
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def validate_request_host(raw: bytes) -> str | None:
    """The host of a tunnel request as text, or ``None`` if it is not a plausible host.

    tuntox copies the host with ``strncpy`` (it stops at a NUL); we refuse NULs, control
    characters, spaces and over-long names instead of guessing.
    """
    if not raw or len(raw) > MAX_HOST_NAME_BYTES + 2:
        return None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if any(ch <= " " or ch == "\x7f" for ch in text):
        return None
    host = normalise_host(text)
    if not host or len(host) > MAX_HOST_NAME_BYTES:
        return None
    if ip_literal(host) is None and (":" in host or "/" in host or host.startswith("-")):
        return None
    return host


def _parse_ports(text: str, line: str) -> tuple[int, int]:
    if text in ("*", "0"):
        return 1, 65535
    low_text, sep, high_text = text.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if sep else low
    except ValueError:
        raise ConfigError(f"rule {line!r}: bad port {text!r}") from None
    if not 1 <= low <= high <= 65535:
        raise ConfigError(f"rule {line!r}: port range {text!r} outside 1-65535")
    return low, high


def parse_rule(line: str) -> Rule:
    """Parse one rule (syntax in the module docstring).

    Raises:
        ConfigError: unparsable rule, naming it.
    """
    text = line.strip().replace("@", ":")  # tuntox accepts '@' for ':' everywhere
    protocols = _PROTOCOLS["tcp"]
    head, slash, proto = text.rpartition("/")
    if slash and proto.lower() in _PROTOCOLS:
        protocols = _PROTOCOLS[proto.lower()]
        text = head
    host_text, colon, port_text = text.rpartition(":")
    if not colon or not host_text:
        raise ConfigError(f"rule {line!r}: expected host:port")
    low, high = _parse_ports(port_text.strip(), line)
    host_text = host_text.strip()
    if host_text.startswith("["):
        if not host_text.endswith("]"):
            raise ConfigError(f"rule {line!r}: unterminated '['")
        host_text = host_text[1:-1]
    elif host_text.count(":") > 0:
        raise ConfigError(f"rule {line!r}: put IPv6 addresses in brackets")
    host = host_text.lower()
    if host == "*":
        return Rule(low, high, protocols=protocols)
    if host.startswith("*."):
        suffix = normalise_host(host[1:]) if host.endswith(".") else host[1:]
        if len(suffix) < 2:
            raise ConfigError(f"rule {line!r}: empty domain after '*.'")
        return Rule(low, high, suffix=suffix, protocols=protocols)
    if "/" in host or ip_literal(host) is not None:
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise ConfigError(f"rule {line!r}: bad network {host!r}") from None
        return Rule(low, high, network=network, protocols=protocols)
    name = normalise_host(host)
    if not name or "*" in name or validate_request_host(name.encode("ascii", "replace")) is None:
        raise ConfigError(f"rule {line!r}: bad host name {host!r}")
    return Rule(low, high, name=name, protocols=protocols)


def parse_rules_text(text: str) -> list[Rule]:
    """Parse a rules file: one rule per line; ``#`` comments and blank lines ignored.

    Raises:
        ConfigError: the first bad line, with its line number.
    """
    rules: list[Rule] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rules.append(parse_rule(line))
        except ConfigError as exc:
            raise ConfigError(f"line {number}: {exc}") from None
    return rules


class RuleSet:
    """Allow rules; ``RuleSet(None)`` allows everything (tuntox without ``-f``)."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self._rules: tuple[Rule, ...] | None = None if rules is None else tuple(rules)

    @classmethod
    def parse(cls, lines: Sequence[str]) -> RuleSet:
        """Rules from a list of rule strings (an empty list denies everything).

        Raises:
            ConfigError: a bad rule.
        """
        return cls(parse_rule(line) for line in lines)

    @property
    def restricted(self) -> bool:
        return self._rules is not None

    def evaluate(self, host: str, port: int, protocol: str = "tcp") -> Decision:
        """May a friend reach ``host:port`` over ``protocol`` ("tcp"/"udp")?"""
        if self._rules is None:
            return Decision(True)
        host = normalise_host(host)
        literal = ip_literal(host)
        networks: list[IPNetwork] = []
        for rule in self._rules:
            if not rule.port_matches(port, protocol):
                continue
            if rule.any_host:
                return Decision(True)
            if literal is not None:
                if rule.network is not None and literal in rule.network:
                    return Decision(True)
                if rule.name is not None and rule.name == host:
                    return Decision(True)
                continue
            if rule.name is not None and rule.name == host:
                return Decision(True)
            if rule.suffix is not None and host.endswith(rule.suffix):
                return Decision(True)
            if rule.network is not None:
                networks.append(rule.network)
        if networks:
            return Decision(True, tuple(networks))
        return Decision(False)


def address_allowed(address: str, restrict_to: tuple[IPNetwork, ...] | None) -> bool:
    """For drivers: may a resolved ``address`` be used under ``restrict_to``?"""
    if restrict_to is None:
        return True
    literal = ip_literal(address)
    return literal is not None and any(literal in network for network in restrict_to)
