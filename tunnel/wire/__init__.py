"""Codecs for every packet the node sends or receives; one module per packet family.

Parsers of network bytes are named ``*_untrusted`` (or are ``decode`` classmethods) and raise
only :class:`tunnel.errors.BadPacket` (or its subclass ``DecryptError``).
"""
