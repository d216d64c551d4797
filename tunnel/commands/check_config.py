"""``tunnel check-config FILE``: validate a config file and print it normalised.

Exit 0 with every key (defaults filled in) on stdout, or exit 1 with one line
``tunnel check-config: error: <key path>: <what>`` on stderr (printed by :mod:`tunnel.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunnel.config import dump_config, load_config

HELP = "check a config file; print it normalised, or the first error"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One positional ``FILE``."""
    parser.add_argument("file", metavar="FILE", type=Path, help="YAML config file to check")


def run(args: argparse.Namespace) -> int:
    """Print the normalised config (``ConfigError`` propagates to the CLI: exit 1)."""
    sys.stdout.write(dump_config(load_config(args.file)))
    return 0
