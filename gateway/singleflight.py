"""Collapse concurrent work for one key into one task ("store the task, not the value").

The task runs detached from whoever started it: a caller that is cancelled or
gives up stops waiting but does not cancel the work others still wait for.
A finished task, success or failure, leaves the table at once, so failures are
never cached. A flight older than ``lock_timeout`` is abandoned: its waiters get
``Busy`` and the next caller starts a fresh flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.errors import LockTimeout
from gateway.tasks import BackgroundTasks

T = TypeVar("T")
log = logging.getLogger(__name__)


class _Flight(Generic[T]):
    __slots__ = ("deadline", "task")

    def __init__(self, task: asyncio.Task[T], deadline: float) -> None:
        self.task = task
        self.deadline = deadline


class SingleFlight(Generic[T]):
    def __init__(self, lock_timeout: float) -> None:
        self.lock_timeout = lock_timeout
        self._flights: dict[str, _Flight[T]] = {}
        self._abandoned = BackgroundTasks("singleflight-abandoned")

    def __len__(self) -> int:
        return len(self._flights)

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Result of ``work`` for ``key`` and whether this caller joined another's flight."""
        loop = asyncio.get_running_loop()
        flight = self._flights.get(key)
        joined = flight is not None and loop.time() < flight.deadline
        if flight is None or not joined:
            if flight is not None:
                self._abandon(key, flight)
            flight = self._start(key, work, loop)
        remaining = max(flight.deadline - loop.time(), 0.0)
        try:
            # shield: a waiter's cancellation or timeout must not cancel the shared task.
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancellation that
            # lands after the task finished, and a cancelled refresh loop kept going.
            async with asyncio.timeout(remaining):
                result = await asyncio.shield(flight.task)
        except TimeoutError:
            if not flight.task.done():
                self._abandon(key, flight)
                raise LockTimeout() from None
            raise
        return result, joined

    def _start(self, key: str, work: Callable[[], Awaitable[T]],
               loop: asyncio.AbstractEventLoop) -> _Flight[T]:
        async def runner() -> T:
            return await work()

        task = loop.create_task(runner(), name=f"singleflight:{key}")
        flight = _Flight(task, loop.time() + self.lock_timeout)
        self._flights[key] = flight

        def done(t: asyncio.Task[T]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not t.cancelled():
                t.exception()  # retrieved here so an unawaited failure is not logged as lost

        task.add_done_callback(done)
        return flight

    def _abandon(self, key: str, flight: _Flight[T]) -> None:
        # The hung task keeps running (its own I/O timeouts end it); it just stops
        # being the flight that newcomers join.
        if self._flights.get(key) is flight:
            del self._flights[key]
            log.warning("single-flight for %s exceeded the lock timeout; abandoned", key)
        if not flight.task.done():
            self._abandoned.adopt(flight.task)

    async def close(self) -> None:
        tasks = [f.task for f in self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._abandoned.cancel_all()
        self._flights.clear()
