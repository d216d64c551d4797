"""Ephemeral v3 onion services through our control client, on the private Tor network.

ADD_ONION with our own persistent key publishes a service whose target is a local echo server;
another lab client reaches it by .onion; DEL_ONION + ADD_ONION with the same key gives the same
address again; Tor's own NEW keys give the address our derivation predicts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tunnel.testing.rng import SeededRng
from tunnel.testing.torlab import TorLab
from tunnel.tor.check import open_onion_stream
from tunnel.tor.control import (
    TorController,
    connect_tor_controller,
    open_onion_service,
    open_tor_controller,
)
from tunnel.tor.errors import TorConnectTimeoutError, TorControlError
from tunnel.tor.keystore import load_or_create_onion_key

pytestmark = pytest.mark.slow

ONION_VIRTUAL_PORT = 33445
PUBLISH_TIMEOUT_S = 30.0
REACH_TIMEOUT_S = 40.0
REACH_ATTEMPTS = 2


async def _echo_via_onion(lab: TorLab, address: str, isolation: str) -> None:
    """Echo 4 KiB through ``address`` from lab client 0; a client that found no way in within
    ``REACH_TIMEOUT_S`` forgets its onion-service state and tries once more (see
    :func:`_forget_onion_descriptors`: in a lab this small a client can get stuck on HSDirs
    it asked while they did not have the descriptor; CI saw it once)."""
    for attempt in range(REACH_ATTEMPTS):
        await _forget_onion_descriptors(lab, 0)
        try:
            with trio.fail_after(REACH_TIMEOUT_S + 5):
                stream = await open_onion_stream(
                    "127.0.0.1",
                    lab.socks_port(0),
                    address,
                    ONION_VIRTUAL_PORT,
                    timeout_s=REACH_TIMEOUT_S,
                    attempt_timeout_s=20,
                    isolation=f"{isolation}-{attempt}",
                )
        except TorConnectTimeoutError:
            if attempt + 1 == REACH_ATTEMPTS:
                raise
            continue
        async with stream:
            payload = os.urandom(4096)
            await stream.send_all(payload)
            got = b""
            with trio.fail_after(REACH_TIMEOUT_S):
                while len(got) < len(payload):
                    got += await stream.receive_some(65536)
        assert got == payload
        return


async def _forget_onion_descriptors(lab: TorLab, client: int) -> None:
    """Make a lab client drop its cached onion descriptors and the HSDirs it asked lately.

    Tor refetches a descriptor only from HSDirs it has not asked in the last 15 minutes. A
    republished service has new introduction points: a client that cached the first
    descriptor tries the dead ones, then refetches, and in a lab this small it may ask an
    HSDir the new descriptor has not reached yet; asked too early, before the HSDirs agree
    with the service on the hash ring, a fresh client can likewise run out of HSDirs to ask.
    ``SIGNAL NEWNYM`` purges the client's onion-service state, the way a fresh client starts.
    """
    async with open_tor_controller(
        "127.0.0.1", lab.control_port(client), cookie_path=lab.cookie_path(client)
    ) as ctl:
        reply = await ctl.command(b"SIGNAL NEWNYM\r\n")
        assert reply.ok, reply


async def _publish(ctl: TorController, key_path: Path, echo_port: int) -> str:
    key = load_or_create_onion_key(key_path, SeededRng("tor-onion-test"))
    result = await ctl.add_onion(key, [(ONION_VIRTUAL_PORT, f"127.0.0.1:{echo_port}")])
    assert result.service_id == key.service_id
    await ctl.wait_hs_desc_uploaded(result.service_id, timeout_s=PUBLISH_TIMEOUT_S)
    return result.address


async def test_onion_service_echo_and_stable_address(
    tor_lab: TorLab, echo_port: int, tmp_path: Path
) -> None:
    key_path = tmp_path / "onion.key"
    async with open_tor_controller(
        "127.0.0.1", tor_lab.control_port(1), cookie_path=tor_lab.cookie_path(1)
    ) as ctl:
        await ctl.set_events("HS_DESC")
        address = await _publish(ctl, key_path, echo_port)
        assert oct(key_path.stat().st_mode & 0o777) == "0o600"
        await _echo_via_onion(tor_lab, address, "first")

        service_id = address.removesuffix(".onion")
        await ctl.del_onion(service_id)
        with pytest.raises(TorControlError, match="DEL_ONION refused"):
            await ctl.del_onion(service_id)  # gone

    # the same key file, published again (the way a node does it): the same address
    key = load_or_create_onion_key(key_path)
    async with open_onion_service(
        "127.0.0.1",
        tor_lab.control_port(1),
        key,
        [(ONION_VIRTUAL_PORT, f"127.0.0.1:{echo_port}")],
        publish_timeout_s=PUBLISH_TIMEOUT_S,
    ) as service:
        assert service.address == address
        await _echo_via_onion(tor_lab, service.address, "second")
    # leaving the block removed it: Tor accepts the same key again (no address collision)
    async with open_tor_controller("127.0.0.1", tor_lab.control_port(1)) as ctl:
        await ctl.add_onion(key, [(ONION_VIRTUAL_PORT, f"127.0.0.1:{echo_port}")])


async def test_tor_generated_key_matches_our_address_derivation(tor_lab: TorLab) -> None:
    async with open_tor_controller(
        "127.0.0.1", tor_lab.control_port(0), auth_method="SAFECOOKIE"
    ) as ctl:
        result, key = await ctl.add_onion_new([(80, "127.0.0.1:48999")])
        assert key.service_id == result.service_id
        await ctl.del_onion(result.service_id)
        # the key Tor made works as our persistent key
        republished = await ctl.add_onion(key, [(80, "127.0.0.1:48999")])
        assert republished.service_id == result.service_id
        with pytest.raises(TorControlError, match="collision"):
            await ctl.add_onion(key, [(80, "127.0.0.1:48999")])
        await ctl.del_onion(result.service_id)


async def test_control_auth_methods_and_bootstrap(tor_lab: TorLab) -> None:
    for method in ("COOKIE", "SAFECOOKIE", None):
        async with open_tor_controller(
            "127.0.0.1", tor_lab.control_port(0), auth_method=method
        ) as ctl:
            assert (await ctl.bootstrap_status()).done
            assert ctl.protocol_info is not None
            assert ctl.protocol_info.tor_version
    with pytest.raises(TorControlError, match="AUTHENTICATE refused by Tor: 515"):
        await connect_tor_controller("127.0.0.1", tor_lab.control_port(0), auth_method="NULL")
