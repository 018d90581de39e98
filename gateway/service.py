"""ImageService: memory -> disk -> single-flight -> origin. Knows no aiohttp.

Every answer says which layer produced it (``Served.layer``); the web layer
turns that into ``X-Cache`` and the counters into metrics.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.cluster.lease import ClusterFlight
from gateway.errors import Busy, NotFound, OriginError
from gateway.model import Blob, Entry, FileBlob, ObjectMeta, cache_key, make_meta
from gateway.observe.counters import Stats
from gateway.origin import NotModified, Origin
from gateway.origin.content import checked_type
from gateway.origin.presign import SignedUrl
from gateway.singleflight import SingleFlight

log = logging.getLogger(__name__)


class Layer(StrEnum):
    MEMORY = "HIT-MEMORY"
    DISK = "HIT-DISK"
    MISS = "MISS"
    REVALIDATED = "REVALIDATED"  # the origin confirmed our expired copy (304): no download
    COALESCED = "COALESCED"
    STALE = "STALE"
    FALLBACK = "FALLBACK"


@dataclass(frozen=True, slots=True)
class Served:
    layer: Layer
    entry: Entry


# What one origin round trip produced: new bytes, or fresh metadata for the
# bytes the caller already holds (the origin answered 304).
FlightResult = Blob | ObjectMeta


class ImageService:
    def __init__(self, *, memory: MemoryCache, disk: DiskCache | None, origin: Origin,
                 flights: SingleFlight[FlightResult], stats: Stats, fallback: Blob | None,
                 ttl: float, ttl_jitter: float = 0.0, refresh_ahead: float = 0.0,
                 cluster: ClusterFlight | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.refresh_ahead = refresh_ahead
        self._background: dict[str, asyncio.Task[None]] = {}
        self.memory = memory
        self.disk = disk
        self.origin = origin
        self.flights = flights
        self.stats = stats
        self.fallback = fallback
        self.ttl = ttl
        self.ttl_jitter = ttl_jitter
        self.clock = clock
        # Bumped by invalidation; part of every cache key, so a fetch that was
        # in flight during a purge lands under a key nobody asks for any more.
        self.versions: dict[str, int] = {}

    def key_for(self, image_id: str) -> str:
        return cache_key(image_id, self.versions.get(image_id, 0))

    def _entry_ttl(self) -> float:
        if not self.ttl_jitter:
            return self.ttl
        # Spread expiries so entries cached in one burst are not revalidated in one burst.
        return self.ttl * (1 - random.uniform(0, self.ttl_jitter))

    # -- the read path ------------------------------------------------------------

    async def get(self, image_id: str) -> Served:
        """The bytes of ``image_id`` (already validated) from the nearest layer."""
        key = self.key_for(image_id)
        now = self.clock()
        blob = self.memory.get_nowait(key)
        if blob is not None and blob.meta.fresh(now):
            self.stats.memory.hits += 1
            if blob.meta.expires_at - now < self.refresh_ahead:
                self._refresh_soon(image_id, key, blob)
            return Served(Layer.MEMORY, blob)
        self.stats.memory.misses += 1
        stale: Entry | None = blob

        if self.disk is not None:
            entry = await self.disk.get(key)
            if entry is not None and entry.meta.fresh(now):
                self.stats.disk.hits += 1
                if isinstance(entry, Blob):
                    self.memory.put_nowait(key, entry)
                    if entry.meta.expires_at - now < self.refresh_ahead:
                        self._refresh_soon(image_id, key, entry)
                return Served(Layer.DISK, entry)
            self.stats.disk.misses += 1
            if entry is not None:
                if stale is None:
                    stale = entry
                else:
                    _close(entry)
        return await self._from_origin(image_id, key, stale)

    async def _from_origin(self, image_id: str, key: str, stale: Entry | None) -> Served:
        validator = stale.meta.origin_etag if stale is not None else None
        try:
            result, joined = await self.flights.run(
                key, lambda: self._fetch(image_id, key, validator, stale))
        except NotFound:
            _close(stale)
            return self._fallback()
        except (OriginError, Busy):
            if stale is None:
                raise
            self.stats.stale_served += 1
            log.info("origin failed for %s; serving stale copy", image_id)
            if isinstance(stale, Blob):
                self._refresh_soon(image_id, key, stale, retry=True)
            return Served(Layer.STALE, stale)
        except BaseException:
            _close(stale)
            raise
        if joined:
            self.stats.coalesced += 1
        layer = Layer.COALESCED if joined else Layer.MISS
        if isinstance(result, Blob):
            _close(stale)
            return Served(layer, result)
        # 304: the bytes this caller already holds are current, with new freshness.
        if not joined:
            layer = Layer.REVALIDATED
        if stale is None or stale.meta.digest != result.digest:
            # A joiner without the leader's stale copy: read what the leader refreshed.
            _close(stale)
            return await self._reread(key, layer, image_id)
        if isinstance(stale, FileBlob):
            return Served(layer, FileBlob(result, stale.file, stale.offset))
        return Served(layer, Blob(result, stale.body))

    async def _reread(self, key: str, layer: Layer, image_id: str) -> Served:
        blob = self.memory.get_nowait(key)
        if blob is not None:
            return Served(layer, blob)
        if self.disk is not None:
            entry = await self.disk.get(key)
            if entry is not None:
                return Served(layer, entry)
        # The refreshed copy was evicted in between: fetch it outright.
        return await self._from_origin(image_id, key, None)

    async def _fetch(self, image_id: str, key: str, validator: str | None,
                     stale: Entry | None) -> FlightResult:
        """The leader's work: one origin round trip for the whole cluster, then fill
        the layers. Without Redis this is the local single-flight alone."""
        if self.cluster is None:
            return await self._fetch_origin(image_id, key, validator, stale)
        lease = await self.cluster.acquire(key)
        if lease is False:
            landed = await self.cluster.wait(key, lambda: self._landed_locally(key))
            if landed is not None:
                if landed.blob is None:
                    raise NotFound()
                self.stats.cluster_joins += 1
                self.memory.put_nowait(key, landed.blob)
                if self.disk is not None and not await self._on_disk(key):
                    await self.disk.put(key, landed.blob)
                return landed.blob
            lease = None  # the holder gave no result: fetch ourselves
        if lease is None:
            return await self._fetch_origin(image_id, key, validator, stale)
        result: FlightResult | None = None
        missing = False
        try:
            result = await self._fetch_origin(image_id, key, validator, stale)
            return result
        except NotFound:
            missing = True
            raise
        finally:
            await self.cluster.release(lease, result if isinstance(result, Blob) else None,
                                       missing=missing)

    async def _landed_locally(self, key: str) -> Blob | None:
        """The lease holder's bytes, when our disk is the one it wrote to."""
        if self.disk is None:
            return None
        entry = await self.disk.get(key)
        if isinstance(entry, Blob) and entry.meta.fresh(self.clock()):
            return entry
        _close(entry)
        return None

    async def _on_disk(self, key: str) -> bool:
        assert self.disk is not None
        entry = await self.disk.get(key)
        _close(entry)
        return entry is not None

    async def _fetch_origin(self, image_id: str, key: str, validator: str | None,
                            stale: Entry | None) -> FlightResult:
        self.stats.origin_fetches += 1
        try:
            fetched = await self.origin.fetch(image_id, validator)
        except NotFound:
            self.stats.origin_not_found += 1
            if stale is not None:
                # It was cached, and now it's gone at the origin: deleted, not stale.
                await self.purge_local(image_id)
            raise
        except OriginError as exc:
            self.stats.origin_errors += 1
            log.warning("origin fetch of %s failed: %s", image_id, exc.detail)
            raise
        now = self.clock()
        if isinstance(fetched, NotModified):
            assert stale is not None
            self.stats.origin_not_modified += 1
            meta = stale.meta.revalidated(now, self._entry_ttl())
            if isinstance(stale, Blob):
                self.memory.put_nowait(key, Blob(meta, stale.body))
            if self.disk is not None:
                await self.disk.refresh(key, meta)
            return meta
        self.stats.bytes_from_origin += len(fetched.body)
        meta = make_meta(fetched.body, fetched.content_type, fetched.last_modified, now,
                         self._entry_ttl(), fetched.origin_etag)
        blob = Blob(meta, fetched.body)
        self.memory.put_nowait(key, blob)
        if self.disk is not None:
            await self.disk.put(key, blob)
        return blob

    def fallback_for_unknown(self) -> Served:
        """The fallback answer for a name that resolves to no image (unknown user)."""
        return self._fallback()

    def _fallback(self) -> Served:
        if self.fallback is None:
            raise NotFound()
        self.stats.fallback_served += 1
        return Served(Layer.FALLBACK, self.fallback)

    # -- other operations ---------------------------------------------------------

    async def url(self, image_id: str) -> SignedUrl | None:
        """A direct URL for the old API; NotFound when the object does not exist."""
        key = self.key_for(image_id)
        cached = self.memory.get_nowait(key)
        if cached is None or not cached.meta.fresh(self.clock()):
            await self.origin.head(image_id)
        return await self.origin.url(image_id)

    async def cached(self, image_id: str) -> bool:
        """Whether a fresh copy is in memory or on disk (no origin I/O)."""
        key = self.key_for(image_id)
        blob = self.memory.get_nowait(key)
        if blob is not None and blob.meta.fresh(self.clock()):
            return True
        if self.disk is None:
            return False
        entry = await self.disk.get(key)
        _close(entry)
        return entry is not None and entry.meta.fresh(self.clock())

    async def purge_local(self, image_id: str, version: int | None = None) -> None:
        """Drop every cached version and variant of one image from this process.

        Later reads use a key no earlier read used: ``version`` when it is newer
        than ours, else our version + 1. A fetch in flight during the purge then
        lands under a key nobody asks for any more. ``version`` equal to ours is a
        purge already applied here (our own message coming back): nothing to do.
        """
        current = self.versions.get(image_id, 0)
        if version is not None and version == current:
            return
        task = self._background.pop(self.key_for(image_id), None)
        if task is not None:
            task.cancel()
        self.versions[image_id] = (version if version is not None and version > current
                                   else current + 1)
        await self.memory.purge(image_id)
        if self.disk is not None:
            await self.disk.purge(image_id)

    # -- background refresh ---------------------------------------------------------

    def _refresh_soon(self, image_id: str, key: str, current: Blob,
                      retry: bool = False) -> None:
        """Revalidate in the background while the current copy is served: before it
        expires (stale-while-revalidate), or, after an origin failure, with backoff
        until the origin answers."""
        if key in self._background or self.flights.in_flight(key):
            return
        task = asyncio.get_running_loop().create_task(
            self._refresh(image_id, key, current, retry), name=f"refresh:{key}")
        self._background[key] = task
        task.add_done_callback(lambda _: self._background.pop(key, None))

    async def _refresh(self, image_id: str, key: str, current: Blob, retry: bool) -> None:
        delay = 1.0
        while True:
            try:
                await self.flights.run(key, lambda: self._fetch(
                    image_id, key, current.meta.origin_etag, current))
                return
            except NotFound:
                return  # _fetch purged it
            except OriginError:
                if not retry:
                    return
            except Exception:
                log.exception("background refresh of %s failed", image_id)
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, self.max_refresh_backoff)

    max_refresh_backoff = 60.0

    async def close(self) -> None:
        tasks = list(self._background.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flights.close()


def _close(entry: Entry | None) -> None:
    if isinstance(entry, FileBlob):
        entry.file.close()


def load_fallback(path: str, *, allowed: frozenset[str]) -> Blob:
    """Read the configured fallback picture once, at start-up."""
    file = Path(path)
    body = file.read_bytes()
    content_type = checked_type(body, None, allowed)
    return Blob(make_meta(body, content_type, int(file.stat().st_mtime), time.time(),
                          float("inf")), body)
