"""Waiting on a :class:`~tunnel.testing.toxcore.ToxPeer` without sleeping in a loop.

A mixin of ``ToxPeer``: the event-log accessors and the ``wait_*`` (sync tests, woken after every
``tox_iterate``) and ``await_*`` (Trio tests, a worker thread abandoned on cancel) helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tunnel.testing.event_log import EventLog
from tunnel.testing.libtoxcore import Connection
from tunnel.testing.toxcore_events import ToxEvent

_T = TypeVar("_T")
_E = TypeVar("_E", bound=ToxEvent)


class ToxPeerWaiting:
    """Event log queries and bounded waits; ``ToxPeer`` provides the state they read."""

    _log_events: EventLog

    # Provided by ToxPeer.
    def self_connection_status(self) -> Connection:
        raise NotImplementedError

    def friend_connection_status(self, friend: int) -> Connection:
        raise NotImplementedError

    # ------------------------------------------------------------------ event log

    def events(self, kind: type[_E] | None = None) -> list[Any]:
        """A snapshot of the recorded events (optionally only those of one class)."""
        return self._log_events.events(kind)

    def event_count(self) -> int:
        """How many events are recorded; pass it as ``since`` to wait for newer ones."""
        return self._log_events.count()

    def find_event(
        self, kind: type[_E], match: Callable[[_E], bool] | None = None, since: int = 0
    ) -> _E | None:
        """The first recorded event of ``kind`` (index >= ``since``) that ``match`` accepts."""
        return self._log_events.find(kind, match, since)

    # ------------------------------------------------------------------ waiting

    def wait_for(self, predicate: Callable[[], _T | None], timeout: float, what: str = "") -> _T:
        """Block until ``predicate()`` returns something truthy; return it.

        The predicate is re-evaluated after every ``tox_iterate`` (and when events arrive),
        never while any lock is held, so it may call this peer's API. Raises
        ``TimeoutError`` after ``timeout`` seconds and ``RuntimeError`` if the peer is
        killed or its iteration thread failed.
        """
        return self._log_events.wait_for(predicate, timeout, what)

    def wait_event(
        self,
        kind: type[_E],
        timeout: float,
        match: Callable[[_E], bool] | None = None,
        since: int = 0,
    ) -> _E:
        """Wait for (or find already recorded) an event of ``kind`` accepted by ``match``."""
        return self._log_events.wait_event(kind, timeout, match, since)

    def wait_self_connected(self, timeout: float) -> Connection:
        """Wait until ``tox_self_get_connection_status`` is not NONE; return it."""
        return self.wait_for(self._self_connected, timeout, "self connection")

    def wait_friend_connected(
        self, friend: int, timeout: float, via: Connection | None = None
    ) -> Connection:
        """Wait until ``friend`` is connected (over ``via`` if given); return the transport."""
        predicate, what = self._friend_connected(friend, via)
        return self.wait_for(predicate, timeout, what)

    def _self_connected(self) -> Connection | None:
        return self.self_connection_status() or None

    def _friend_connected(
        self, friend: int, via: Connection | None
    ) -> tuple[Callable[[], Connection | None], str]:
        def connected() -> Connection | None:
            status = self.friend_connection_status(friend)
            if status is Connection.NONE or (via is not None and status is not via):
                return None
            return status

        return connected, f"friend {friend} connected" + (f" over {via.name}" if via else "")

    async def await_for(
        self,
        predicate: Callable[[], _T | None],
        timeout: float,  # noqa: ASYNC109 - also bounds the worker thread
        what: str = "",
    ) -> _T:
        """:meth:`wait_for` for Trio code (runs in a worker thread, abandoned on cancel)."""
        return await self._log_events.await_for(predicate, timeout, what)

    async def await_event(
        self,
        kind: type[_E],
        timeout: float,  # noqa: ASYNC109
        match: Callable[[_E], bool] | None = None,
        since: int = 0,
    ) -> _E:
        """:meth:`wait_event` for Trio code."""
        return await self.await_for(
            lambda: self.find_event(kind, match, since), timeout, f"a {kind.__name__} event"
        )

    async def await_friend_connected(
        self,
        friend: int,
        timeout: float,  # noqa: ASYNC109
        via: Connection | None = None,
    ) -> Connection:
        """:meth:`wait_friend_connected` for Trio code."""
        predicate, what = self._friend_connected(friend, via)
        return await self.await_for(predicate, timeout, what)

    async def await_self_connected(self, timeout: float) -> Connection:  # noqa: ASYNC109
        """:meth:`wait_self_connected` for Trio code."""
        return await self.await_for(self._self_connected, timeout, "self connection")
