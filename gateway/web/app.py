"""create_app: the one place where concrete parts are chosen, built and wired together.

Every part gets what it needs through its constructor; nothing is swapped or
looked up after the fact. Lifetimes are owned by one AsyncExitStack, closed in
the app's cleanup in the reverse order of construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.cache.negative import NegativeCache
from gateway.cache.refusals import Refusals
from gateway.cache.tiers import NoDisk, TieredCache
from gateway.cluster.aliases import AliasStore, Migration, migrate_legacy_aliases
from gateway.cluster.bus import InvalidationBus
from gateway.cluster.connect import open_redis
from gateway.cluster.fill import FillCodec, fill_key
from gateway.cluster.invalidation import Invalidator
from gateway.cluster.lease import ClusterFlight
from gateway.cluster.redis import RedisHealth, RedisLink, deployment_of, keys_for
from gateway.cluster.urls import RedisUrlStore
from gateway.config import Config, ConfigError, fill_secret
from gateway.config_checks import resolve_fallback
from gateway.errors import BadRequest
from gateway.model import Blob
from gateway.observe.counters import Stats
from gateway.observe.health import Check, Health
from gateway.observe.hub import StatsHub
from gateway.observe.recorder import Recorder
from gateway.observe.rejected import RedisRejections
from gateway.observe.shared import SHARED_DIR_ENV
from gateway.origin import Origin, Uploadable
from gateway.origin.content import load_fallback
from gateway.origin.local import LocalOrigin
from gateway.origin.presign import MemoryUrlStore, UrlStore
from gateway.origin.resilient import CircuitBreaker, ResilientOrigin
from gateway.origin.s3 import S3Origin
from gateway.origin.timed import TimedOrigin
from gateway.service import FlightResult, ImageService
from gateway.singleflight import SingleFlight
from gateway.variants.service import VariantService
from gateway.variants.spec import VariantRules
from gateway.variants.transform import TransformPool, available_formats, configure_pillow
from gateway.web import admin as admin_routes, client, dashboard, handlers, openapi, stats_view
from gateway.web.admin import admin_check, admin_guard
from gateway.web.clientaddr import ClientAddress
from gateway.web.cors import ImageHeaders
from gateway.web.edge import Edge, Gate, Routes, signature_check
from gateway.web.keys import PARTS, Parts
from gateway.web.observability import Observer, metrics
from gateway.web.ratelimit import TokenBuckets, rate_limit
from gateway.web.signing import UrlSigner
from gateway.web.tracing_switch import start_tracing

if TYPE_CHECKING:  # never at run time: tracing is imported only when it is on
    from opentelemetry.sdk.trace.export import SpanExporter

    from gateway.web.tracing import Tracing

log = logging.getLogger(__name__)

#: Below this length an S3 secret is too weak (or too well known) to derive the
#: cluster's signing key from without a warning (cluster.secret itself needs 32).
MIN_DERIVED_SECRET = 32

#: The largest request body read: an upload (PUT /admin/images/{id}, docs/variants.md).
#: aiohttp takes the limit from the app that made the request, which is always the
#: root app, never the admin sub-app; no public route reads a body at all.
MAX_BODY = 16 * 1024 * 1024
#: Seconds the start waits for the first subscription to the invalidation channel.
FIRST_SUBSCRIPTION_WAIT = 2.0


async def create_app(config: Config, *, span_exporter: SpanExporter | None = None
                     ) -> web.Application:
    """Build every component for ``config``; closing happens in the app's cleanup.
    Traced when the OTEL_* variables ask for it, or to ``span_exporter`` (tests)."""
    stack = contextlib.AsyncExitStack()
    try:
        tracing = start_tracing(stack, span_exporter)
        app = await _build(config, stack, tracing)
    except BaseException:
        await stack.aclose()
        raise

    async def close(_: web.Application) -> None:
        await stack.aclose()

    app.on_cleanup.append(close)
    return app


async def _build(config: Config, stack: contextlib.AsyncExitStack,
                 tracing: Tracing | None) -> web.Application:
    stats = Stats()
    recorder = Recorder()
    rejected = RedisRejections(stats)
    link = _redis(config, stack)
    urls: UrlStore = (RedisUrlStore(link, stats, rejected) if link.enabled
                      else MemoryUrlStore(stats))

    o = config.origin
    raw_origin = await _origin(config, urls, stack)
    breaker = CircuitBreaker(o.breaker_threshold, o.breaker_reset)
    resilient = ResilientOrigin(raw_origin, retries=o.retries, backoff=o.retry_backoff,
                                breaker=breaker, max_concurrent=o.max_concurrent_fetches,
                                queue_timeout=o.queue_timeout)
    origin: Origin = TimedOrigin(resilient, recorder.origin_fetch)
    if tracing is not None:
        origin = tracing.origin(origin)
    stack.push_async_callback(origin.close)

    cache = await _cache(config, stats, stack)
    cluster = _cluster(config, link, rejected, stats)
    service = ImageService(
        cache=cache, origin=origin,
        cluster=cluster if tracing is None else tracing.flight(cluster),
        flights=SingleFlight[FlightResult](config.fetch.lock_timeout), stats=stats,
        fallback=_fallback(config), ttl=config.disk.ttl, ttl_jitter=config.disk.ttl_jitter,
        refresh_ahead=min(config.fetch.refresh_ahead, config.disk.ttl / 2),
        refusals=Refusals(config.cache.negative_ttl,
                          config.cache.negative_max_bytes // config.server.workers, stats))
    stack.push_async_callback(service.close)
    variants = _variants(config, service, cache, stack, tracing)

    aliases = AliasStore(link, rejected)
    bus = InvalidationBus(link, stats=stats, rejected=rejected,
                          version_ttl=config.disk.ttl + config.disk.max_stale)
    invalidator = Invalidator(service, bus, urls, aliases, stats)
    stack.push_async_callback(invalidator.close)
    await bus.start()
    stack.push_async_callback(bus.close)
    if link.enabled:
        # Serve once subscribed: whatever is cached before that is revalidated when
        # the subscription comes (purges may have been missed until then). Bounded:
        # a Redis that is down must not keep the gateway from starting.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_SUBSCRIPTION_WAIT):
                await bus.subscribed.wait()

    checks: dict[str, Check] = {"origin": origin.ping, **cache.checks()}
    if link.enabled:
        checks["redis"] = link.ping
    health = Health(checks)

    def figures() -> tuple[dict[str, float], dict[str, float]]:
        counters, gauges = variants.figures()
        counters["origin.retries"] = resilient.retried
        counters["origin.breaker_trips"] = breaker.trips
        gauges["origin.breaker_open"] = float(breaker.state == CircuitBreaker.OPEN)
        gauges["process.gc_frozen_objects"] = float(gc.get_freeze_count())
        gauges["cluster.purges_unsent"] = float(invalidator.unsent)
        gauges.update(cache.gauges())
        return counters, gauges

    async def clear_caches() -> None:
        await cache.clear()

    hub = StatsHub(stats=stats, recorder=recorder, redis_health=link.health,
                   shared_dir=os.environ.get(SHARED_DIR_ENV) or None, on_clear=clear_caches,
                   figures=figures)

    # No middlewares (web/edge.py), but tracing's own when it is on.
    app = web.Application(middlewares=tracing.middlewares() if tracing is not None else (),
                          client_max_size=MAX_BODY)
    parts = app[PARTS] = Parts(
        config=config, service=service, cache=cache, variants=variants,
        invalidator=invalidator, aliases=aliases, stats=stats, hub=hub, health=health,
        redis_health=link.health,
        uploader=raw_origin if isinstance(raw_origin, Uploadable) else None,
        image_headers=ImageHeaders.of(config))

    async def run_hub(_: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.close()

    async def draining(_: web.Application) -> None:
        health.draining = True

    app.cleanup_ctx.append(run_hub)
    app.on_shutdown.append(draining)
    _routes(app, config, Observer(recorder, stats), parts)
    return app


def _routes(app: web.Application, config: Config, observer: Observer, parts: Parts) -> None:
    # Every handler behind the edge (web/edge.py); no app has middlewares, so aiohttp
    # runs none of its middleware machinery on the hot path.
    edge = Edge(observer)
    public: list[Gate] = []
    if config.limits.rate > 0:
        public.append(rate_limit(
            TokenBuckets(config.limits.rate, config.limits.burst, config.limits.max_clients),
            ClientAddress(config.server.trusted_proxies)))
    images: list[Gate] = list(public)
    if config.signing.required:
        images.append(signature_check(UrlSigner(config.signing.keys)))
    routes = Routes(app, edge, public)
    # One route: which of the three /images/ routes a URL names is decided on its raw
    # path (web/paths.py), never on aiohttp's decoded one. [\s\S]: a key may decode
    # to anything (a newline too), and it is the handler that answers 400, not a 404.
    cors = parts.image_headers.apply
    routes.get(r"/images/{image_id:[\s\S]+}", handlers.images_handler(parts), gates=images,
               finish=cors)
    # Probes and scrapes are never rate limited.
    routes.get("/healthz", handlers.healthz, gates=())
    routes.get("/livez", handlers.healthz, gates=())  # Kubernetes' current name for it
    routes.get("/readyz", handlers.readyz, gates=())
    routes.get("/metrics", metrics, allow_head=False, gates=())
    # A CORS preflight: answered from the settings alone, never signed (it carries
    # no credentials and gets no picture).
    routes.add("OPTIONS", r"/images/{image_id:[\s\S]+}", handlers.preflight, finish=cors)
    client.add_routes(routes, config.client, parts.service.fallback)
    openapi.add_route(routes, admin=bool(config.admin.token))
    if config.admin.token:  # no token, no admin surface at all (404, not 401)
        admin = web.Application()
        # No "100 Continue" before the token is checked: no body from strangers.
        guarded = Routes(admin, edge, public, label_prefix="/admin",
                         guard=admin_guard(config.admin.token),
                         before_body=[admin_check(config.admin.token)])
        admin_routes.add_routes(guarded)
        stats_view.add_routes(guarded)
        dashboard.add_routes(guarded)
        guarded.catch_all()
        app.add_subapp("/admin/", admin)
    routes.catch_all()


def _redis(config: Config, stack: contextlib.AsyncExitStack,
           socket_timeout: float | None = None) -> RedisLink:
    keys = keys_for(config)
    client = open_redis(config.redis, stack, socket_timeout)
    if client is not None:
        log.info("redis keys: %s:%s:* (this deployment's)", keys.prefix, keys.deployment)
    return RedisLink(client, keys, RedisHealth(configured=client is not None))


def _cluster(config: Config, link: RedisLink, rejected: RedisRejections,
             stats: Stats) -> ClusterFlight:
    c, o = config.cluster, config.origin
    secret = fill_secret(config)
    # No secret means no Redis (the config refuses Redis without one): no result ever
    # leaves this process, so a key of its own will do.
    key = fill_key(secret) if secret else secrets.token_bytes(32)
    if link.enabled and not c.secret and len(secret) < MIN_DERIVED_SECRET:
        # A short S3 secret is often a default (MinIO's): whoever knows it and can write
        # to Redis could hand this replica any picture it would accept as another's.
        log.warning("cluster.secret is not set: results shared through Redis are signed "
                    "with a key derived from a %d-character S3 secret; set "
                    "GATEWAY_CLUSTER_SECRET (openssl rand -hex 32) on every replica",
                    len(secret))
    codec = FillCodec(key, link.keys.deployment, allowed_types=o.allowed_types,
                      max_bytes=o.max_bytes)
    return ClusterFlight(link, lease_ttl=c.lease_ttl, wait_timeout=c.wait_timeout,
                         poll_interval=c.poll_interval, fill_max_bytes=c.fill_max_bytes,
                         fill_ttl=c.fill_ttl, codec=codec, rejected=rejected, stats=stats)


async def migrate_aliases(config: Config) -> Migration:
    """``image-gateway migrate-aliases``: aliases under their old names -> this
    deployment's names (cluster/aliases.py). Raises Redis errors."""
    async with contextlib.AsyncExitStack() as stack:
        # A one-off batch, not the request path: a busy Redis may take its time.
        link = _redis(config, stack, socket_timeout=10.0)
        assert link.client is not None, "checked by the caller"
        return await migrate_legacy_aliases(link.client, link.keys)


