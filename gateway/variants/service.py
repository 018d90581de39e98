"""Sized and re-encoded variants of cached originals (docs/variants.md).

``parse_spec`` turns the query (``w``, ``h``, ``fit``, ``format``, ``q``) into a
``VariantSpec`` checked against the ``[transform]`` allowlists; ``negotiate``
resolves ``format=auto`` from ``Accept``. A resolved spec has one canonical
``token``, so equivalent queries (parameter order, ``format=jpg`` vs ``jpeg``,
``fit`` without both sides, ``q`` for PNG, ``format=auto`` vs the format it
resolved to) share one cache entry and one ETag.

``VariantService`` keeps variants in the same memory and disk layers as the
originals, under ``cache_key(image, version, token)``: a purge of the image
(which drops every key of it and bumps its version) drops every variant too,
on every replica. On a miss it single-flights per key: the original comes from
``ImageService.get`` (layers -> single-flight -> origin, so the origin is asked
once however many variants are made), the pixels are worked in the
``TransformPool``, and the variant is stored with its own strong ETag (digest of
its bytes).

A variant is fresh exactly as long as the original it was made from: it
records that original's ETag (``ObjectMeta.origin_etag``) and inherits its
``expires_at``. When it expires the original is asked again (memory, disk, or a
revalidation with the origin); if its ETag is unchanged the variant only gets
new freshness, without re-encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from multidict import MultiMapping

from gateway.config import Config, TransformConfig
from gateway.errors import BadRequest, NotAnImage, OriginError, TransformError
from gateway.model import Blob, Entry, FileBlob, cache_key, make_meta
from gateway.origin.content import sniff
from gateway.service import ImageService, Layer, Served
from gateway.singleflight import SingleFlight
from gateway.variants.transform import (
    FITS,
    LOSSY,
    Geometry,
    Output,
    Rendered,
    TransformPool,
    available_formats,
    configure_pillow,
    normalise_upload,
    render,
)

log = logging.getLogger(__name__)

#: Bump when rendering changes (resampling, encoder settings): old variants in
#: disk caches then sit under keys nobody asks for and age out.
RENDER_VERSION: Final = "r1"
PARAMS: Final = ("w", "h", "fit", "format", "q")
_FORMAT_ALIASES: Final = {"jpg": "jpeg"}
#: Pseudo image id of the fallback picture's variants: ids cannot start with '.'.
FALLBACK_ID: Final = ".fallback"
UPLOAD_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp",
                                 "image/avif"})


def wants_variant(query: MultiMapping[str]) -> bool:
    """Whether the query names any variant parameter (others, like ``?v=3``, don't count)."""
    return any(name in query for name in PARAMS)


@dataclass(frozen=True, slots=True)
class VariantSpec:
    width: int | None
    height: int | None
    fit: str  # "cover" | "contain"; "-" when it cannot matter (fewer than two sides)
    format: str  # "auto" until negotiated, then "original" | "webp" | "avif" | "jpeg" | "png"
    quality: int

    @property
    def negotiated(self) -> bool:
        return self.format != "auto"

    @property
    def identity(self) -> bool:
        """No size and the original's format: the original itself is the answer."""
        return self.width is None and self.height is None and self.format == "original"

    @property
    def token(self) -> str:
        """The canonical variant part of the cache key (after negotiation)."""
        assert self.negotiated
        size = f"{self.width or 0}x{self.height or 0}"
        # PNG is lossless: the quality cannot change its bytes.
        quality = f"q{self.quality}" if self.format in LOSSY or self.format == "original" \
            else "q-"
        return f"{RENDER_VERSION}.{size}.{self.fit}.{self.format}.{quality}"

    def geometry(self, enlarge: bool) -> Geometry:
        return Geometry(self.width, self.height,
                        self.fit if self.fit != "-" else "cover", enlarge)

    def output(self) -> Output:
        return Output(self.format, self.quality)


def _one(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} given more than once")
    return values[0]


def _allowed_int(query: MultiMapping[str], name: str, allowed: tuple[int, ...],
                 setting: str) -> int | None:
    raw = _one(query, name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 5) or int(raw) not in allowed:
        choices = ", ".join(map(str, allowed)) or "none"
        raise BadRequest(f"{name} must be one of {choices} ({setting})")
    return int(raw)


def parse_spec(query: MultiMapping[str], config: TransformConfig,
               formats: frozenset[str]) -> VariantSpec:
    """The variant a query asks for; 400 for any value outside the allowlists."""
    width = _allowed_int(query, "w", config.widths, "transform.widths")
    height = _allowed_int(query, "h", config.heights, "transform.heights")
    quality = _allowed_int(query, "q", config.qualities, "transform.qualities")
    fit = _one(query, "fit")
    if fit is not None and fit not in FITS:
        raise BadRequest(f"fit must be one of {', '.join(FITS)}")
    raw_format = _one(query, "format")
    fmt = "original" if raw_format is None else _FORMAT_ALIASES.get(raw_format, raw_format)
    if fmt not in ("auto", "original") and fmt not in formats:
        choices = ", ".join(["auto", "original", *sorted(formats)])
        raise BadRequest(f"format must be one of {choices}")
    return VariantSpec(
        width=width, height=height,
        fit=(fit or "cover") if width is not None and height is not None else "-",
        format=fmt, quality=quality if quality is not None else config.default_quality)


def _accept_weights(accept: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        weight = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        if media:
            weights[media] = max(weights.get(media, 0.0), weight)
    return weights


def negotiate(spec: VariantSpec, accept: str | None, formats: frozenset[str]) -> VariantSpec:
    """``format=auto``: AVIF, else WebP, else the original's format, by what ``Accept``
    names explicitly (``image/*`` and ``*/*`` promise nothing); a higher q wins."""
    if spec.negotiated:
        return spec
    weights = _accept_weights(accept or "")
    ranked = [(weights.get(f"image/{fmt}", 0.0), preference, fmt)
              for preference, fmt in ((2, "avif"), (1, "webp")) if fmt in formats]
    best = max((r for r in ranked if r[0] > 0), default=None)
    return replace(spec, format=best[2] if best else "original")


@dataclass
class VariantStats:
    memory_hits: int = 0
    disk_hits: int = 0
    transforms: int = 0  # variants rendered
    refreshed: int = 0  # expired variants kept because their original is unchanged
    failed: int = 0  # originals that could not be transformed (422)
    stale_served: int = 0


class VariantService:
    def __init__(self, service: ImageService, pool: TransformPool, config: TransformConfig,
                 *, formats: frozenset[str], lock_timeout: float,
                 clock: Callable[[], float] | None = None) -> None:
        self.service = service
        self.pool = pool
        self.config = config
        self.formats = formats
        self.flights = SingleFlight[Served](lock_timeout)
        self.stats = VariantStats()
        self._clock = clock or service.clock

    def parse(self, query: MultiMapping[str]) -> VariantSpec:
        return parse_spec(query, self.config, self.formats)

    def negotiate(self, spec: VariantSpec, accept: str | None) -> VariantSpec:
        return negotiate(spec, accept, self.formats)

    # -- reads ----------------------------------------------------------------------

    async def get(self, image_id: str, spec: VariantSpec) -> Served:
        """The variant ``spec`` (negotiated, not identity) of ``image_id`` (validated)."""
        assert spec.negotiated and not spec.identity
        svc = self.service
        key = cache_key(image_id, svc.versions.get(image_id, 0), spec.token)
        now = self._clock()
        stale: Blob | None = svc.memory.get_nowait(key)
        if stale is not None and stale.meta.fresh(now):
            self.stats.memory_hits += 1
            return Served(Layer.MEMORY, stale)
        if svc.disk is not None:
            entry = await svc.disk.get(key)
            if entry is not None and entry.meta.fresh(now):
                self.stats.disk_hits += 1
                if isinstance(entry, Blob):
                    svc.memory.put_nowait(key, entry)
                return Served(Layer.DISK, entry)
            if stale is None and isinstance(entry, Blob):
                stale = entry
            else:
                _close(entry)
        served, joined = await self.flights.run(
            key, lambda: self._derive(image_id, key, spec, stale))
        return Served(Layer.COALESCED, served.entry) if joined else served

    async def for_unknown(self, spec: VariantSpec) -> Served:
        """The fallback picture as this variant (an unknown user's picture)."""
        return await self._fallback_variant(self.service.fallback_for_unknown().entry, spec)

    async def _derive(self, image_id: str, key: str, spec: VariantSpec,
                      stale: Blob | None) -> Served:
        svc = self.service
        try:
            source = await svc.get(image_id)
        except OriginError:
            if stale is None:
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
                blob = Blob(replace(stale.meta, stored_at=self._clock(),
                                    expires_at=origin_meta.expires_at), stale.body)
                svc.memory.put_nowait(key, blob)
                if svc.disk is not None:
                    await svc.disk.refresh(key, blob.meta)
                self.stats.refreshed += 1
                return Served(layer, blob)
            body = await _bytes_of(source.entry)
        finally:
            _close(source.entry)
        rendered = await self._render(body, spec)
        now = self._clock()
        blob = Blob(make_meta(rendered.body, rendered.content_type, origin_meta.last_modified,
                              now, origin_meta.expires_at - now, origin_etag=origin_meta.etag),
                    rendered.body)
        svc.memory.put_nowait(key, blob)
        if svc.disk is not None:
            await svc.disk.put(key, blob)
        return Served(layer, blob)

    async def _fallback_variant(self, fallback: Entry, spec: VariantSpec) -> Served:
        """Variants of the fallback picture live in memory only, under a pseudo id
        that no real image can have; like the fallback itself, they never expire."""
        key = cache_key(FALLBACK_ID, 0, spec.token)
        try:
            blob = self.service.memory.get_nowait(key)
            if blob is None or blob.meta.origin_etag != fallback.meta.etag:
                rendered = await self._render(await _bytes_of(fallback), spec)
                meta = make_meta(rendered.body, rendered.content_type,
                                 fallback.meta.last_modified, self._clock(), float("inf"),
                                 origin_etag=fallback.meta.etag)
                blob = Blob(meta, rendered.body)
                self.service.memory.put_nowait(key, blob)
        finally:
            _close(fallback)
        return Served(Layer.FALLBACK, blob)

    async def _render(self, body: bytes, spec: VariantSpec) -> Rendered:
        try:
            rendered = await self.pool.run(render, body, spec.geometry(self.config.enlarge),
                                           spec.output(), self.config.max_pixels)
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

    async def close(self) -> None:
        await self.flights.close()
        await self.pool.close()


async def _bytes_of(entry: Entry) -> bytes:
    if isinstance(entry, Blob):
        return entry.body
    return await asyncio.to_thread(os.pread, entry.file.fileno(), entry.meta.size,
                                   entry.offset)


def _close(entry: Entry | None) -> None:
    if isinstance(entry, FileBlob):
        with contextlib.suppress(OSError):
            entry.file.close()


def build_variants(config: Config, service: ImageService,
                   stack: contextlib.AsyncExitStack) -> VariantService:
    """The variant service for ``create_app``; shut down (pool joined) with the app."""
    t = config.transform
    available = available_formats()
    missing = set(t.formats) - available
    if missing:
        log.warning("transform.formats: %s not supported by this Pillow build; not offered",
                    ", ".join(sorted(missing)))
    configure_pillow(t.max_pixels)
    pool = TransformPool(t.workers, t.queue)
    variants = VariantService(service, pool, t, formats=frozenset(t.formats) & available,
                              lock_timeout=config.fetch.lock_timeout)
    stack.push_async_callback(variants.close)
    return variants
