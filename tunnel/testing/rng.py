"""Deterministic randomness for simulations and tests: the same seed gives the same bytes."""

from __future__ import annotations

import hashlib


class SeededRng:
    """A callable ``rng(n) -> bytes`` (the :data:`tunnel.crypto.Rng` shape) from a seed.

    SHAKE-256 over the seed and a counter: cheap, stable across Python versions and
    independent of ``PYTHONHASHSEED``. Use :meth:`fork` to give each simulated node its own
    independent stream derived from one master seed.
    """

    __slots__ = ("_buffer", "_counter", "_seed")

    def __init__(self, seed: int | bytes | str) -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(16, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._counter += 1
            block = hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(256)
            self._buffer += block
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def fork(self, label: int | str) -> SeededRng:
        """An independent generator derived from this one's seed and ``label``."""
        return SeededRng(self._seed + b"/" + str(label).encode())

    def uniform(self) -> float:
        """A float in [0, 1)."""
        return int.from_bytes(self(7), "big") / float(1 << 56)

    def randrange(self, n: int) -> int:
        """An integer in [0, n) (n >= 1), without modulo bias worth caring about (64 bits)."""
        if n < 1:
            raise ValueError("n must be positive")
        return int.from_bytes(self(8), "big") % n
