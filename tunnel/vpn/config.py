"""The VPN network file (``tunnel vpn``, issue 9) and invites.

A network file (``configs/vpn.yaml`` documents every key) names the network, holds its secret
and address pools, says how this machine's TUN device looks, and optionally lists members
(with pinned addresses) and a member to join through. Parsed with the toolkit of
:mod:`tunnel.config_toolkit` into a frozen :class:`VpnConfig`; every problem is a
:class:`~tunnel.errors.ConfigError` naming the key.

An **invite** is one line a member hands to a new machine: ``tunnel-vpn:<Tox ID>:<secret>``
(76 + 64 hex characters). With it (key ``invite``) a network file needs nothing else: pools
and name are learned from the first member met (:mod:`tunnel.vpn.membership`).

The default TUN MTU is large (:data:`DEFAULT_MTU_BYTES`, 9000): safe because large packets
go to a member only after a probe of that size crossed the direct path to it
(:mod:`tunnel.io.vpn_large`); toxcore peers never announce an MTU and only ever get 1372.
"""

from __future__ import annotations

import binascii
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from tunnel.config import read_yaml_file
from tunnel.config_toolkit import Missing, Section, check_friend_key, check_str
from tunnel.crypto.databox import MAX_DATA_PAYLOAD_BYTES
from tunnel.errors import ConfigError
from tunnel.toxid import ToxId, ToxIdError
from tunnel.vpn.addressing import IPV6_MAX_PREFIX_LEN, IPV6_ULA
from tunnel.vpn.membership import SECRET_SIZE_BYTES, NetworkParams
from tunnel.wire.vpn import MAX_NAME_BYTES, MemberRecord

INVITE_PREFIX = "tunnel-vpn:"
DEFAULT_INTERFACE = "tunnel0"
MIN_MTU_BYTES = 576
MAX_MTU_BYTES = 65535
DEFAULT_MTU_BYTES = min(9000, MAX_DATA_PAYLOAD_BYTES - 1)
"""The TUN MTU unless configured: large packets between our own members (two that both
announce more than 1372 bytes use the smaller MTU), whole only over a direct UDP path that a
probe of that size crossed (:mod:`tunnel.vpn.pmtu`), else split into 1372-byte-sized VPN
fragments (:mod:`tunnel.vpn.fragments`); toxcore peers: 1372 always."""
MAX_IFNAME_LENGTH = 15
DEFAULT_BUSY_POLL_WINDOW_US = 0
"""How long the TUN pump keeps polling without blocking after it moved packets
(:class:`tunnel.io.tun.TunPump`); 0 turns busy polling off."""
MAX_BUSY_POLL_WINDOW_US = 100_000
MAX_KEEP_WARM_MS = 1000
DEFAULT_WARM_AHEAD_US = 1000
MAX_WARM_AHEAD_US = 100_000


@dataclass(frozen=True)
class Invite:
    """A member's Tox ID plus the network secret."""

    tox_id: ToxId
    secret: bytes

    def encode(self) -> str:
        """The one-line text form."""
        return f"{INVITE_PREFIX}{self.tox_id}:{self.secret.hex()}"

    @classmethod
    def parse(cls, text: str, path: str = "invite") -> Invite:
        """From the text form.

        Raises:
            ConfigError: not an invite, a bad Tox ID or a bad secret.
        """
        text = text.strip()
        if not text.startswith(INVITE_PREFIX) or text.count(":") != 2:
            raise ConfigError(f"{path}: expected tunnel-vpn:<Tox ID>:<secret>")
        _, id_text, secret_text = text.split(":")
        try:
            tox_id = ToxId.parse(id_text)
        except ToxIdError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        return cls(tox_id, _parse_secret(secret_text, path))


@dataclass(frozen=True)
class VpnMember:
    """A member listed in the file, optionally with pinned addresses."""

    public_key: bytes
    tox_id: ToxId | None
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None


