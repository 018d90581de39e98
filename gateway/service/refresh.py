"""Background revalidation of a copy that is being served: before it expires
(stale-while-revalidate), or, after an origin failure, with backoff until the
origin answers. At most one per cache key, and none while a request's own fetch
of that key is in flight."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from gateway.errors import NotFound, OriginError
from gateway.model import Blob
from gateway.singleflight import SingleFlight
from gateway.tasks import BackgroundTasks

log = logging.getLogger(__name__)

T = TypeVar("T")


class Refresher(Generic[T]):
    max_backoff = 60.0

    def __init__(self, flights: SingleFlight[T],
                 fetch: Callable[[str, str, str | None, Blob], Awaitable[T]]) -> None:
        """``fetch(image_id, key, validator, current)``: the service's one origin round
        trip for a key, run in ``flights`` so that requests join it."""
        self._flights = flights
        self._fetch = fetch
        self._tasks = BackgroundTasks("refresh")

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: str) -> bool:
        return self._tasks.running(key)

    def soon(self, image_id: str, key: str, current: Blob, retry: bool = False) -> None:
        if self._tasks.running(key) or self._flights.in_flight(key):
            return
        self._tasks.spawn(self._refresh(image_id, key, current, retry), key=key)

    def cancel(self, key: str) -> None:
        self._tasks.cancel(key)

    async def close(self) -> None:
        await self._tasks.cancel_all()

    async def _refresh(self, image_id: str, key: str, current: Blob, retry: bool) -> None:
        delay = 1.0
        while True:
            try:
                await self._flights.run(key, lambda: self._fetch(
                    image_id, key, current.meta.origin_etag, current))
                return
            except NotFound:
                return  # the fetch purged it
            except OriginError:
                if not retry:
                    return
            except Exception:
                log.exception("background refresh of %s failed", image_id)
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_backoff)
