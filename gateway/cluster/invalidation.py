"""Purges and alias changes, locally and on every replica (through the bus)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

from gateway.cluster.aliases import AliasStore
from gateway.cluster.bus import InvalidationBus
from gateway.origin.presign import UrlStore

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
    def __init__(self, caches: LocalCaches, bus: InvalidationBus, urls: UrlStore,
                 aliases: AliasStore) -> None:
        self.caches = caches
        self.bus = bus
        self.urls = urls
        self.aliases = aliases
        bus.on_image = self.on_image
        bus.on_user = self.on_user
        bus.on_resync = self.on_resync
        bus.on_gap = self.on_gap

    async def purge(self, image_id: str) -> PurgeResult:
        floor = max(self.caches.version_of(image_id) + 1, time.time_ns() // 1000)
        version = await self.bus.bump(image_id, floor)
        propagated = version is not None
        if version is None:
            version = floor
        await self.urls.delete(image_id)
        await self.caches.purge_local(image_id, version)
        if propagated:
            propagated = await self.bus.publish_image(image_id)
        if not propagated and self.bus.enabled:
            log.warning("purge of %s applied locally only: redis unavailable", image_id)
        return PurgeResult(image_id, version, propagated)

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
