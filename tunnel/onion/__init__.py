"""Sans-IO onion roles (tox-protocol.md section 5): relay, announce store and onion client."""
