"""net_crypto: the friend-to-friend secure transport, sans-IO (tox-protocol.md section 6)."""
