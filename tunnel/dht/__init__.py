"""The Tox DHT (tox-protocol.md section 4), sans-IO: close list, request ids, DhtCore."""
