"""Exception types shared by every layer.

Policy (style guide section 4): bytes from the network are parsed by ``*_untrusted`` functions
that raise only :class:`BadPacket` (malformed) or :class:`DecryptError` (authentication failed).
Cores catch both at the datagram boundary, count the drop and carry on; they never propagate
into a driver. :class:`ProtocolViolation` tears down one authenticated session only.
:class:`ConfigError` is a user-facing configuration problem with a message that names the key.
"""


class TunnelError(Exception):
    """Base class of the project's own exceptions."""


class BadPacket(TunnelError):
    """Bytes from the network that do not parse as the expected packet."""


class DecryptError(BadPacket):
    """A box that does not open with the expected key (forged, corrupted or misaddressed)."""


class ProtocolViolation(TunnelError):
    """A peer broke the protocol inside an authenticated session; close that session only."""


class ConfigError(TunnelError):
    """Invalid configuration or command-line input. ``str(e)`` is the one line shown to users."""
