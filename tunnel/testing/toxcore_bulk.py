"""Bulk custom-packet senders for throughput tests against real toxcore.

toxcore-test-peers.md 5.2/5.3: the reference sender follows ``tox_iteration_interval`` and, on
every iteration, pushes packets until toxcore answers SENDQ. :func:`pump_lossless` and
:func:`pump_lossy` do exactly that from an iteration hook on the peer's own thread.

Packet ``i`` is ``[packet_id][i: u32 BE][zeros]`` (``size`` bytes), so a receiver can check
order and loss with :func:`packet_sequence_number`.
"""

from __future__ import annotations

import threading
import time

from tunnel.testing.libtoxcore import TOX_MAX_CUSTOM_PACKET_SIZE_BYTES
from tunnel.testing.toxcore import ToxPeer
from tunnel.testing.toxcore_events import PumpResult, ToxError

PUMP_HEADER_SIZE_BYTES = 5
"""Packet id byte plus the 4-byte sequence number."""
DEFAULT_LOSSLESS_ID = 160
DEFAULT_LOSSY_ID = 200


def pump_packet(packet_id: int, number: int, size: int) -> bytes:
    """Packet ``number`` of a pumped stream."""
    return bytes([packet_id]) + number.to_bytes(4, "big") + bytes(size - PUMP_HEADER_SIZE_BYTES)


def packet_sequence_number(data: bytes) -> int:
    """The sequence number of a pumped packet."""
    return int.from_bytes(data[1:PUMP_HEADER_SIZE_BYTES], "big")


def pump_lossless(
    peer: ToxPeer,
    friend: int,
    count: int,
    size: int = TOX_MAX_CUSTOM_PACKET_SIZE_BYTES,
    packet_id: int = DEFAULT_LOSSLESS_ID,
    timeout: float = 60.0,
) -> PumpResult:
    """Queue ``count`` numbered lossless packets as fast as toxcore accepts them.

    Blocks until all are queued (not delivered), toxcore reports an error other than
    SENDQ, or ``timeout`` seconds pass (``TimeoutError``).
    """
    return _pump(peer, True, friend, count, size, packet_id, 0, timeout)


def pump_lossy(
    peer: ToxPeer,
    friend: int,
    count: int,
    size: int = TOX_MAX_CUSTOM_PACKET_SIZE_BYTES,
    packet_id: int = DEFAULT_LOSSY_ID,
    per_iteration: int = 0,
    timeout: float = 60.0,
) -> PumpResult:
    """Like :func:`pump_lossless` for lossy packets; ``per_iteration`` > 0 paces them."""
    return _pump(peer, False, friend, count, size, packet_id, per_iteration, timeout)


def _pump(
    peer: ToxPeer,
    lossless: bool,
    friend: int,
    count: int,
    size: int,
    packet_id: int,
    per_iteration: int,
    timeout: float,
) -> PumpResult:
    if not PUMP_HEADER_SIZE_BYTES <= size <= TOX_MAX_CUSTOM_PACKET_SIZE_BYTES:
        raise ValueError(
            f"size must be {PUMP_HEADER_SIZE_BYTES}-{TOX_MAX_CUSTOM_PACKET_SIZE_BYTES}"
        )
    send = peer.try_send_lossless if lossless else peer.try_send_lossy
    lock = threading.Lock()
    sent = sendq = 0
    error: str | None = None
    started = time.monotonic()
    finished = started

    def hook() -> bool:
        """Runs on the peer's iteration thread; False once done."""
        nonlocal sent, sendq, error, finished
        budget = per_iteration or count
        with lock:
            while sent < count and budget > 0:
                try:
                    accepted = send(friend, pump_packet(packet_id, sent, size))
                except ToxError as exc:
                    error = exc.code_name
                    return False
                if not accepted:
                    sendq += 1
                    return True
                sent += 1
                budget -= 1
            finished = time.monotonic()
            return sent < count

    if hook():
        peer.add_iteration_hook(hook)
    try:
        peer.wait_for(
            lambda: sent >= count or error is not None,
            timeout,
            f"{count} packets queued for friend {friend}",
        )
    finally:
        peer.remove_iteration_hook(hook)
    with lock:
        return PumpResult(sent, sendq, started, finished, error)
