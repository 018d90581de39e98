"""ImageService's background work: refresh-ahead, retries after an origin failure,
and ending that work (purge_local, close)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gateway.errors import OriginError
from gateway.model import Layer
from gateway.service import ImageService
from tests.support.fakes import FakeClock, FakeOrigin, body_of, until

from .conftest import TTL, MakeService

pytestmark = pytest.mark.usefixtures("fast_retries")

OLD = b"\x89PNG old"
NEW = b"\x89PNG new"


def refreshing(service: ImageService, key: str) -> bool:
    """Whether a background refresh of ``key`` is running (the service's own tasks)."""
    return service.refresher.running(key)


def background_tasks(service: ImageService) -> int:
    return len(service.refresher)


def fresh_in_memory(service: ImageService, image_id: str) -> bytes | None:
    entry = service.cache.in_memory(service.cache.key_for(image_id))
    return entry.body if entry is not None and entry.meta.fresh(service.clock()) else None


async def serving_stale(make_service: MakeService, origin: FakeOrigin,
                        clock: FakeClock) -> ImageService:
    """A service that has just served OLD stale (the origin fails; 2 fetches so far):
    its background refresh is about to retry."""
    origin.put("a.png", OLD)
    service = await make_service()
    await service.get("a.png")
    clock.advance(TTL + 5)
    origin.fail(OriginError("down"))
    assert (await service.get("a.png")).layer is Layer.STALE
    assert refreshing(service, service.cache.key_for("a.png"))
    return service


# -- refresh-ahead ----------------------------------------------------------------------


async def test_hit_far_from_expiry_starts_no_refresh(make_service: MakeService,
                                                     origin: FakeOrigin,
                                                     clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    clock.advance(TTL - 11)
    assert (await service.get("a.png")).layer is Layer.MEMORY
    assert background_tasks(service) == 0 and origin.fetch_count == 1


async def test_hit_near_expiry_revalidates_once_in_the_background(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    etag = origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    key = service.cache.key_for("a.png")
    clock.advance(TTL - 5)
    origin.hold()
    for _ in range(4):  # every hit is answered at once, from memory
        served = await service.get("a.png")
        assert served.layer is Layer.MEMORY and body_of(served) == OLD
    await until(origin.started.is_set)
    assert refreshing(service, key)
    origin.release()
    await until(lambda: not refreshing(service, key))
    assert origin.fetches == [("a.png", None), ("a.png", etag)]  # one revalidation
    renewed = service.cache.in_memory(key)
    assert renewed is not None and renewed.meta.expires_at == clock() + TTL
    assert (await service.get("a.png")).layer is Layer.MEMORY
    assert background_tasks(service) == 0  # fresh again: no further refresh
    assert service.stats.origin_not_modified == 1


async def test_refresh_ahead_picks_up_new_bytes(make_service: MakeService,
                                                origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    clock.advance(TTL - 5)
    origin.put("a.png", NEW)
    assert body_of(await service.get("a.png")) == OLD  # served now, refreshed behind
    await until(lambda: fresh_in_memory(service, "a.png") == NEW)
    assert origin.fetch_count == 2


async def test_failed_refresh_ahead_is_not_retried(make_service: MakeService,
                                                   origin: FakeOrigin,
                                                   clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    clock.advance(TTL - 5)
    origin.fail(OriginError("down"))
    assert (await service.get("a.png")).layer is Layer.MEMORY
    await until(lambda: background_tasks(service) == 0)
    assert origin.fetch_count == 2  # the entry is still fresh: no retry loop


# -- after an origin failure ----------------------------------------------------------------


async def test_stale_copy_refreshed_in_the_background_until_the_origin_answers(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    await until(lambda: origin.fetch_count >= 5)  # retrying, not giving up
    assert (await service.get("a.png")).layer is Layer.STALE
    origin.fail(None)
    origin.put("a.png", NEW)
    await until(lambda: fresh_in_memory(service, "a.png") == NEW)
    await until(lambda: background_tasks(service) == 0)
    served = await service.get("a.png")
    assert served.layer is Layer.MEMORY and body_of(served) == NEW
    assert service.stats.stale_served == 2


async def test_one_retry_loop_however_many_stale_answers(make_service: MakeService,
                                                         origin: FakeOrigin,
                                                         clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    for _ in range(5):
        assert (await service.get("a.png")).layer is Layer.STALE
    assert background_tasks(service) == 1
    origin.fail(None)
    await until(lambda: background_tasks(service) == 0)


# -- ending background work ----------------------------------------------------------------


async def sleeping_between_attempts(service: ImageService, origin: FakeOrigin) -> None:
    """Until the retrying refresh has failed once and sleeps (for good: scale 1000)."""
    key = service.cache.key_for("a.png")
    await until(lambda: origin.fetch_count == 3 and not service.flights.in_flight(key))
    for _ in range(10):  # the refresh task resumes and starts its sleep
        await asyncio.sleep(0)


async def test_purge_local_cancels_the_retrying_refresh(make_service: MakeService,
                                                        origin: FakeOrigin, clock: FakeClock,
                                                        fast_retries: SimpleNamespace) -> None:
    fast_retries.scale = 1000
    service = await serving_stale(make_service, origin, clock)
    key = service.cache.key_for("a.png")
    await sleeping_between_attempts(service, origin)
    await service.purge_local("a.png")
    assert not refreshing(service, key)
    await until(lambda: background_tasks(service) == 0)
    assert service.version_of("a.png") == 1


async def test_purge_local_cancels_a_refresh_ahead_in_flight(make_service: MakeService,
                                                             origin: FakeOrigin,
                                                             clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    key = service.cache.key_for("a.png")
    clock.advance(TTL - 5)
    origin.hold()
    await service.get("a.png")
    await until(origin.started.is_set)
    await service.purge_local("a.png")
    await until(lambda: background_tasks(service) == 0)
    origin.release()
    await until(lambda: not service.flights.in_flight(key))
    served = await service.get("a.png")  # the purge's new key: a fresh fetch
    assert served.layer is Layer.MISS and origin.fetch_count == 3


async def test_purge_local_with_the_current_version_keeps_the_refresh(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    key = service.cache.key_for("a.png")
    await service.purge_local("a.png", 0)  # our own purge coming back: already applied
    assert refreshing(service, key) and service.version_of("a.png") == 0
    assert service.cache.in_memory(key) is not None
    origin.fail(None)
    await until(lambda: background_tasks(service) == 0)


async def test_close_ends_background_refreshes(make_service: MakeService,
                                               origin: FakeOrigin, clock: FakeClock) -> None:
    origin.put("a.png", OLD)
    service = await make_service(refresh_ahead=10)
    await service.get("a.png")
    clock.advance(TTL - 5)
    origin.hold()
    await service.get("a.png")
    await until(origin.started.is_set)
    await service.close()
    assert background_tasks(service) == 0 and len(service.flights) == 0
    assert origin.cancelled == 1  # the origin fetch itself was cancelled


async def test_close_ends_a_retry_loop_between_attempts(make_service: MakeService,
                                                        origin: FakeOrigin, clock: FakeClock,
                                                        fast_retries: SimpleNamespace) -> None:
    fast_retries.scale = 1000
    service = await serving_stale(make_service, origin, clock)
    await sleeping_between_attempts(service, origin)
    await service.close()
    assert background_tasks(service) == 0 and origin.fetch_count == 3


async def test_purge_local_cancels_a_retry_attempt_in_flight(make_service: MakeService,
                                                             origin: FakeOrigin,
                                                             clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    origin.hold()  # the refresh's first attempt waits at the origin
    await until(origin.started.is_set)
    await service.purge_local("a.png")
    await until(lambda: background_tasks(service) == 0)
    origin.release()
    await until(lambda: len(service.flights) == 0)
    assert origin.fetch_count == 3  # no further attempt


# A refresh is cancelled (purge_local, close) just after its origin attempt failed,
# before it resumed: Python 3.11's asyncio.wait_for (SingleFlight.run) then returns
# the finished flight's result -- here raises its OriginError -- instead of the
# cancellation, so the retry loop in ImageService._refresh keeps going.

async def _just_failed(service: ImageService, origin: FakeOrigin, attempts: int) -> None:
    """Run the loop until the refresh's next origin attempt has failed, and stop
    there: the flight is over, the refresh task has not resumed yet."""
    for _ in range(100_000):  # one turn of the loop at a time, to stop right there
        if origin.fetch_count >= attempts:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"no origin attempt {attempts}")


async def test_purge_local_stops_a_refresh_whose_attempt_just_failed(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    await _just_failed(service, origin, 3)
    await service.purge_local("a.png")
    try:
        await until(lambda: background_tasks(service) == 0, timeout=2.0,
                    what="the cancelled refresh ending")
    finally:
        origin.fail(None)  # lets a refresh that ignored its cancellation end


async def test_close_stops_a_refresh_whose_attempt_just_failed(
        make_service: MakeService, origin: FakeOrigin, clock: FakeClock) -> None:
    service = await serving_stale(make_service, origin, clock)
    await _just_failed(service, origin, 3)
    healed = False

    def heal() -> None:  # a bound: close() must not wait for the origin to recover
        nonlocal healed
        healed = True
        origin.fail(None)

    watchdog = asyncio.get_running_loop().call_later(2.0, heal)
    await service.close()
    watchdog.cancel()
    assert not healed, "close() returned only once the origin answered again"
    assert background_tasks(service) == 0
