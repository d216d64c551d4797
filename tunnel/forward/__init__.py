"""TCP/UDP port forwarding over Tox friend connections, wire-compatible with tuntox.

Sans-IO cores (``client_mux``, ``server_mux``) plus pure helpers (``rules``, ``auth``,
``specs``); the Trio glue that owns sockets lives with the node and the CLI commands.
"""