async def _cache(config: Config, stats: Stats, stack: contextlib.AsyncExitStack
                 ) -> TieredCache:
    # memory.max_bytes is the whole gateway's budget: each of N workers keeps 1/N,
    # so the container's memory need is max_bytes plus N runtimes, whatever N is.
    workers = config.server.workers
    memory = MemoryCache(config.memory.max_bytes // workers, config.memory.max_object_bytes,
                         max_stale=config.disk.max_stale, counters=stats.memory)
    negative = NegativeCache(config.cache.negative_ttl,
                             config.cache.negative_max_bytes // workers)
    # What an earlier process left on disk may predate purges it never heard of
    # (it was down, or deaf to Redis): revalidated before it is served. Without
    # Redis every purge is this process's own, so nothing can have been missed.
    trusted_since = time.time() if config.redis.configured else 0.0
    horizon = config.disk.ttl + config.disk.max_stale  # nothing cached outlives a version
    if not config.disk.enabled:
        return TieredCache(memory, NoDisk(), negative=negative, trusted_since=trusted_since,
                           version_horizon=horizon)
    # The workers share one folder and each bounds the files it knows of (its own
    # writes and reads, the start-up scan). Every file is known to at least one
    # worker, so N shares of max_bytes / N keep the folder within max_bytes.
    # Named by deployment: two given one disk.path never serve each other's bytes.
    disk = DiskCache(Path(config.disk.path), max_bytes=config.disk.max_bytes // workers,
                     max_stale=config.disk.max_stale,
                     inline_max_bytes=memory.max_object_bytes, counters=stats.disk,
                     namespace=deployment_of(config))
    await disk.start()
    stack.push_async_callback(disk.close)
    return TieredCache(memory, disk, negative=negative, trusted_since=trusted_since,
                       version_horizon=horizon)


async def _origin(config: Config, store: UrlStore,
                  stack: contextlib.AsyncExitStack) -> Origin:
    allowed = config.origin.allowed_types
    if config.origin.kind == "local":
        return LocalOrigin(Path(config.origin.root), max_bytes=config.origin.max_bytes,
                           allowed_types=allowed)
    s3 = config.s3
    client = await stack.enter_async_context(get_session().create_client(
        "s3",
        endpoint_url=s3.endpoint or None,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id or None,
        aws_secret_access_key=s3.secret_access_key or None,
        config=AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            connect_timeout=config.origin.connect_timeout,
            read_timeout=config.origin.read_timeout,
            retries={"max_attempts": 1, "mode": "standard"},
            max_pool_connections=4,
        ),
    ))
    http = await stack.enter_async_context(aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.origin.max_connections,
                                       ttl_dns_cache=60),
        auto_decompress=False,
        raise_for_status=False,
    ))
    timeout = aiohttp.ClientTimeout(
        total=config.origin.connect_timeout + config.origin.read_timeout,
        connect=config.origin.connect_timeout,
        sock_read=config.origin.read_timeout)
    return S3Origin(client, http, store, bucket=s3.bucket, prefix=s3.prefix,
                    expires=config.presign.expires, url_ttl=config.presign.cache_ttl,
                    max_bytes=config.origin.max_bytes, allowed_types=allowed,
                    timeout=timeout)


def _variants(config: Config, service: ImageService, cache: TieredCache,
              stack: contextlib.AsyncExitStack, tracing: Tracing | None) -> VariantService:
    t = config.transform
    available = available_formats()
    missing = set(t.formats) - available
    if missing:
        log.warning("transform.formats: %s not supported by this Pillow build; not offered",
                    ", ".join(sorted(missing)))
    configure_pillow(t.max_pixels)
    try:
        rules = VariantRules(t, config.variants, config.presets,
                             frozenset(t.formats) & available)
    except BadRequest as exc:  # a preset naming a format this Pillow cannot encode
        raise ConfigError(str(exc)) from None
    pool = TransformPool(t.workers, t.queue)
    variants = VariantService(service, cache, pool if tracing is None else tracing.pool(pool),
                              rules,
                              lock_timeout=config.fetch.lock_timeout)
    stack.push_async_callback(variants.close)
    return variants


def _fallback(config: Config) -> Blob | None:
    if not config.fallback.image:
        return None
    path = resolve_fallback(config.fallback.image)
    assert path is not None  # validated at start-up
    return load_fallback(str(path), allowed=config.origin.allowed_types)
