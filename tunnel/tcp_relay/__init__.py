"""Tox TCP relays (tox-protocol.md section 7): sans-IO client, server, framing and relay pool.

The Trio drivers live in :mod:`tunnel.io.tcp_relay`; codecs in :mod:`tunnel.wire.tcp_relay`.
"""
