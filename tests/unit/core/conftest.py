"""Fixtures of the core tests: real cache layers on tmp_path, a fake origin, a fake
clock, and RedisLinks (none, or on the session's real redis-server).

    clock         FakeClock shared by the layers and the service
    origin        FakeOrigin (tests/support/fakes.py)
    make_tiers    make_tiers(disk=True) -> TieredCache: MemoryCache over a DiskCache
                  in tmp_path (or NoDisk); bodies over OBJECT_CAP stay on disk only
    tiers         make_tiers()
    no_redis      RedisLink without a client (Redis not configured)
    make_link     make_link(backoff=0.0) -> RedisLink on redis_url (0.3 s timeouts); keys
                  are test:dep:... (prefix PREFIX, deployment DEPLOYMENT)
    link          make_link()
    rejected      RedisRejections counting on its own Stats (rejected.stats)
    redis         a plain client on redis_url, to look at or change what is stored
    make_service  make_service(**ImageService kwargs) -> ImageService on make_tiers(),
                  origin, clock, a SingleFlight and a ClusterFlight without Redis
    make_replica  make_replica(caches, link, urls) -> Replica: an Invalidator on FakeCaches
                  with a real bus and alias store (.listen() subscribes it)
    fast_retries  the service's background retries wait milliseconds, not seconds
                  (.scale = 1000: they wait for good)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.cache.tiers import NoDisk, TieredCache
from gateway.cluster.aliases import AliasStore
from gateway.cluster.bus import InvalidationBus
from gateway.cluster.fill import FillCodec
from gateway.cluster.invalidation import Invalidator
from gateway.cluster.lease import ClusterFlight
from gateway.cluster.redis import RedisHealth, RedisKeys, RedisLink
from gateway.cluster.urls import RedisUrlStore
from gateway.config import IMAGE_TYPES
from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections
from gateway.origin.presign import UrlStore
from gateway.service import FlightResult, ImageService, refresh as refresh_module
from gateway.singleflight import SingleFlight
from tests.support.fakes import FakeClock, FakeOrigin

PREFIX = "test"
DEPLOYMENT = "dep"
FILL_KEY = b"k" * 32
MEMORY_BYTES = 100_000
OBJECT_CAP = 1_000  # memory keeps bodies up to this; the disk hands larger ones as FileBlob
MAX_STALE = 3600.0  # expired entries stay in both layers for the tests' whole span
TTL = 60.0
REDIS_TIMEOUT = 0.3
BOUND = 5.0  # how long a replica may take to subscribe before a test calls it hung

MakeTiers = Callable[..., Awaitable[TieredCache]]
MakeLink = Callable[..., RedisLink]
MakeService = Callable[..., Awaitable[ImageService]]
MakeReplica = Callable[..., "Replica"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def origin() -> FakeOrigin:
    return FakeOrigin()


@pytest.fixture
async def make_tiers(tmp_path: Path, clock: FakeClock) -> AsyncIterator[MakeTiers]:
    disks: list[DiskCache] = []

    async def make(*, disk: bool = True) -> TieredCache:
        memory = MemoryCache(MEMORY_BYTES, OBJECT_CAP, MAX_STALE, clock=clock)
        if not disk:
            return TieredCache(memory, NoDisk(), clock)
        layer = DiskCache(tmp_path / f"disk{len(disks)}", max_bytes=10_000_000,
                          max_stale=MAX_STALE, inline_max_bytes=memory.max_object_bytes,
                          clock=clock)
        disks.append(layer)
        await layer.start()
        await layer.wait_scanned()
        return TieredCache(memory, layer, clock)

    yield make
    for layer in disks:
        await layer.close()


@pytest.fixture
async def tiers(make_tiers: MakeTiers) -> TieredCache:
    return await make_tiers()


def unconfigured_link() -> RedisLink:
    return RedisLink(None, RedisKeys(PREFIX, DEPLOYMENT), RedisHealth(configured=False))


def fill_codec(key: bytes = FILL_KEY, deployment: str = DEPLOYMENT,
               max_bytes: int = 10_000_000) -> FillCodec:
    return FillCodec(key, deployment, allowed_types=frozenset(IMAGE_TYPES),
                     max_bytes=max_bytes)


class CountedRejections(RedisRejections):
    def __init__(self) -> None:
        self.stats = Stats()
        super().__init__(self.stats)


@pytest.fixture
def rejected() -> CountedRejections:
    return CountedRejections()


@pytest.fixture
def no_redis() -> RedisLink:
    return unconfigured_link()


@pytest.fixture
async def make_link(redis_url: str) -> AsyncIterator[MakeLink]:
    clients: list[Redis] = []

    def make(backoff: float = 0.0) -> RedisLink:
        client = Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT,
                                socket_connect_timeout=REDIS_TIMEOUT, retry_on_timeout=False)
        clients.append(client)
        return RedisLink(client, RedisKeys(PREFIX, DEPLOYMENT),
                         RedisHealth(True, backoff=backoff))

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def link(make_link: MakeLink) -> RedisLink:
    return make_link()



@pytest.fixture
async def make_service(make_tiers: MakeTiers, origin: FakeOrigin,
                       clock: FakeClock) -> AsyncIterator[MakeService]:
    services: list[ImageService] = []

    async def make(*, cache: TieredCache | None = None, **kwargs: Any) -> ImageService:
        cluster = ClusterFlight(unconfigured_link(), lease_ttl=5, wait_timeout=1,
                                poll_interval=0.01, fill_max_bytes=100_000, fill_ttl=10,
                                codec=fill_codec(), rejected=CountedRejections())
        options: dict[str, Any] = dict(stats=Stats(), fallback=None, ttl=TTL, clock=clock)
        options.update(kwargs)
        service = ImageService(cache=cache or await make_tiers(), origin=origin,
                               cluster=cluster, flights=SingleFlight[FlightResult](5.0),
                               **options)
        services.append(service)
        return service

    yield make
    for service in services:
        await service.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A failed background refresh retries after 1 s * uniform(0.5, 1.5), doubling:
    here after ``scale`` times that, 0.001 unless a test sets ``fast_retries.scale``
    (1000: the refresh sleeps for the rest of the test). Only inside gateway.service.refresh."""
    retries = SimpleNamespace(scale=0.001)
    monkeypatch.setattr(refresh_module, "random",
                        SimpleNamespace(uniform=lambda a, b: retries.scale * (a + b) / 2))
    return retries


