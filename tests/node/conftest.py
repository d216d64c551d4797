"""Fixtures for the Node tests: everything on ports 50000-50999 (this suite's own range; the
shared ``bootstrapd`` fixture of tests/conftest.py takes its ports from here too)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tunnel.node import Node
from tunnel.profile import Profile
from tunnel.testing.bootstrapd import Bootstrapd
from tunnel.testing.node_options import loopback_options
from tunnel.testing.ports import PortPool

NODE_PORT_RANGE = (50000, 50999)


@pytest.fixture(scope="session")
def port_pool() -> PortPool:
    """Overrides the shared harness pool: this suite's ports only."""
    return PortPool(*NODE_PORT_RANGE)


def toxcore_valid_profile(path: Path | None = None) -> Profile:
    """A fresh profile whose key toxcore accepts (last byte < 128)."""
    import os

    while True:
        profile = Profile.generate(os.urandom)
        if profile.public_key[31] < 128:
            if path is not None:
                profile.save(path)
            return profile


@pytest.fixture
def node_factory(
    port_pool: PortPool, bootstrapd: Bootstrapd, tmp_path: Path
) -> Callable[..., object]:
    """``async with make(name, udp=True) as node``: a running Node bootstrapped off bootstrapd."""

    @asynccontextmanager
    async def make(
        name: str, *, udp: bool = True, profile: Profile | None = None, **changes: Any
    ) -> AsyncIterator[Node]:
        if profile is None:
            profile = toxcore_valid_profile(tmp_path / f"{name}.tox")
        options = loopback_options(
            port_pool, bootstrapd, udp_enabled=udp, name=name.encode(), **changes
        )
        node = Node(profile, options)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            try:
                yield node
            finally:
                with trio.move_on_after(5):
                    await node.aclose()
                nursery.cancel_scope.cancel()

    return make
