"""Command-line entry point: ``tunnel <command> ...`` and ``python -m tunnel``.

Each command lives in ``tunnel/commands/<name>.py`` with ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors meant for users are
:class:`tunnel.errors.ConfigError`; they are printed as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tunnel import __version__
from tunnel.errors import ConfigError

# Command name -> module in tunnel.commands. Keep sorted by how users meet them.
COMMANDS: dict[str, str] = {
    "id": "identity",
    "genconf": "genconf",
    "check-config": "check_config",
    "version": "version",
    "bootstrapd": "bootstrapd",
    "demo": "demo",
    "run": "run",
    "serve": "serve",
    "connect": "connect",
    "status": "status",
    "vpn": "vpn",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, with one sub-parser per available command (``only``: just that
    command's, so running it does not import every other command's modules first)."""
    parser = argparse.ArgumentParser(
        prog="tunnel",
        description="P2P tunnels and a mesh VPN over the Tox network.",
    )
    parser.add_argument("--version", action="version", version=f"tunnel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(f"tunnel.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"tunnel.commands.{module_name}":
                continue  # command not built yet
            raise
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    first = arguments[0] if arguments else None
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(arguments)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        status: int = run(args)
    except ConfigError as exc:
        print(f"tunnel {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
