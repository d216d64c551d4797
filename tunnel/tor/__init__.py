"""Tor transport (issue 10): relay connections through Tor's SOCKS port, ephemeral v3 onion
services through its control port, and usability checks with clear errors.

* :mod:`tunnel.tor.protocol` — control-protocol framing/parsing and command builders (sans-IO);
* :mod:`tunnel.tor.onion_key` — ``ED25519-V3`` keys and their .onion addresses (pure);
* :mod:`tunnel.tor.keystore` — the persistent 0600 key file;
* :mod:`tunnel.tor.control` — the Trio control-port client;
* :mod:`tunnel.tor.check` — SOCKS/bootstrap checks and :func:`~tunnel.tor.check.open_tor_stream`.
"""
