"""ImageService, the read path: cache tiers -> single-flight -> cluster lease -> origin.

Knows no aiohttp. Every answer says which layer produced it (``Served.layer``);
the web layer turns that into ``X-Cache`` and the counters into metrics.

    get(image_id)
      origin said missing a moment ago                  FALLBACK (no I/O at all)
      tiers: fresh in memory / on disk                  HIT-MEMORY, HIT-DISK
      single-flight on the cache key                    (joiners: COALESCED)
        cluster lease: another replica fetching? wait for its result
        origin fetch (If-None-Match with the stale copy's validator)
          new bytes -> both tiers                       MISS
          304 -> renewed freshness                      REVALIDATED
      origin failed + stale copy                        STALE (refreshed in background)
      origin says missing                               FALLBACK (copy purged, miss
                                                        remembered for negative_ttl)
      origin object refused (not an image, too large)   502, remembered for negative_ttl
                                                        (cache/refusals.py) like a miss

A copy the tiers do not trust (a purge may have been missed since the origin
confirmed it, see TieredCache.distrust) is revalidated like an expired one, and
never served as STALE: a purged picture must not come back when the origin fails.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from gateway.cache.refusals import Refusals
from gateway.cache.tiers import TieredCache
from gateway.cluster.fill import Failed
from gateway.cluster.lease import ClusterFlight
from gateway.errors import Busy, NotFound, OriginError, OriginTimeout
from gateway.model import Blob, Entry, FileBlob, Layer, ObjectMeta, Served, make_meta
from gateway.observe.counters import Stats
from gateway.origin import NotModified, Origin
from gateway.origin.presign import SignedUrl
from gateway.service.refresh import Refresher
from gateway.singleflight import SingleFlight

log = logging.getLogger(__name__)

# What one origin round trip produced: new bytes, or fresh metadata for the
# bytes the caller already holds (the origin answered 304).
FlightResult = Blob | ObjectMeta


class ImageService:
    def __init__(self, *, cache: TieredCache, origin: Origin, cluster: ClusterFlight,
                 flights: SingleFlight[FlightResult], stats: Stats, fallback: Blob | None,
                 ttl: float, ttl_jitter: float = 0.0, refresh_ahead: float = 0.0,
                 refusals: Refusals | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.refusals = refusals if refusals is not None else Refusals(0, 0, stats)
        self.origin = origin
        self.cluster = cluster
        self.flights = flights
        self.stats = stats
        self.fallback = fallback
        self.ttl = ttl
        self.ttl_jitter = ttl_jitter
        self.refresh_ahead = refresh_ahead
        self.clock = clock
        self.refresher = Refresher(flights, self._fetch)

    def _entry_ttl(self) -> float:
        if not self.ttl_jitter:
            return self.ttl
        # Spread expiries so entries cached in one burst are not revalidated in one burst.
        return self.ttl * (1 - random.uniform(0, self.ttl_jitter))

    # -- the read path ------------------------------------------------------------

    def from_memory(self, image_id: str) -> Served | None:
        """The hot path, no coroutine: a fresh memory copy of ``image_id``, or None
        (then ``beyond_memory``). Counts the hit; a miss is counted there."""
        key = self.cache.key_for(image_id)
        now = self.clock()
        blob = self.cache.fresh_in_memory(key, now)
        if blob is None:
            return None
        self.stats.memory.hits += 1
        if blob.meta.expires_at - now < self.refresh_ahead:
            self.refresher.soon(image_id, key, blob)
        return Served(Layer.MEMORY, blob)

    async def get(self, image_id: str) -> Served:
        """The bytes of ``image_id`` (already validated) from the nearest layer."""
        return self.from_memory(image_id) or await self.beyond_memory(image_id)

    async def beyond_memory(self, image_id: str) -> Served:
        """``get`` once ``from_memory`` found no fresh copy: disk, else the origin."""
        key = self.cache.key_for(image_id)
        now = self.clock()
        stats = self.stats
        stats.memory.misses += 1
        if self.cache.known_missing(key, now):
            stats.negative_hits += 1
            return self._fallback()
        found = await self.cache.lookup(key, now)  # memory has no fresh copy: disk or none
        hit = found.hit
        if hit is not None:
            stats.disk.hits += 1
            entry = hit.entry
            if isinstance(entry, Blob) and entry.meta.expires_at - now < self.refresh_ahead:
                self.refresher.soon(image_id, key, entry)
            return hit
        if found.disk_missed:
            stats.disk.misses += 1
        return await self._from_origin(image_id, key, found.stale, now)

    async def _from_origin(self, image_id: str, key: str, stale: Entry | None,
                           asked: float) -> Served:
        validator = stale.meta.origin_etag if stale is not None else None
        try:
            self.refusals.raise_remembered(key, asked, self.cache.trusted_since)
            result, joined = await self.flights.run(
                key, lambda: self._fetch(image_id, key, validator, stale))
        except NotFound:
            _close(stale)
            self.cache.remember_missing(key, asked)
            return self._fallback()
        except (OriginError, Busy) as exc:
            self.refusals.remember(key, asked, exc)
            if stale is None or not self.cache.trusted(stale.meta):
                _close(stale)
                raise
            self.stats.stale_served += 1
            log.info("origin failed for %s; serving stale copy", image_id)
            if isinstance(stale, Blob):
                self.refresher.soon(image_id, key, stale, retry=True)
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
            entry = await self.cache.any_copy(key)
            if entry is None:  # evicted in between: fetch it outright
                return await self._from_origin(image_id, key, None, asked)
            return Served(layer, entry)
        if isinstance(stale, Blob):
            return Served(layer, Blob(result, stale.body))
        return Served(layer, FileBlob(result, stale.file, stale.offset))

    async def _fetch(self, image_id: str, key: str, validator: str | None,
                     stale: Entry | None) -> FlightResult:
        """The leader's work: one origin round trip for the whole cluster, then fill
        the layers. Without Redis the lease is never held: the local flight alone."""
        lease = await self.cluster.acquire(key)
        if lease is False:
            landed = await self.cluster.wait(key, lambda: self.cache.fresh_on_disk(key))
            if landed is not None:
                if landed.blob is None:
                    raise NotFound()
                if isinstance(landed.blob, Failed):
                    raise (OriginTimeout if landed.blob.status == 504 else OriginError)(
                        "another replica's fetch of it failed just now")
                self.stats.cluster_joins += 1
                await self.cache.adopt(key, landed.blob)
                return landed.blob
            lease = None  # the holder gave no result: fetch ourselves
        if lease is None:
            return await self._fetch_origin(image_id, key, validator, stale)
        result: FlightResult | None = None
        missing, failed = False, 0
        try:
            result = await self._fetch_origin(image_id, key, validator, stale)
            return result
        except NotFound:
            missing = True
            raise
        except OriginError as exc:
            failed = exc.status
            raise
        finally:
            await self.cluster.release(lease, result if isinstance(result, Blob) else None,
                                       missing=missing, failed=failed)

    async def _fetch_origin(self, image_id: str, key: str, validator: str | None,
                            stale: Entry | None) -> FlightResult:
        self.stats.origin_fetches += 1
        # The bytes are known current as of when we asked, not when the answer came:
        # a purge in between must not be taken as already covered (TieredCache.trusted).
        asked = self.clock()
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
            if self.refusals.is_refusal(image_id, exc):
                raise
            log.warning("origin fetch of %s failed: %s", image_id, exc.detail)
            raise
        if isinstance(fetched, NotModified):
            assert stale is not None
            self.stats.origin_not_modified += 1
            meta = stale.meta.revalidated(asked, self._entry_ttl())
            await self.cache.renew(key, stale, meta)
            return meta
        self.stats.bytes_from_origin += len(fetched.body)
        meta = make_meta(fetched.body, fetched.content_type, fetched.last_modified, asked,
                         self._entry_ttl(), fetched.origin_etag)
        blob = Blob(meta, fetched.body)
        await self.cache.store(key, blob)
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
        """A direct URL for the old API, for what ``get`` would serve only: NotFound
        when the object does not exist, UnsupportedMedia or TooLarge (502) for what the
        image route refuses. A fresh copy in memory passed those checks already; else
        the origin is probed (the object's first bytes, not all of it)."""
        key = self.cache.key_for(image_id)
        now = self.clock()
        if self.cache.known_missing(key, now):
            self.stats.negative_hits += 1
            raise NotFound()
        cached = self.cache.in_memory(key)
        if cached is None or not self.cache.fresh(cached.meta, now):
            self.refusals.raise_remembered(key, now, self.cache.trusted_since)
            try:
                await self.origin.probe(image_id)
            except NotFound:
                self.cache.remember_missing(key, now)
                raise
            except OriginError as exc:
                if self.refusals.is_refusal(image_id, exc):
                    self.refusals.remember(key, now, exc)
                raise
        return await self.origin.url(image_id)

    async def cached(self, image_id: str) -> bool:
        """Whether a fresh copy is in memory or on disk (no origin I/O)."""
        return await self.cache.has_fresh(self.cache.key_for(image_id))

    def version_of(self, image_id: str) -> int:
        return self.cache.version_of(image_id)

    def distrust(self) -> None:
        """Purges may have been missed until now: revalidate every copy the origin
        confirmed before now (see TieredCache.distrust)."""
        self.stats.resyncs += 1
        self.cache.distrust(self.clock())

    async def purge_local(self, image_id: str, version: int | None = None) -> None:
        """Drop every cached version and variant of one image from this process
        (see TieredCache.purge), and its background refresh."""
        if version is not None and version == self.cache.version_of(image_id):
            return
        self.refresher.cancel(self.cache.key_for(image_id))
        await self.cache.purge(image_id, version)

    async def close(self) -> None:
        await self.refresher.close()
        await self.flights.close()


def _close(entry: Entry | None) -> None:
    if entry is not None:
        entry.close()
