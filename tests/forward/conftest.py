"""Fixtures for the forwarding tests (the harness itself is tunnel/forward/loopback.py)."""

from __future__ import annotations

import pytest

from tunnel.forward.loopback import Link, make_link


@pytest.fixture
def link() -> Link:
    result = make_link()
    result.online()
    result.run()
    return result
