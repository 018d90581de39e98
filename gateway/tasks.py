"""Background tasks owned by one component: tracked, optionally keyed, ended on close.

A task started with ``asyncio.create_task`` and not referenced can be garbage
collected mid-flight, and one nobody waits for at shutdown leaves its work (a
temp file, a Redis call) half done. Every component that runs work beside the
request path keeps its tasks here, so that each such task is referenced until it
ends, at most one runs per key, and ``close`` either waits for them or cancels
them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundTasks:
    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keyed: dict[Hashable, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: Hashable) -> bool:
        return key in self._keyed

    def spawn(self, coro: Coroutine[Any, Any, Any], key: Hashable | None = None
              ) -> asyncio.Task[Any] | None:
        """Run ``coro`` beside the caller; with a ``key``, only if none runs for it
        (then the coroutine is closed unstarted and None returned)."""
        if key is not None and key in self._keyed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{key or ''}")
        self.adopt(task, key)
        return task

    def adopt(self, task: asyncio.Task[Any], key: Hashable | None = None) -> None:
        """Track a task started elsewhere until it ends."""
        self._tasks.add(task)
        if key is not None:
            self._keyed[key] = task

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if key is not None and self._keyed.get(key) is t:
                del self._keyed[key]

        task.add_done_callback(done)

    def cancel(self, key: Hashable) -> None:
        task = self._keyed.pop(key, None)
        if task is not None:
            task.cancel()

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end even if the caller is cancelled meanwhile."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:shielded")
        self.adopt(task)
        return await asyncio.shield(task)

    async def wait(self) -> None:
        """Until every task has ended (their failures are not raised here)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def cancel_all(self) -> None:
        """Cancel every task and wait until they have ended."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._keyed.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
