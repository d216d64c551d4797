"""Rules, auth policy and every deny path (rules, connect failure, timeout, limits, bad input)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from tunnel.errors import ConfigError
from tunnel.forward.auth import AuthPolicy, request_message
from tunnel.forward.events import ConnectRequest
from tunnel.forward.loopback import CLIENT_PK, SERVER_PK, make_link
from tunnel.forward.rules import (
    Decision,
    RuleSet,
    address_allowed,
    parse_rule,
    parse_rules_text,
    validate_request_host,
)
from tunnel.forward.server_mux import ServerMux
from tunnel.testing.rng import SeededRng
from tunnel.wire.tuntox import DenyCode, RequestTunnel

# --- rules ------------------------------------------------------------------------------


def test_tuntox_rules_file_syntax() -> None:
    text = "# allowed services\n\n127.0.0.1:22\nlocalhost:8080\n*:443\nbox:0\n"
    rules = RuleSet(parse_rules_text(text))
    assert rules.evaluate("127.0.0.1", 22).allowed
    assert not rules.evaluate("127.0.0.1", 23).allowed
    assert rules.evaluate("LOCALHOST.", 8080).allowed
    assert rules.evaluate("anything.example", 443).allowed
    assert rules.evaluate("box", 65535).allowed  # port 0 = any port (tuntox rule_match)
    assert not rules.evaluate("localhost", 23).allowed
    # Extension: a name reaches an IP rule only through resolution into that address.
    assert rules.evaluate("localhost", 22) == Decision(True, (ip_network("127.0.0.1/32"),))


def test_rule_extensions() -> None:
    rules = RuleSet.parse(
        [
            "*.corp.example:8000-8100",
            "10.0.0.0/8:22",
            "[2001:db8::/32]:443",
            "[::1]:5432",
            "dns.local:53/udp",
            "both.local:7/any",
        ]
    )
    assert rules.evaluate("a.b.corp.example", 8050).allowed
    assert not rules.evaluate("corp.example", 8050).allowed
    assert not rules.evaluate("a.corp.example", 8101).allowed
    assert rules.evaluate("10.1.2.3", 22) == Decision(True)
    assert not rules.evaluate("11.1.2.3", 22).allowed
    assert rules.evaluate("2001:db8::5", 443).allowed
    assert rules.evaluate("[2001:db8::5]", 443).allowed
    assert rules.evaluate("::1", 5432).allowed
    assert not rules.evaluate("::2", 5432).allowed
    assert rules.evaluate("dns.local", 53, "udp").allowed
    assert not rules.evaluate("dns.local", 53, "tcp").allowed
    assert rules.evaluate("both.local", 7, "udp").allowed
    assert rules.evaluate("both.local", 7, "tcp").allowed
    # A host NAME only matched by a network rule: allowed, restricted to that network.
    assert rules.evaluate("build.lan", 22) == Decision(True, (ip_network("10.0.0.0/8"),))
    assert address_allowed("10.9.9.9", (ip_network("10.0.0.0/8"),))
    assert not address_allowed("192.0.2.1", (ip_network("10.0.0.0/8"),))
    assert address_allowed("192.0.2.1", None)


def test_no_rules_allows_everything_empty_rules_deny_everything() -> None:
    assert RuleSet(None).evaluate("x", 1).allowed
    assert not RuleSet([]).evaluate("x", 1).allowed
    assert not RuleSet(parse_rules_text("# nothing\n")).evaluate("x", 1).allowed


@pytest.mark.parametrize(
    "line",
    ["noport", "host:", ":22", "host:0-5", "host:9-3", "host:70000", "::1:22", "[::1:22",
     "10.0.0.0/33:22", "*.:22", "bad host:22", "h*st:22"],
)  # fmt: skip
def test_bad_rules_are_config_errors(line: str) -> None:
    with pytest.raises(ConfigError):
        parse_rule(line)


def test_rules_file_error_names_the_line() -> None:
    with pytest.raises(ConfigError, match="line 2"):
        parse_rules_text("a:1\nb:x\n")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"localhost", "localhost"),
        (b"Example.COM.", "example.com"),
        (b"[::1]", "::1"),
        (b"10.0.0.1", "10.0.0.1"),
        (b"", None),
        (b"a\x00b", None),
        (b"a b", None),
        (b"h\xc3\xa9", None),
        (b"x" * 300, None),
        (b"-oProxyCommand", None),
        (b"a:b", None),
    ],
)
def test_request_host_validation(raw: bytes, expected: str | None) -> None:
    assert validate_request_host(raw) == expected


# --- auth -------------------------------------------------------------------------------

KEY_A = bytes([0xA]) * 32
KEY_B = bytes([0xB]) * 32


def test_auth_secret_as_tuntox_checks_it() -> None:
    policy = AuthPolicy(secret=b"s3cret")
    assert policy.accepts_request(KEY_A, b"s3cret\0")  # what the tuntox client sends
    assert policy.accepts_request(KEY_A, request_message(b"s3cret"))
    assert policy.accepts_request(KEY_A, b"s3cret")
    assert policy.accepts_request(KEY_A, b"s3cret\0ignored\0")  # strncmp stops at NUL
    assert not policy.accepts_request(KEY_A, b"s3cre\0")
    assert not policy.accepts_request(KEY_A, b"s3cret!\0")
    assert not policy.accepts_request(KEY_A, b"Hi, fell")
    assert not policy.accepts_request(KEY_A, b"s3cret\0junk")


def test_auth_allowlist_and_both() -> None:
    allow = AuthPolicy(allowlist=frozenset({KEY_A}))
    assert allow.accepts_request(KEY_A, b"anything")
    assert not allow.accepts_request(KEY_B, b"anything")
    both = AuthPolicy(secret=b"pw", allowlist=frozenset({KEY_A}))
    assert both.accepts_request(KEY_A, b"pw\0")
    assert not both.accepts_request(KEY_A, b"nope\0")
    assert not both.accepts_request(KEY_B, b"pw\0")
    assert AuthPolicy().accepts_request(KEY_B, b"Hi, fell")
    tox_id = KEY_A + bytes(6)
    assert AuthPolicy.build("pw", [tox_id]).accepts_request(KEY_A, b"pw\0")


def test_auth_config_errors() -> None:
    with pytest.raises(ConfigError):
        AuthPolicy(secret=b"")
    with pytest.raises(ConfigError):
        AuthPolicy(secret=b"x" * 1016)
    with pytest.raises(ConfigError):
        AuthPolicy(secret=b"a\0b")
    with pytest.raises(ConfigError):
        AuthPolicy(allowlist=frozenset({b"short"}))


def test_server_friend_request_and_allowlist_enforced_on_packets() -> None:
    server = ServerMux(SeededRng(1), auth=AuthPolicy(secret=b"pw", allowlist=frozenset({KEY_A})))
    assert server.friend_request(KEY_A, b"pw\0")
    assert not server.friend_request(KEY_B, b"pw\0")
    server.friend_online(KEY_B, 0.0)  # e.g. a friend from before the allowlist changed
    server.receive_packet(KEY_B, RequestTunnel(22, 1, b"localhost").encode(), 0.0)
    assert server.next_event() is None
    assert server.packets_to_send(KEY_B) == []
    assert server.statistics()["dropped_unauthorised_friend"] == 1


# --- deny paths -------------------------------------------------------------------------


def test_denied_by_rules_answers_at_once_with_reason() -> None:
    server = ServerMux(SeededRng(2), rules=RuleSet.parse(["localhost:22"]))
    link = make_link(server=server)
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "localhost", 23, link.now)
    link.run()
    failure = link.client_app.failed[handle]
    assert failure.code is DenyCode.NOT_ALLOWED
    assert failure.reason == "localhost:23 is not allowed by the server's rules"
    assert link.server_app.connects == []
    # The same client keeps working for allowed targets.
    ok = link.client.open_tunnel(SERVER_PK, "localhost", 22, link.now)
    link.run()
    assert ok in link.client_app.opened


def test_connect_failure_is_reported() -> None:
    def refuse(request: ConnectRequest) -> str | None:
        return "Connection refused" if request.port == 1 else None

    link = make_link(policy=refuse)
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "127.0.0.1", 1, link.now)
    link.run()
    assert link.client_app.failed[handle].code is DenyCode.CONNECT_FAILED
    assert link.client_app.failed[handle].reason == "Connection refused"
    assert link.server.tunnel_count() == 0


def test_connect_timeout_cancels_driver_and_denies() -> None:
    link = make_link(policy=None)
    link.online()
    link.run()
    handle = link.client.open_tunnel(SERVER_PK, "10.255.255.1", 80, link.now)
    link.run()
    (request,) = link.server_app.connects
    assert link.server.next_deadline() == pytest.approx(link.now + 15.0, abs=0.01)
    link.advance(15.0)
    link.run()
    assert link.server_app.closed[request.handle] == "connect timed out"
    assert link.client_app.failed[handle].code is DenyCode.TIMEOUT
    # A connect that completes after the timeout is closed by the driver.
    link.server.connect_result(request.handle, None, link.now)
    link.run()
    assert link.server.tunnel_count() == 0


def test_pending_connect_limit() -> None:
    server = ServerMux(SeededRng(3), max_pending_per_friend=2)
    link = make_link(server=server, policy=None)
    link.online()
    link.run()
    handles = [link.client.open_tunnel(SERVER_PK, "svc", 10 + i, link.now) for i in range(3)]
    link.run()
    assert len(link.server_app.connects) == 2
    assert link.client_app.failed[handles[2]].code is DenyCode.LIMIT


def test_bad_requests_are_denied_not_raised() -> None:
    link = make_link()
    link.online()
    link.run()
    pending: list[int] = []
    for forward_id, frame in enumerate(
        [RequestTunnel(0, 0, b"localhost"), RequestTunnel(22, 1, b"a\x00b")]
    ):
        link.server.receive_packet(CLIENT_PK, frame.encode(), link.now)
        pending.append(forward_id)
    link.server_app.pump(link.now)
    assert link.server_app.connects == []
    assert link.server.statistics()["denied"] == 2
    assert len(link.server.packets_to_send(CLIENT_PK)) == 2  # two DENYs


def test_open_tunnel_rejects_local_misuse() -> None:
    link = make_link()
    with pytest.raises(ValueError, match="bad host"):
        link.client.open_tunnel(SERVER_PK, "bad host", 1, 0.0)
    with pytest.raises(ValueError, match="bad port"):
        link.client.open_tunnel(SERVER_PK, "ok", 0, 0.0)
