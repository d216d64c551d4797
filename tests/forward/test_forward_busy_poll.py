"""The forward driver's busy poll (tunnel.io.busy_poll): it spins only after traffic, for one
window, steps aside during bulk transfers, and never spins forever on a clock that stands."""

from __future__ import annotations

import trio
import trio.testing

from tunnel.forward.specs import parse_local_forward
from tunnel.io.busy_poll import (
    BULK_BYTES_PER_WINDOW,
    MAX_SPIN_ROUNDS,
    SPIN_BURST_S,
    SPIN_SHARE,
    BusyPoll,
)
from tunnel.testing.forward_harness import forward_pair, start_tcp_echo
from tunnel.testing.ports import PortPool

WINDOW_S = 0.01


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    assert callable(condition)
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110 - the spinner has no event to await
            await trio.sleep(0.001)


async def test_spins_one_window_after_traffic_then_waits() -> None:
    poll = BusyPoll(WINDOW_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll.run)
        await trio.sleep(3 * WINDOW_S)
        assert poll.windows == 0  # idle: nothing spins
        assert poll.spin_rounds == 0
        poll.note()
        await _until(lambda: poll.spinning)
        await _until(lambda: not poll.spinning)
        assert poll.windows == 1
        rounds = poll.spin_rounds
        assert rounds > 0
        await trio.sleep(3 * WINDOW_S)
        assert poll.spin_rounds == rounds  # back to waiting: no round without traffic
        poll.note()
        await _until(lambda: poll.windows == 2 and not poll.spinning)
        nursery.cancel_scope.cancel()


async def test_window_zero_never_spins() -> None:
    poll = BusyPoll(0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll.run)
        for _ in range(10):
            poll.note()
            await trio.sleep(0.001)
        assert poll.windows == 0
        assert poll.spin_rounds == 0
        nursery.cancel_scope.cancel()


async def test_bulk_traffic_makes_it_step_aside() -> None:
    moved = [0]
    poll = BusyPoll(WINDOW_S, lambda: moved[0])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll.run)
        poll.note()
        await _until(lambda: poll.spinning)
        moved[0] += 2 * BULK_BYTES_PER_WINDOW  # a bulk transfer's bytes within a window
        await _until(lambda: poll.rests == 1)
        nursery.cancel_scope.cancel()


async def test_steady_traffic_spins_at_most_its_share_of_the_time() -> None:
    """Notes every 2 ms for a second (a steady stream under the bulk threshold): the spinner
    stops for want of budget after its burst and spins its share of the time afterwards."""
    poll = BusyPoll(WINDOW_S)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll.run)
        start = trio.current_time()
        while trio.current_time() - start < 4 * SPIN_BURST_S:
            poll.note()
            await trio.sleep(0.002)
        elapsed = trio.current_time() - start
        await _until(lambda: not poll.spinning)
        nursery.cancel_scope.cancel()
    assert poll.starved > 0
    # one scheduler round and one window of slack past the budget
    assert poll.spun_s <= SPIN_BURST_S + SPIN_SHARE * elapsed + 2 * WINDOW_S


async def test_a_clock_that_stands_still_cannot_make_it_spin_forever() -> None:
    clock = trio.testing.MockClock()  # rate 0: time moves only when told

    async def main() -> int:
        poll = BusyPoll(WINDOW_S)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll.run)
            await trio.testing.wait_all_tasks_blocked()
            poll.note()
            await trio.testing.wait_all_tasks_blocked()  # returns once the window gave up
            nursery.cancel_scope.cancel()
        return poll.spin_rounds

    with trio.fail_after(30):  # a spinner without the bound would hang the thread: fail
        rounds = await trio.to_thread.run_sync(
            lambda: trio.run(main, clock=clock), abandon_on_cancel=True
        )
    assert rounds == MAX_SPIN_ROUNDS


async def test_the_driver_spins_after_tunnel_traffic() -> None:
    ports = PortPool(51400, 51499)
    echo_port, local_port = ports.allocate(2)
    async with forward_pair() as pair, trio.open_nursery() as nursery:
        await start_tcp_echo(nursery, echo_port)
        await pair.nursery.start(
            pair.client.serve_tcp, parse_local_forward(f"{local_port}:127.0.0.1:{echo_port}")
        )
        await _until(lambda: not pair.client.busy_poll.spinning)  # the set-up's window ended
        before = pair.client.busy_poll.windows
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream("127.0.0.1", local_port)
            async with stream:
                await stream.send_all(b"ping")
                assert await stream.receive_some(4) == b"ping"
        assert pair.client.busy_poll.windows > before
        nursery.cancel_scope.cancel()
