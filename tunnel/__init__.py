"""tunnel: P2P tunnels and a mesh VPN over the Tox network.

Wire-compatible with c-toxcore 0.2.18; the protocol cores are sans-IO (see ``tunnel.io`` for the
only code that touches sockets, TUN devices and Trio).
"""

__version__ = "0.1.0"
