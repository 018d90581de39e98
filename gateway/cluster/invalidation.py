"""Purges and alias changes, locally and on every replica (through the bus).

A purge taken while Redis cannot be reached is applied here at once and answered
``propagated: false``; it is kept and sent to the other replicas as soon as Redis
takes it again. Replicas that kept their own subscription meanwhile would otherwise
never hear of it and serve the purged bytes until their copies expire (replicas
that lost Redis too revalidate everything when they subscribe again: bus.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.cluster.aliases import AliasStore
from gateway.cluster.bus import InvalidationBus
from gateway.observe.counters import Stats
from gateway.observe.throttle import Throttled
from gateway.origin.presign import UrlStore
from gateway.tasks import BackgroundTasks

log = logging.getLogger(__name__)


class LocalCaches(Protocol):
    """What a purge needs of this process's caches (the image service)."""

    def version_of(self, image_id: str) -> int: ...

    async def purge_local(self, image_id: str, version: int | None = None) -> None: ...

    def distrust(self) -> None: ...


@dataclass(frozen=True)
class PurgeResult:
    image_id: str
    version: int
    propagated: bool  # False: Redis unavailable, other replicas were not told


class Invalidator:
    #: Purges kept for sending while Redis is away; past this the oldest is given up
    #: (counted and logged): a bound on memory, far above any real outage's purges.
    max_unsent = 10_000
    #: Seconds between attempts to send them while Redis is away.
    resend_interval = 1.0

    def __init__(self, caches: LocalCaches, bus: InvalidationBus, urls: UrlStore,
                 aliases: AliasStore, stats: Stats | None = None) -> None:
        self.caches = caches
        self.bus = bus
        self.urls = urls
        self.aliases = aliases
        self.stats = stats or Stats()
        # key -> the number of the local-only purge it waits for: one sent after a
        # newer local purge of the same key began must not drop that one.
        self._unsent: dict[str, int] = {}
        self._numbers = itertools.count()
        self._tasks = BackgroundTasks("purge-resend")
        self._given_up = Throttled(log)
        bus.on_image = self.on_image
        bus.on_user = self.on_user
        bus.on_resync = self.on_resync
        bus.on_gap = self.on_gap

    async def purge(self, image_id: str) -> PurgeResult:
        floor = self._next_version(image_id)
        version = await self.bus.bump(image_id, floor)
        propagated = version is not None
        if version is None:
            version = floor
        await self.urls.delete(image_id)
        await self.caches.purge_local(image_id, version)
        if propagated:
            propagated = await self.bus.publish_image(image_id)
        if propagated:
            self._unsent.pop(image_id, None)  # this purge is newer than the kept one
        elif self.bus.enabled:
            log.warning("purge of %s applied locally only: redis unavailable; sent to "
                        "the other replicas when it is back", image_id)
            self._keep_unsent(image_id)
        return PurgeResult(image_id, version, propagated)

    @property
    def unsent(self) -> int:
        """Purges applied here that the other replicas have not been told of yet."""
        return len(self._unsent)

    async def close(self) -> None:
        await self._tasks.cancel_all()

    def _keep_unsent(self, image_id: str) -> None:
        self._unsent.pop(image_id, None)
        self._unsent[image_id] = next(self._numbers)
        while len(self._unsent) > self.max_unsent:
            oldest = next(iter(self._unsent))
            del self._unsent[oldest]
            self.stats.purges_given_up += 1
            self._given_up.log(logging.WARNING, "gave up sending the local purge of %s to "
                               "the other replicas: over %d purges waiting for redis",
                               oldest, self.max_unsent)
        self._tasks.spawn(self._resend(), key="resend")

    async def _resend(self) -> None:
        while self._unsent:
            await asyncio.sleep(self.resend_interval)
            for image_id, number in list(self._unsent.items()):
                if not await self._send(image_id):
                    break  # still away: try again after the interval
                if self._unsent.get(image_id) == number:
                    del self._unsent[image_id]
                self.stats.purges_resent += 1
        log.info("purges taken here while redis was unavailable reached the other replicas")

    def _next_version(self, image_id: str) -> int:
        """The least version a purge of ``image_id`` may take: above this process's,
        and the time in µs (above any a Redis that lost its data could hand out)."""
        return max(self.caches.version_of(image_id) + 1, time.time_ns() // 1000)

    async def _send(self, image_id: str) -> bool:
        """A new cluster-wide version for ``image_id`` and the message: every replica
        (this one too, through its subscription) drops its copy."""
        if await self.bus.bump(image_id, self._next_version(image_id)) is None:
            return False
        return await self.bus.publish_image(image_id)

    async def set_alias(self, user_id: str, image_id: str) -> bool:
        await self.aliases.set(user_id, image_id)
        return await self.bus.publish_user(user_id)

    async def delete_alias(self, user_id: str) -> bool:
        await self.aliases.delete(user_id)
        return await self.bus.publish_user(user_id)

    # -- what other replicas told us ------------------------------------------------

    async def on_image(self, image_id: str, version: int) -> None:
        await self.caches.purge_local(image_id, version if version >= 0 else None)

    async def on_user(self, user_id: str) -> None:
        self.aliases.forget(user_id)

    def on_gap(self) -> None:
        """A new subscription: purges published before it may never reach us, and
        Redis may have lost the versions that would tell."""
        self.caches.distrust()

    async def on_resync(self, versions: dict[str, int]) -> None:
        """After (re)subscribing: apply every purge we may have missed."""
        self.aliases.forget_all()
        missed = [(i, v) for i, v in versions.items() if v > self.caches.version_of(i)]
        for image_id, version in missed:
            await self.caches.purge_local(image_id, version)
        if missed:
            log.info("applied %d purges missed while disconnected", len(missed))
