"""One module per CLI command (see :mod:`tunnel.cli`)."""
