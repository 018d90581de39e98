"""Variants of cached originals, kept in the same tiers (docs/variants.md).

``VariantService`` keeps variants in the same memory and disk layers as the
originals, under ``cache.key_for(image, spec.token)``: a purge of the image
(which drops every key of it and bumps its version) drops every variant too,
on every replica. On a miss it single-flights per key: the original comes from
``ImageService.get`` (tiers -> single-flight -> origin, so the origin is asked
once however many variants are made), the pixels are worked in the
``TransformPool``, and the variant is stored with its own strong ETag (digest of
its bytes).

A variant is fresh exactly as long as the original it was made from: it
records that original's ETag (``ObjectMeta.origin_etag``) and inherits its
``expires_at`` and ``stored_at`` (so it is trusted exactly when the original is,
see TieredCache.distrust). When it expires the original is asked again (memory,
disk, or a revalidation with the origin); if its ETag is unchanged the variant
only gets new freshness, without re-encoding.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from multidict import MultiMapping

from gateway.cache.tiers import TieredCache
from gateway.config import TransformConfig
from gateway.errors import NotAnImage, OriginError, TransformError
from gateway.model import Blob, Entry, FileBlob, Layer, Served, cache_key, make_meta
from gateway.origin.content import sniff
from gateway.service import ImageService
from gateway.singleflight import SingleFlight
from gateway.variants.placeholder import render_placeholder
from gateway.variants.spec import VariantRules, VariantSpec, negotiate, wants_variant
from gateway.variants.transform import Rendered, TransformPool, normalise_upload, render

log = logging.getLogger(__name__)

#: Pseudo key of the fallback picture's variants: no key holds a control character.
FALLBACK_ID: Final = "\x00fallback"
#: Remembered request -> variant decisions (``spec_for``): ~0.5 KB each.
_SPECS_MAX: Final = 4096
UPLOAD_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp",
                                 "image/avif"})


@dataclass
class VariantStats:
    memory_hits: int = 0
    disk_hits: int = 0
    transforms: int = 0  # variants rendered
    refreshed: int = 0  # expired variants kept because their original is unchanged
    failed: int = 0  # originals that could not be transformed (422)
    stale_served: int = 0


class VariantService:
    def __init__(self, service: ImageService, cache: TieredCache, pool: TransformPool,
                 rules: VariantRules, *, lock_timeout: float,
                 clock: Callable[[], float] | None = None) -> None:
        self.service = service
        self.cache = cache
        self.pool = pool
        self.rules = rules
        self.config: TransformConfig = rules.config
        self.formats = rules.formats
        self.flights = SingleFlight[Served](lock_timeout)
        self.stats = VariantStats()
        self._clock = clock or service.clock
        self._specs: dict[tuple[str, str | None, tuple[str | None, str | None] | None],
                          VariantSpec | None] = {}

    def parse(self, query: MultiMapping[str],
              headers: Mapping[str, str]) -> VariantSpec:
        return self.rules.parse(query, headers)

    def spec_for(self, query_string: str, query: Callable[[], MultiMapping[str]],
                 headers: Mapping[str, str]) -> VariantSpec | None:
        """The negotiated variant a request asks for, None for the original (no
        variant parameter: ``?v=3`` cache-busters don't count); 400 for values
        outside the rules. Remembered by what decides it (the query as sent,
        ``Accept``, the client hints when honoured), so a hot variant costs a dict
        lookup, not a parse and a negotiation; refusals are not remembered."""
        hints = ((headers.get("Sec-CH-DPR"), headers.get("Sec-CH-Width"))
                 if self.rules.client_hints else None)
        memo = (query_string, headers.get("Accept"), hints)
        try:
            return self._specs[memo]
        except KeyError:
            pass
        parsed = query()
        spec = (self.negotiate(self.rules.parse(parsed, headers), memo[1])
                if wants_variant(parsed) else None)
        if len(self._specs) >= _SPECS_MAX:
            self._specs.clear()
        self._specs[memo] = spec
        return spec

    def negotiate(self, spec: VariantSpec, accept: str | None) -> VariantSpec:
        return negotiate(spec, accept, self.formats)

    # -- reads ----------------------------------------------------------------------

    def from_memory(self, image_id: str, spec: VariantSpec) -> Served | None:
        """The hot path, no coroutine: a fresh memory copy of the variant, else None
        (then ``get``)."""
        blob = self.cache.fresh_in_memory(self.cache.key_for(image_id, spec.token),
                                          self._clock())
        if blob is None:
            return None
        self.stats.memory_hits += 1
        return Served(Layer.MEMORY, blob)

    async def get(self, image_id: str, spec: VariantSpec) -> Served:
        """The variant ``spec`` (negotiated, not identity) of ``image_id`` (validated)."""
        assert spec.negotiated and not spec.identity
        key = self.cache.key_for(image_id, spec.token)
        found = await self.cache.lookup(key, self._clock())
        if found.hit is not None:
            if found.hit.layer is Layer.MEMORY:
                self.stats.memory_hits += 1
            else:
                self.stats.disk_hits += 1
            return found.hit
        stale = found.stale
        if isinstance(stale, FileBlob):  # too large to re-serve as a variant: remake it
            stale.close()
            stale = None
        served, joined = await self.flights.run(
            key, lambda: self._derive(image_id, key, spec, stale))
        return Served(Layer.COALESCED, served.entry) if joined else served

    async def for_unknown(self, spec: VariantSpec) -> Served:
        """The fallback picture as this variant (an unknown user's picture)."""
        return await self._fallback_variant(self.service.fallback_for_unknown().entry, spec)

    async def _derive(self, image_id: str, key: str, spec: VariantSpec,
                      stale: Blob | None) -> Served:
        try:
            source = await self.service.get(image_id)
        except OriginError:
            if stale is None or not self.cache.trusted(stale.meta):
                raise
            self.stats.stale_served += 1
            return Served(Layer.STALE, stale)
        if source.layer is Layer.FALLBACK:
            return await self._fallback_variant(source.entry, spec)
        layer = Layer.STALE if source.layer is Layer.STALE else Layer.MISS
        origin_meta = source.entry.meta
        try:
            if stale is not None and stale.meta.origin_etag == origin_meta.etag:
                # Same original bytes: the variant is still right, it just takes
                # the original's (renewed) freshness.
                renewed = await self.cache.renew(key, stale, replace(
                    stale.meta, stored_at=origin_meta.stored_at,
                    expires_at=origin_meta.expires_at))
                self.stats.refreshed += 1
                return Served(layer, renewed)
            body = await _bytes_of(source.entry)
        finally:
            source.entry.close()
        rendered = await self._render(body, spec)
        now = self._clock()
        meta = make_meta(rendered.body, rendered.content_type, origin_meta.last_modified,
                         now, origin_meta.expires_at - now, origin_etag=origin_meta.etag)
        blob = Blob(replace(meta, stored_at=origin_meta.stored_at), rendered.body)
        await self.cache.store(key, blob)
        return Served(layer, blob)

    async def _fallback_variant(self, fallback: Entry, spec: VariantSpec) -> Served:
        """Variants of the fallback picture live in memory only, under a pseudo id
        that no real image can have; like the fallback itself, they never expire."""
        key = cache_key(FALLBACK_ID, 0, spec.token)
        try:
            blob = self.cache.in_memory(key)
            if blob is None or blob.meta.origin_etag != fallback.meta.etag:
                rendered = await self._render(await _bytes_of(fallback), spec)
                meta = make_meta(rendered.body, rendered.content_type,
                                 fallback.meta.last_modified, self._clock(), float("inf"),
                                 origin_etag=fallback.meta.etag)
                blob = Blob(meta, rendered.body)
                self.cache.remember(key, blob)
        finally:
            fallback.close()
        return Served(Layer.FALLBACK, blob)

    async def _render(self, body: bytes, spec: VariantSpec) -> Rendered:
        geometry = spec.geometry(self.config.enlarge)
        try:
            if spec.placeholder is not None:
                rendered = await self.pool.run(
                    render_placeholder, body, geometry, spec.placeholder,
                    self.config.max_pixels, "webp" if "webp" in self.formats else "jpeg")
            else:
                rendered = await self.pool.run(render, body, geometry, spec.output(),
                                               self.config.max_pixels)
        except TransformError:
            self.stats.failed += 1
            raise
        self.stats.transforms += 1
        return rendered

    # -- uploads ----------------------------------------------------------------------

    async def prepare_upload(self, body: bytes) -> Rendered:
        """An upload as it will be stored: an image by its bytes, cropped and resized
        to ``upload_size`` square, metadata stripped (415 / 422 / 503)."""
        if sniff(body) not in UPLOAD_TYPES:
            raise NotAnImage()
        c = self.config
        fmt = c.upload_format
        if fmt != "original" and fmt not in self.formats:
            fmt = "png"
        return await self.pool.run(normalise_upload, body, c.upload_size, fmt,
                                   c.upload_quality, c.max_pixels)

    def figures(self) -> tuple[dict[str, float], dict[str, float]]:
        """(counters, gauges) for metrics."""
        counters: dict[str, float] = {f"variants.{name}": value
                                      for name, value in vars(self.stats).items()}
        counters["variants.pool_completed"] = self.pool.completed
        counters["variants.pool_rejected"] = self.pool.rejected
        return counters, {"variants.pool_pending": self.pool.pending}

    async def close(self) -> None:
        await self.flights.close()
        await self.pool.close()


async def _bytes_of(entry: Entry) -> bytes:
    if isinstance(entry, Blob):
        return entry.body
    return await asyncio.to_thread(os.pread, entry.file.fileno(), entry.meta.size,
                                   entry.offset)
