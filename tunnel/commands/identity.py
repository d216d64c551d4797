"""``tunnel id``: print this node's Tox ID, creating the identity on first use.

The 76-hex Tox ID is alone on the first line of stdout (scripts parse it); messages go to
stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tunnel.config import default_profile_path, load_node_config
from tunnel.profile import Profile
from tunnel.toxid import NOSPAM_SIZE

HELP = "print this node's Tox ID (creates a new identity if there is none)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--profile PATH``, ``-c FILE``, ``--new-nospam``."""
    parser.add_argument(
        "--profile",
        metavar="PATH",
        type=Path,
        help="identity file (default: the config's profile, else "
        "$XDG_CONFIG_HOME/tunnel/profile.tox)",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        type=Path,
        help="node config file whose 'profile' key names the identity file",
    )
    parser.add_argument(
        "--new-nospam",
        action="store_true",
        help="pick a new random nospam: the old Tox ID stops accepting friend requests",
    )


def profile_path(args: argparse.Namespace) -> Path:
    """The identity file chosen by ``--profile``, ``--config`` or the default."""
    if args.profile is not None:
        return Path(args.profile)
    if args.config is not None:
        return load_node_config(args.config).profile
    return default_profile_path()


def run(args: argparse.Namespace) -> int:
    """Load or create the profile, optionally change the nospam, print the Tox ID."""
    path = profile_path(args)
    if not path.exists() and not path.is_symlink():
        profile = Profile.create(path, os.urandom)
        print(f"created new identity at {path}", file=sys.stderr)
    else:
        profile = Profile.load(path)
    if args.new_nospam:
        profile.set_nospam(os.urandom(NOSPAM_SIZE))
        profile.save()
        print(f"new nospam {profile.nospam.hex().upper()} saved to {path}", file=sys.stderr)
    print(profile.tox_id)
    return 0
