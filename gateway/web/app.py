"""create_app: the one place where concrete parts are chosen and wired together."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.asyncio import Redis

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.cluster.aliases import AliasStore
from gateway.cluster.bus import InvalidationBus
from gateway.cluster.invalidation import Invalidator
from gateway.cluster.lease import ClusterFlight
from gateway.cluster.redis import RedisHealth, redis_errors
from gateway.config import Config, resolve_fallback
from gateway.model import Blob
from gateway.observe.counters import Stats
from gateway.observe.health import Check, Health
from gateway.origin import Origin
from gateway.origin.local import LocalOrigin
from gateway.origin.presign import MemoryUrlStore, RedisUrlStore, UrlStore
from gateway.origin.resilient import CircuitBreaker, ResilientOrigin
from gateway.origin.s3 import S3Origin
from gateway.service import FlightResult, ImageService, load_fallback
from gateway.singleflight import SingleFlight
from gateway.variants.service import build_variants
from gateway.web import admin as admin_routes
from gateway.web import handlers
from gateway.web.admin import bearer_auth
from gateway.web.clientaddr import ClientAddress
from gateway.web.keys import (
    ALIASES,
    CONFIG,
    HEALTH,
    INVALIDATOR,
    REDIS_HEALTH,
    SERVICE,
    STATS,
    VARIANTS,
)
from gateway.web.middlewares import errors, require_signature
from gateway.web.observability import install_observability
from gateway.web.ratelimit import TokenBuckets, rate_limit
from gateway.web.signing import UrlSigner

log = logging.getLogger(__name__)


async def create_app(config: Config) -> web.Application:
    """Build every component for ``config``; closing happens in the app's cleanup."""
    stack = contextlib.AsyncExitStack()
    try:
        app = await _build(config, stack)
    except BaseException:
        await stack.aclose()
        raise

    async def close(_: web.Application) -> None:
        await stack.aclose()

    app.on_cleanup.append(close)
    return app


async def _build(config: Config, stack: contextlib.AsyncExitStack) -> web.Application:
    stats = Stats()
    redis_health = RedisHealth(configured=bool(config.redis.url))
    redis: Redis | None = None
    if config.redis.url:
        redis = Redis.from_url(
            config.redis.url,
            socket_timeout=config.redis.socket_timeout,
            socket_connect_timeout=config.redis.connect_timeout,
            retry_on_timeout=False,
        )
        stack.push_async_callback(redis.aclose)
    store: UrlStore = (RedisUrlStore(redis, config.redis.prefix, redis_health, stats)
                       if redis is not None else MemoryUrlStore(stats))

    o = config.origin
    origin = ResilientOrigin(
        await _origin(config, store, stack), retries=o.retries, backoff=o.retry_backoff,
        breaker=CircuitBreaker(o.breaker_threshold, o.breaker_reset),
        max_concurrent=o.max_concurrent_fetches, queue_timeout=o.queue_timeout)
    stack.push_async_callback(origin.close)
    # memory.max_bytes is the whole gateway's budget: each of N workers keeps 1/N,
    # so the container's memory need is max_bytes plus N runtimes, whatever N is.
    memory = MemoryCache(config.memory.max_bytes // config.server.workers,
                         config.memory.max_object_bytes,
                         max_stale=config.disk.max_stale, counters=stats.memory)
    disk: DiskCache | None = None
    if config.disk.enabled:
        # The workers share one folder and each bounds the files it knows of (its
        # own writes and reads, the start-up scan). Every file is known to at least
        # one worker, so N shares of max_bytes / N keep the folder within max_bytes.
        disk = DiskCache(Path(config.disk.path),
                         max_bytes=config.disk.max_bytes // config.server.workers,
                         max_stale=config.disk.max_stale,
                         inline_max_bytes=memory.max_object_bytes, counters=stats.disk)
        await disk.start()
        stack.push_async_callback(disk.close)

    cluster = None
    if redis is not None:
        c = config.cluster
        cluster = ClusterFlight(redis, config.redis.prefix, redis_health,
                                lease_ttl=c.lease_ttl, wait_timeout=c.wait_timeout,
                                poll_interval=c.poll_interval,
                                fill_max_bytes=c.fill_max_bytes, fill_ttl=c.fill_ttl)
    service = ImageService(
        memory=memory, disk=disk, origin=origin,
        flights=SingleFlight[FlightResult](config.fetch.lock_timeout), stats=stats,
        fallback=_fallback(config), ttl=config.disk.ttl, ttl_jitter=config.disk.ttl_jitter,
        refresh_ahead=min(config.fetch.refresh_ahead, config.disk.ttl / 2), cluster=cluster)
    stack.push_async_callback(service.close)
    variants = build_variants(config, service, stack)  # issue 8; pool shut down by stack

    aliases = AliasStore(redis, config.redis.prefix, redis_health)
    bus = InvalidationBus(redis, config.redis.prefix, redis_health)
    invalidator = Invalidator(service, bus, store, aliases)
    await bus.start()
    stack.push_async_callback(bus.close)

    checks: dict[str, Check] = {"origin": origin.ping}
    if disk is not None:
        checks["disk"] = disk.writable
    if redis is not None:
        checks["redis"] = _redis_ping(redis, redis_health)
    health = Health(checks)

    middlewares: list[Middleware] = [errors]
    addresses = ClientAddress(config.server.trusted_proxies)
    if config.limits.rate > 0:
        middlewares.append(rate_limit(
            TokenBuckets(config.limits.rate, config.limits.burst, config.limits.max_clients),
            addresses))
    if config.signing.required:
        middlewares.append(require_signature(UrlSigner(config.signing.keys)))
    app = web.Application(middlewares=middlewares, client_max_size=1024 * 1024)
    admin: web.Application | None = None
    if config.admin.token:
        admin = web.Application(middlewares=[bearer_auth(config.admin.token)],
                                client_max_size=16 * 1024 * 1024)
    app[CONFIG] = config
    app[STATS] = stats
    app[SERVICE] = service
    app[HEALTH] = health
    app[ALIASES] = aliases
    app[INVALIDATOR] = invalidator
    app[REDIS_HEALTH] = redis_health
    app[VARIANTS] = variants

    async def draining(_: web.Application) -> None:
        health.draining = True

    app.on_shutdown.append(draining)
    app.router.add_get("/images/{image_id}", handlers.get_image)
    app.router.add_get("/images/{image_id}/url", handlers.get_image_url, allow_head=False)
    app.router.add_get("/images/user/{user_id}", handlers.get_user_image)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    install_observability(app, admin)  # issue 5: /metrics, /admin/stats, dashboard
    if admin is not None:
        admin_routes.add_routes(admin)
        app.add_subapp("/admin/", admin)
    return app


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


def _fallback(config: Config) -> Blob | None:
    if not config.fallback.image:
        return None
    path = resolve_fallback(config.fallback.image)
    assert path is not None  # validated at start-up
    return load_fallback(str(path), allowed=config.origin.allowed_types)


def _redis_ping(redis: Redis, health: RedisHealth) -> Check:
    async def ping() -> bool:
        try:
            await redis.ping()
        except redis_errors as exc:
            health.failed(exc)
            return False
        health.ok()
        return True

    return ping