@dataclass(frozen=True)
class VpnConfig:
    """A parsed network file."""

    secret: bytes
    params: NetworkParams | None
    """None: learn name and pools from the network (joining with an invite)."""
    join: ToxId | None
    interface: str
    mtu: int
    """TUN MTU and the largest IP packet we announce (default :data:`DEFAULT_MTU_BYTES`;
    more than 1372 only with members that announce it too: whole over probed direct UDP
    paths, else split into VPN fragments)."""
    user: str | None
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    members: tuple[VpnMember, ...]
    busy_poll_us: int = DEFAULT_BUSY_POLL_WINDOW_US
    """Busy-poll window of the TUN pump in microseconds (0: off)."""
    keep_warm_ms: int = 0
    """Keep-warm tick interval of the TUN pump in milliseconds (0: off, the default)."""
    warm_ahead_us: int = DEFAULT_WARM_AHEAD_US
    """How long before the next packet of a regular flow is due the TUN pump warms the data
    path up, in microseconds (0: never; :mod:`tunnel.io.warm_ahead`)."""

    def own_record(self, tox_id: ToxId, serial: int) -> MemberRecord:
        """Our member record: our Tox ID and pins. Raise ``serial`` whenever they change
        (persist it), so the new record wins over copies other members still hold."""
        return MemberRecord(
            tox_id,
            serial,
            None if self.ipv4 is None else self.ipv4.packed,
            None if self.ipv6 is None else self.ipv6.packed,
        )

    def initial_records(self) -> list[MemberRecord]:
        """Records of the listed members that have a Tox ID (serial 0: any record the member
        itself sends wins); members given only by public key are left to the network."""
        return [
            MemberRecord(
                m.tox_id,
                0,
                None if m.ipv4 is None else m.ipv4.packed,
                None if m.ipv6 is None else m.ipv6.packed,
            )
            for m in self.members
            if m.tox_id is not None
        ]


def _parse_secret(value: object, path: str) -> bytes:
    text = check_str(value, path).strip()
    try:
        secret = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != SECRET_SIZE_BYTES:
        raise ConfigError(f"{path}: expected {2 * SECRET_SIZE_BYTES} hex characters")
    return secret


def _get_network(section: Section, key: str, version: int) -> object:
    value = section.raw(key)
    if isinstance(value, Missing):
        return None
    path = section.key_path(key)
    text = check_str(value, path)
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if network.version != version:
        raise ConfigError(f"{path}: expected an IPv{version} prefix, got {text!r}")
    return network


def _get_address(section: Section, key: str, version: int) -> object:
    value = section.raw(key)
    if isinstance(value, Missing):
        return None
    path = section.key_path(key)
    text = check_str(value, path)
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if address.version != version:
        raise ConfigError(f"{path}: expected an IPv{version} address, got {text!r}")
    return address


def _check_pin(address: object, network: object, path: str, family: str) -> None:
    if address is not None and network is not None:
        assert isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network)
        if address not in network:
            raise ConfigError(f"{path}: {address} is outside the {family} {network}")


def _parse_member(section: Section, v4: object, v6: object) -> VpnMember:
    raw = section.raw("tox_id")
    if isinstance(raw, Missing):
        raw = section.raw("public_key")
        if isinstance(raw, Missing):
            raise ConfigError(f"{section.key_path('tox_id')}: required key is missing")
        key_path = section.key_path("public_key")
    else:
        key_path = section.key_path("tox_id")
    public_key = check_friend_key(raw, key_path)
    tox_id = ToxId.parse(raw) if isinstance(raw, str) and len(raw.strip()) == 76 else None
    ipv4 = _get_address(section, "ipv4", 4)
    ipv6 = _get_address(section, "ipv6", 6)
    _check_pin(ipv4, v4, section.key_path("ipv4"), "ipv4_pool")
    _check_pin(ipv6, v6, section.key_path("ipv6"), "ipv6_prefix")
    section.finish()
    assert ipv4 is None or isinstance(ipv4, ipaddress.IPv4Address)
    assert ipv6 is None or isinstance(ipv6, ipaddress.IPv6Address)
    return VpnMember(public_key, tox_id, ipv4, ipv6)


