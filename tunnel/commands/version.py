"""``tunnel version``: print the program version and the protocol it speaks."""

from __future__ import annotations

import argparse

from tunnel import __version__

HELP = "print the version"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""
    del parser


def run(args: argparse.Namespace) -> int:
    """Print ``tunnel X.Y.Z (Tox protocol: c-toxcore 0.2.18 compatible)``."""
    del args
    print(f"tunnel {__version__} (Tox protocol: c-toxcore 0.2.18 compatible)")
    return 0
