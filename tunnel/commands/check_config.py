"""``tunnel check-config FILE``: validate a config file and print it normalised.

Exit 0 with every key (defaults filled in) on stdout, or exit 1 with one line
``tunnel check-config: error: <key path>: <what>`` on stderr (printed by :mod:`tunnel.cli`).
The top-level ``role:`` key says which kind of file it is: ``node`` (the default),
``bootstrapd``, ``serve`` (``tunnel serve``) or ``vpn`` (a ``tunnel vpn`` network file).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from tunnel.config import config_to_dict, dump_config, parse_config, read_yaml_file

HELP = "check a config file; print it normalised, or the first error"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One positional ``FILE``."""
    parser.add_argument("file", metavar="FILE", type=Path, help="YAML config file to check")


def _plain(value: object) -> object:
    """A YAML-safe rendering of a parsed config value (keys as hex, paths as text)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def run(args: argparse.Namespace) -> int:
    """Print the normalised config (``ConfigError`` propagates to the CLI: exit 1)."""
    mapping = read_yaml_file(args.file)
    base_dir = args.file.expanduser().absolute().parent
    role = mapping.get("role") if isinstance(mapping, Mapping) else None
    if role == "serve":
        from tunnel.forward.config import parse_serve_config

        serve = parse_serve_config(mapping, base_dir)
        rendered = _plain(serve)
        assert isinstance(rendered, dict)
        rendered["node"] = config_to_dict(serve.node)
        out = {"role": "serve", **{k: v for k, v in rendered.items() if k != "role"}}
    elif role == "vpn":
        from tunnel.vpn.config import parse_vpn_config

        out = {"role": "vpn", **_plain_dict(parse_vpn_config(mapping, base_dir))}
    else:
        sys.stdout.write(dump_config(parse_config(mapping, base_dir)))
        return 0
    sys.stdout.write(yaml.safe_dump(out, sort_keys=False, default_flow_style=False))
    return 0


def _plain_dict(value: object) -> dict[str, object]:
    rendered = _plain(value)
    assert isinstance(rendered, dict)
    return rendered
