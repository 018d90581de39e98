"""ImageService's read path: which layer answers, how often the origin is asked, and
what the counters say. A fake origin, real cache tiers, real single-flight, and a
cluster lease without Redis (every replica-level decision is local)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import NotFound, OriginError
from gateway.model import FileBlob, Layer, Served
from gateway.observe.counters import Stats
from tests.support.fakes import (
    T0,
    FakeClock,
    FakeOrigin,
    blob,
    body_of,
    record_handed_out,
    until,
)

from .conftest import TTL, MakeService, MakeTiers

PNG = b"\x89PNG first version"
BIG = bytes(range(256)) * 20  # over the memory object cap: served from disk as a file


def counts(stats: Stats) -> tuple[int, int, int, int]:
    return stats.memory.hits, stats.memory.misses, stats.disk.hits, stats.disk.misses


# -- hits and misses ------------------------------------------------------------------


async def test_miss_fetches_once_then_memory_hits(make_service: MakeService,
                                                  origin: FakeOrigin) -> None:
    etag = origin.put("a.png", PNG)
    service = await make_service()
    first = await service.get("a.png")
    assert first.layer is Layer.MISS and body_of(first) == PNG
    meta = first.entry.meta
    assert (meta.stored_at, meta.expires_at, meta.origin_etag) == (T0, T0 + TTL, etag)
    second = await service.get("a.png")
    assert second.layer is Layer.MEMORY and body_of(second) == PNG
    assert origin.fetches == [("a.png", None)]
    stats = service.stats
    assert counts(stats) == (1, 1, 0, 1)
    assert (stats.origin_fetches, stats.bytes_from_origin) == (1, len(PNG))
    assert await service.cached("a.png") and not await service.cached("b.png")


async def test_disk_hit_after_memory_loses_the_entry(make_service: MakeService,
                                                     origin: FakeOrigin) -> None:
    origin.put("a.png", PNG)
    service = await make_service()
    await service.get("a.png")
    await service.cache.memory.clear()
    hit = await service.get("a.png")
    assert hit.layer is Layer.DISK and body_of(hit) == PNG
    assert (await service.get("a.png")).layer is Layer.MEMORY  # promoted
    assert origin.fetch_count == 1
    assert counts(service.stats) == (1, 2, 1, 1)


async def test_large_object_is_served_from_disk_as_a_file(make_service: MakeService,
                                                          origin: FakeOrigin) -> None:
    origin.put("big.png", BIG)
    service = await make_service()
    assert (await service.get("big.png")).layer is Layer.MISS
    for _ in range(2):
        hit = await service.get("big.png")
        assert hit.layer is Layer.DISK and isinstance(hit.entry, FileBlob)
        assert body_of(hit) == BIG
        hit.entry.close()
    assert origin.fetch_count == 1


async def test_without_disk_only_memory_is_counted(make_service: MakeService,
                                                   make_tiers: MakeTiers,
                                                   origin: FakeOrigin) -> None:
    origin.put("a.png", PNG)
    service = await make_service(cache=await make_tiers(disk=False))
    assert (await service.get("a.png")).layer is Layer.MISS
    assert (await service.get("a.png")).layer is Layer.MEMORY
    assert counts(service.stats) == (1, 1, 0, 0)


async def test_concurrent_misses_share_one_origin_fetch(make_service: MakeService,
                                                        origin: FakeOrigin) -> None:
    origin.put("a.png", PNG)
    service = await make_service()
    origin.hold()
    gets = [asyncio.create_task(service.get("a.png")) for _ in range(5)]
    await until(lambda: service.stats.memory.misses == 5)  # every one joined the flight
    origin.release()
    served = await asyncio.gather(*gets)
    assert sorted(s.layer for s in served) == [Layer.COALESCED] * 4 + [Layer.MISS]
    assert all(body_of(s) == PNG for s in served)
    assert origin.fetch_count == 1
    assert (service.stats.coalesced, service.stats.origin_fetches) == (4, 1)


# -- expired copies: revalidation and stale serving -----------------------------------


async def test_expired_copy_revalidated_without_download(make_service: MakeService,
                                                         origin: FakeOrigin,
                                                         clock: FakeClock) -> None:
    etag = origin.put("a.png", PNG)
    service = await make_service()
    await service.get("a.png")
    clock.advance(TTL + 5)
    served = await service.get("a.png")
    assert served.layer is Layer.REVALIDATED and body_of(served) == PNG
    assert served.entry.meta.expires_at == clock() + TTL
    assert origin.fetches[-1] == ("a.png", etag)
    stats = service.stats
    assert (stats.origin_fetches, stats.origin_not_modified) == (2, 1)
    assert stats.bytes_from_origin == len(PNG)  # downloaded once
    assert (await service.get("a.png")).layer is Layer.MEMORY
    await service.cache.memory.clear()
    assert (await service.get("a.png")).layer is Layer.DISK  # the disk copy was renewed too
    assert origin.fetch_count == 2


async def test_expired_file_revalidated_keeps_serving_the_file(make_service: MakeService,
                                                               origin: FakeOrigin,
                                                               clock: FakeClock) -> None:
    origin.put("big.png", BIG)
    service = await make_service()
    await service.get("big.png")
    clock.advance(TTL + 5)
    served = await service.get("big.png")
    assert served.layer is Layer.REVALIDATED and isinstance(served.entry, FileBlob)
    assert served.entry.meta.expires_at == clock() + TTL and body_of(served) == BIG
    served.entry.close()
    hit = await service.get("big.png")
    assert hit.layer is Layer.DISK and hit.entry.meta.expires_at == clock() + TTL
    hit.entry.close()


async def test_expired_copy_replaced_when_the_origin_has_new_bytes(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", PNG)
    service = await make_service()
    await service.get("a.png")
    clock.advance(TTL + 5)
    origin.put("a.png", b"second version")
    served = await service.get("a.png")
    assert served.layer is Layer.MISS and body_of(served) == b"second version"
    assert body_of(await service.get("a.png")) == b"second version"


async def test_concurrent_revalidation_serves_every_caller_the_renewed_copy(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", PNG)
    service = await make_service()
    await service.get("a.png")
    clock.advance(TTL + 5)
    origin.hold()
    gets = [asyncio.create_task(service.get("a.png")) for _ in range(3)]
    await until(lambda: service.stats.memory.misses == 4)
    origin.release()
    served = await asyncio.gather(*gets)
    assert sorted(s.layer for s in served) == [Layer.COALESCED] * 2 + [Layer.REVALIDATED]
    assert all(body_of(s) == PNG and s.entry.meta.expires_at == clock() + TTL
               for s in served)
    assert origin.fetch_count == 2


@pytest.mark.usefixtures("fast_retries")
async def test_origin_error_with_an_expired_copy_serves_it_stale(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", PNG)
    service = await make_service()
    await service.get("a.png")
    clock.advance(TTL + 5)
    origin.fail(OriginError("down"))
    served = await service.get("a.png")
    assert served.layer is Layer.STALE and body_of(served) == PNG
    assert served.entry.meta.expires_at == T0 + TTL  # not passed off as fresh
    assert (service.stats.stale_served, service.stats.origin_errors) == (1, 1)
    origin.fail(None)  # the background refresh (test_service_background.py) ends
    await until(lambda: service.stats.origin_not_modified == 1)


async def test_origin_error_without_a_copy_is_raised(make_service: MakeService,
                                                     origin: FakeOrigin) -> None:
    origin.fail(OriginError("down"))
    service = await make_service()
    with pytest.raises(OriginError):
        await service.get("a.png")
    assert (service.stats.stale_served, service.stats.origin_errors) == (0, 1)
    origin.fail(None)
    origin.put("a.png", PNG)
    assert (await service.get("a.png")).layer is Layer.MISS  # the failure was not cached


# -- the origin says it is gone --------------------------------------------------------


async def test_not_found_without_fallback_raises(make_service: MakeService) -> None:
    service = await make_service()
    with pytest.raises(NotFound):
        await service.get("nope.png")
    assert (service.stats.origin_not_found, service.stats.fallback_served) == (1, 0)


async def test_not_found_serves_the_fallback_uncached(make_service: MakeService,
                                                     origin: FakeOrigin) -> None:
    fallback = blob(b"default picture", ttl=float("inf"))
    service = await make_service(fallback=fallback)
    for _ in range(2):
        served = await service.get("nope.png")
        assert served.layer is Layer.FALLBACK and served.entry is fallback
    assert service.fallback_for_unknown() == Served(Layer.FALLBACK, fallback)
    assert origin.fetch_count == 2
    assert (service.stats.origin_not_found, service.stats.fallback_served) == (2, 3)


@pytest.mark.parametrize("body", [PNG, BIG], ids=["blob", "file"])
async def test_copy_purged_when_the_origin_says_it_is_gone(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock,
        monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    origin.put("a.png", body)
    fallback = blob(b"default picture", ttl=float("inf"))
    service = await make_service(fallback=fallback)
    await service.get("a.png")
    old_key = service.cache.key_for("a.png")
    clock.advance(TTL + 5)
    origin.remove("a.png")
    handed_out = record_handed_out(service.cache.disk, monkeypatch)
    served = await service.get("a.png")
    assert served.layer is Layer.FALLBACK and served.entry is fallback
    assert service.version_of("a.png") == 1
    assert await service.cache.any_copy(old_key) is None
    files = [e for e in handed_out if isinstance(e, FileBlob)]
    assert len(files) == (1 if body is BIG else 0) and all(f.file.closed for f in files)
    found = await service.cache.lookup(service.cache.key_for("a.png"), clock())
    assert found.hit is None and found.stale is None
