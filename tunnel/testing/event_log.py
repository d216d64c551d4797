"""A thread-safe event log that sync tests and Trio tests can wait on without polling.

A producer thread (e.g. a :class:`~tunnel.testing.toxcore.ToxPeer` iteration loop) calls
:meth:`EventLog.publish` with each batch of events, or :meth:`EventLog.tick` when only state
changed; waiters re-evaluate their predicate on every publish/tick. Predicates run with no lock
held, so they may call into the producer's API.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

_T = TypeVar("_T")
_E = TypeVar("_E")

TIMEOUT_EVENTS_SHOWN = 8


class EventLog:
    """Recorded events plus a condition that wakes waiters on every change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._events: list[Any] = []
        self._seq = 0
        self._error: BaseException | None = None
        self._closed = False

    # ------------------------------------------------------------------ producer side

    def publish(self, batch: Iterable[Any]) -> None:
        """Append events (possibly none) and wake every waiter."""
        with self._cond:
            self._events.extend(batch)
            self._seq += 1
            self._cond.notify_all()

    def tick(self) -> None:
        """Wake waiters so they re-check state-based predicates."""
        self.publish(())

    def fail(self, error: BaseException) -> None:
        """The producer died: waiters raise ``RuntimeError`` from ``error``."""
        with self._cond:
            self._error = error
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """No more events will come: waiters raise ``RuntimeError``."""
        with self._cond:
            self._closed = True
            self._seq += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading

    def events(self, kind: type[_E] | None = None) -> list[Any]:
        """A snapshot of the events (optionally only instances of ``kind``)."""
        with self._cond:
            if kind is None:
                return list(self._events)
            return [e for e in self._events if isinstance(e, kind)]

    def count(self) -> int:
        """How many events are recorded (pass it as ``since`` to wait for newer ones)."""
        with self._cond:
            return len(self._events)

    def find(
        self, kind: type[_E], match: Callable[[_E], bool] | None = None, since: int = 0
    ) -> _E | None:
        """The first event of ``kind`` at index >= ``since`` that ``match`` accepts."""
        with self._cond:
            candidates = self._events[since:]
        for event in candidates:
            if isinstance(event, kind) and (match is None or match(event)):
                return event
        return None

    # ------------------------------------------------------------------ waiting

    def wait_for(self, predicate: Callable[[], _T | None], timeout: float, what: str = "") -> _T:
        """Block until ``predicate()`` returns something truthy, and return it.

        Raises ``TimeoutError`` after ``timeout`` seconds (listing the last events), and
        ``RuntimeError`` once the log is closed or its producer failed.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seq = self._seq
            result = predicate()
            if result:
                return result
            with self._cond:
                while self._seq == seq:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(self._timeout_message(what or repr(predicate), timeout))
                    self._cond.wait(remaining)
                if self._error is not None:
                    raise RuntimeError(f"{self.name}: producer failed") from self._error
                if self._closed:
                    raise RuntimeError(f"{self.name} stopped while waiting for {what}")

    def wait_event(
        self,
        kind: type[_E],
        timeout: float,
        match: Callable[[_E], bool] | None = None,
        since: int = 0,
    ) -> _E:
        """Wait for (or find already recorded) an event of ``kind`` that ``match`` accepts."""
        return self.wait_for(
            lambda: self.find(kind, match, since), timeout, f"a {kind.__name__} event"
        )

    async def await_for(
        self,
        predicate: Callable[[], _T | None],
        timeout: float,  # noqa: ASYNC109 - also bounds the worker thread
        what: str = "",
    ) -> _T:
        """:meth:`wait_for` from Trio: runs in a worker thread, abandoned if cancelled."""
        return await trio.to_thread.run_sync(
            functools.partial(self.wait_for, predicate, timeout, what), abandon_on_cancel=True
        )

    def _timeout_message(self, what: str, timeout: float) -> str:
        recent = self.events()[-TIMEOUT_EVENTS_SHOWN:]
        shown = "\n  ".join(repr(e)[:200] for e in recent) or "(none)"
        return f"{self.name}: {what} not reached within {timeout} s; last events:\n  {shown}"