def parse_vpn_config(mapping: object, base_dir: Path | None = None) -> VpnConfig:
    """A :class:`VpnConfig` from parsed YAML.

    Raises:
        ConfigError: the first invalid, missing or unknown key.
    """
    top = Section(mapping, "", base_dir)
    top.get_choice("role", ("vpn",), "vpn")
    invite_value = top.raw("invite")
    invite = (
        None
        if isinstance(invite_value, Missing)
        else Invite.parse(check_str(invite_value, "invite"))
    )
    secret_value = top.raw("secret")
    if isinstance(secret_value, Missing):
        if invite is None:
            raise ConfigError("secret: required key is missing (or give an invite)")
        secret = invite.secret
    else:
        secret = _parse_secret(secret_value, "secret")
        if invite is not None and invite.secret != secret:
            raise ConfigError("invite: its secret differs from the secret key")
    join_value = top.raw("join")
    join = invite.tox_id if invite is not None else None
    if not isinstance(join_value, Missing):
        if invite is not None:
            raise ConfigError("join: give either join or invite, not both")
        try:
            join = ToxId.parse(check_str(join_value, "join"))
        except ToxIdError as exc:
            raise ConfigError(f"join: {exc}") from exc
    name = top.get_str("name", "", max_bytes=MAX_NAME_BYTES)
    v4 = _get_network(top, "ipv4_pool", 4)
    v6 = _get_network(top, "ipv6_prefix", 6)
    if isinstance(v4, ipaddress.IPv4Network) and v4.prefixlen > 30:
        raise ConfigError("ipv4_pool: expected a /30 or larger pool")
    if isinstance(v6, ipaddress.IPv6Network) and (
        v6.prefixlen > IPV6_MAX_PREFIX_LEN or not v6.subnet_of(IPV6_ULA)
    ):
        raise ConfigError(
            "ipv6_prefix: expected a unique local prefix (fd00::/8) of /64 or shorter"
        )
    if v4 is None and v6 is None:
        if join is None:
            raise ConfigError("ipv4_pool: a new network needs ipv4_pool and/or ipv6_prefix")
        params = None
    else:
        assert v4 is None or isinstance(v4, ipaddress.IPv4Network)
        assert v6 is None or isinstance(v6, ipaddress.IPv6Network)
        params = NetworkParams(name, v4, v6)
    interface = top.get_str("interface", DEFAULT_INTERFACE, allow_empty=False)
    if len(interface) > MAX_IFNAME_LENGTH or "/" in interface or " " in interface:
        raise ConfigError(f"interface: 1-{MAX_IFNAME_LENGTH} characters, no '/' or space")
    mtu = top.get_int("mtu", DEFAULT_MTU_BYTES, min_value=MIN_MTU_BYTES, max_value=MAX_MTU_BYTES)
    busy_poll_us = top.get_int(
        "busy_poll_us", DEFAULT_BUSY_POLL_WINDOW_US, min_value=0, max_value=MAX_BUSY_POLL_WINDOW_US
    )
    keep_warm_ms = top.get_int("keep_warm_ms", 0, min_value=0, max_value=MAX_KEEP_WARM_MS)
    warm_ahead_us = top.get_int(
        "warm_ahead_us", DEFAULT_WARM_AHEAD_US, min_value=0, max_value=MAX_WARM_AHEAD_US
    )
    user_value = top.raw("user")
    user = (
        None
        if isinstance(user_value, Missing)
        else check_str(user_value, "user", allow_empty=False)
    )
    ipv4 = _get_address(top, "ipv4", 4)
    ipv6 = _get_address(top, "ipv6", 6)
    _check_pin(ipv4, v4, "ipv4", "ipv4_pool")
    _check_pin(ipv6, v6, "ipv6", "ipv6_prefix")
    members = tuple(_parse_member(s, v4, v6) for s in top.get_sections("members"))
    keys = [m.public_key for m in members]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise ConfigError(f"members[{index}]: the same member is listed twice")
    top.finish()
    assert ipv4 is None or isinstance(ipv4, ipaddress.IPv4Address)
    assert ipv6 is None or isinstance(ipv6, ipaddress.IPv6Address)
    return VpnConfig(
        secret,
        params,
        join,
        interface,
        mtu,
        user,
        ipv4,
        ipv6,
        members,
        busy_poll_us,
        keep_warm_ms,
        warm_ahead_us,
    )


def load_vpn_config(path: str | Path) -> VpnConfig:
    """Read and parse a network file.

    Raises:
        ConfigError: unreadable file, bad YAML, or an invalid key.
    """
    return parse_vpn_config(read_yaml_file(path), Path(path).expanduser().absolute().parent)
