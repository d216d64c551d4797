"""Tor transport (issue 10): relay connections through Tor's SOCKS port, ephemeral v3 onion
services through its control port, and usability checks with clear errors.

* :mod:`tunnel.tor.protocol` — control-protocol framing/parsing and command builders, onion
  service ids, SOCKS reply meanings (sans-IO);
* :mod:`tunnel.tor.onion_key` — ``ED25519-V3`` keys and the .onion address they give (pure);
* :mod:`tunnel.tor.keystore` — the persistent 0600 key file (stable address across restarts);
* :mod:`tunnel.tor.announce` — the friend-connection packet that tells friends our .onion
  (lossless custom packet 0xB4, pure codec);
* :mod:`tunnel.tor.control` — the Trio control-port client and :func:`open_onion_service`;
* :mod:`tunnel.tor.check` — SOCKS/bootstrap checks (:func:`check_tor`) and the SOCKS5
  connects every Tor-mode connection uses (:func:`open_tor_stream`, :func:`open_onion_stream`).

How a node uses it (Tor mode)::

    endpoints = TorEndpoints.parse("127.0.0.1:9050", "127.0.0.1:9051")
    await check_tor(endpoints, bootstrap_wait_s=30)           # clear error, bounded
    stream = await open_tor_stream(endpoints.socks_host, endpoints.socks_port,
                                   relay_ip, relay_port, timeout_s=30, isolation=peer_hex)

Onion service for friends::

    key = load_or_create_onion_key(profile_dir / "onion.key")
    async with open_onion_service("127.0.0.1", 9051, key,
                                  [(VIRTUAL_PORT, f"127.0.0.1:{local_relay_port}")]) as svc:
        announce = OnionAddressAnnouncement(key.public_key, VIRTUAL_PORT).encode()
        ...   # send to friends; serve the TCP relay protocol for friends only
"""
