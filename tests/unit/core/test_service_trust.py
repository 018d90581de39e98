"""ImageService after a possible missed purge (distrust) and with remembered misses:
what the origin is asked, which layer answers, what is never served."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cache.negative import NegativeCache
from gateway.errors import NotFound, OriginError
from gateway.model import Layer
from gateway.service import ImageService
from tests.support.fakes import FakeClock, FakeOrigin, blob, body_of, until

from .conftest import MakeService, MakeTiers

OLD = b"\x89PNG before the purge"
NEW = b"\x89PNG after the purge"
NEGATIVE_TTL = 30.0
FALLBACK = blob(b"default picture", ttl=float("inf"))


@pytest.fixture
async def service(make_service: MakeService, make_tiers: MakeTiers) -> ImageService:
    tiers = await make_tiers()
    tiers.negative = NegativeCache(NEGATIVE_TTL, 100_000)
    return await make_service(cache=tiers, fallback=FALLBACK)


# -- distrust -------------------------------------------------------------------------------


async def test_after_distrust_a_fresh_copy_is_revalidated_once(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    etag = origin.put("a.png", OLD)
    assert (await service.get("a.png")).layer is Layer.MISS
    clock.advance(1)
    service.distrust()
    assert service.stats.resyncs == 1
    served = await service.get("a.png")
    assert served.layer is Layer.REVALIDATED and body_of(served) == OLD
    assert (await service.get("a.png")).layer is Layer.MEMORY
    assert origin.fetches == [("a.png", None), ("a.png", etag)]


async def test_after_distrust_a_changed_object_is_downloaded(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    await service.get("a.png")
    origin.put("a.png", NEW)  # changed, and its purge never reached us
    clock.advance(1)
    service.distrust()
    served = await service.get("a.png")
    assert served.layer is Layer.MISS and body_of(served) == NEW


async def test_after_distrust_a_copy_on_disk_only_is_revalidated(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    await service.get("a.png")
    await service.cache.memory.clear()  # what a restarted process has: the disk
    clock.advance(1)
    service.distrust()
    assert not await service.cached("a.png")
    assert (await service.get("a.png")).layer is Layer.REVALIDATED


async def test_an_untrusted_copy_is_never_served_stale(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    await service.get("a.png")
    clock.advance(1)
    service.distrust()
    origin.fail(OriginError("S3 is down"))
    with pytest.raises(OriginError):
        await service.get("a.png")
    assert service.stats.stale_served == 0


async def test_a_trusted_expired_copy_is_still_served_stale(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    await service.get("a.png")
    service.distrust()  # at the very instant the copy was confirmed: still trusted
    clock.advance(3600)
    origin.fail(OriginError("S3 is down"))
    assert (await service.get("a.png")).layer is Layer.STALE


async def test_bytes_count_as_confirmed_when_they_were_asked_for(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    """A fetch in flight while the process learns it may have missed a purge brings
    bytes that may predate that purge: they are not trusted."""
    origin.put("a.png", OLD)
    origin.hold()
    request = asyncio.create_task(service.get("a.png"))
    await until(origin.started.is_set)
    asked = clock()
    clock.advance(1)
    service.distrust()
    clock.advance(1)
    origin.release()
    served = await request
    assert served.layer is Layer.MISS and served.entry.meta.stored_at == asked
    assert (await service.get("a.png")).layer is Layer.REVALIDATED


# -- remembered misses --------------------------------------------------------------------------


async def test_a_miss_is_answered_without_the_origin_until_the_ttl(
        service: ImageService, origin: FakeOrigin, clock: FakeClock) -> None:
    for _ in range(3):
        served = await service.get("nope.png")
        assert served.layer is Layer.FALLBACK and served.entry is FALLBACK
    assert origin.fetch_count == 1
    stats = service.stats
    assert (stats.negative_hits, stats.fallback_served, stats.origin_not_found) == (2, 3, 1)
    clock.advance(NEGATIVE_TTL)
    await service.get("nope.png")
    assert origin.fetch_count == 2


async def test_a_remembered_miss_without_fallback_is_404(
        make_service: MakeService, make_tiers: MakeTiers, origin: FakeOrigin) -> None:
    tiers = await make_tiers()
    tiers.negative = NegativeCache(NEGATIVE_TTL, 100_000)
    service = await make_service(cache=tiers, fallback=None)
    for _ in range(2):
        with pytest.raises(NotFound):
            await service.get("nope.png")
    assert origin.fetch_count == 1


async def test_a_purge_ends_a_remembered_miss(service: ImageService,
                                              origin: FakeOrigin) -> None:
    await service.get("new.png")
    origin.put("new.png", NEW)  # an upload: stored, then purged everywhere
    await service.purge_local("new.png")
    served = await service.get("new.png")
    assert served.layer is Layer.MISS and body_of(served) == NEW


async def test_a_miss_learned_before_a_purge_is_not_remembered_after_it(
        service: ImageService, origin: FakeOrigin) -> None:
    origin.hold()
    request = asyncio.create_task(service.get("new.png"))
    await until(origin.started.is_set)
    await service.purge_local("new.png")  # the upload lands while the 404 is on its way
    origin.release()
    assert (await request).layer is Layer.FALLBACK
    origin.put("new.png", NEW)
    assert (await service.get("new.png")).layer is Layer.MISS


async def test_distrust_ends_a_remembered_miss(service: ImageService, origin: FakeOrigin,
                                               clock: FakeClock) -> None:
    await service.get("new.png")
    origin.put("new.png", NEW)  # uploaded through a replica we did not hear
    clock.advance(1)
    service.distrust()
    assert (await service.get("new.png")).layer is Layer.MISS


async def test_the_url_api_uses_and_feeds_the_remembered_miss(
        service: ImageService, origin: FakeOrigin) -> None:
    with pytest.raises(NotFound):
        await service.url("nope.png")  # HEAD: missing
    with pytest.raises(NotFound):
        await service.url("nope.png")
    assert (await service.get("nope.png")).layer is Layer.FALLBACK
    assert origin.fetch_count == 0 and service.stats.negative_hits == 2


async def test_a_miss_is_not_remembered_when_turned_off(make_service: MakeService,
                                                        origin: FakeOrigin) -> None:
    service = await make_service(fallback=FALLBACK)  # the tiers' default: off
    await service.get("nope.png")
    await service.get("nope.png")
    assert origin.fetch_count == 2 and service.stats.negative_hits == 0