class FakeCaches:
    """The LocalCaches an Invalidator drives: versions, and a record of purge_local calls."""

    def __init__(self, **versions: int) -> None:
        self.versions = {f"{name}.png": v for name, v in versions.items()}
        self.purged: list[tuple[str, int | None]] = []
        self.distrusted = 0

    def version_of(self, image_id: str) -> int:
        return self.versions.get(image_id, 0)

    def distrust(self) -> None:
        self.distrusted += 1

    async def purge_local(self, image_id: str, version: int | None = None) -> None:
        self.purged.append((image_id, version))
        current = self.version_of(image_id)
        self.versions[image_id] = version if version is not None and version > current \
            else current + 1


class Replica:
    def __init__(self, link: RedisLink, caches: FakeCaches, urls: UrlStore) -> None:
        self.link = link
        self.caches = caches
        self.urls = urls
        self.bus = InvalidationBus(link, retry_interval=0.05)
        self.aliases = AliasStore(link, CountedRejections())
        self.invalidator = Invalidator(caches, self.bus, urls, self.aliases)

    async def listen(self) -> Replica:
        await self.bus.start()
        await asyncio.wait_for(self.bus.subscribed.wait(), BOUND)
        return self



@pytest.fixture
async def make_replica(make_link: MakeLink) -> AsyncIterator[MakeReplica]:
    made: list[Replica] = []

    def make(caches: FakeCaches | None = None, link: RedisLink | None = None,
             urls: UrlStore | None = None) -> Replica:
        link = link or make_link()
        replica = Replica(link, caches or FakeCaches(),
                          urls or RedisUrlStore(link, Stats(), CountedRejections()))
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.invalidator.close()
        await replica.bus.close()
