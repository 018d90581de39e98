"""The soak's two open findings (bench/SOAK-NOTES.md 4-5), against a real redis-server:
a lease holder whose origin fetch failed tells the waiters at once, and a release that
meets a pooled connection broken by a Redis restart is tried once more."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.cluster.connect import open_redis
from gateway.cluster.fill import Failed
from gateway.cluster.lease import FAILED_TTL, ClusterFlight, Landed, Lease
from gateway.cluster.redis import RedisHealth, RedisKeys, RedisLink
from gateway.config import RedisConfig
from gateway.errors import OriginError, OriginTimeout
from gateway.model import Blob
from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections
from gateway.service import FlightResult, ImageService
from gateway.singleflight import SingleFlight
from tests.support.fakes import FakeClock, FakeOrigin, blob, until
from tests.support.redis_server import RedisServer

from .conftest import DEPLOYMENT, PREFIX, TTL, MakeLink, MakeTiers, fill_codec
from .test_lease import FILL_KEY, LEASE_KEY, PNG, K, flight, wait


@pytest.mark.parametrize("status", [502, 504])
async def test_waiters_learn_at_once_that_the_holders_fetch_failed(
        make_link: MakeLink, redis: Redis, status: int) -> None:
    holder, waiter = flight(make_link()), flight(make_link())  # waiter's own wait: 30 s
    lease = await holder.acquire(K)
    assert isinstance(lease, Lease)
    waiting = asyncio.create_task(wait(waiter))
    await holder.release(lease, None, failed=status)
    assert await waiting == Landed(Failed(status))
    # Only the waiters of this fetch need it: the next request tries the origin again.
    assert 0 < await redis.pttl(FILL_KEY) <= FAILED_TTL * 1000
    assert await redis.exists(LEASE_KEY) == 0


def test_a_failed_marker_repeats_only_the_gateways_own_statuses() -> None:
    codec = fill_codec()
    assert codec.unpack(K, codec.pack_failed(K, 504)) == Failed(504)
    assert codec.unpack(K, codec.pack_failed(K, 200)) == Failed(502)


async def _service(link: RedisLink, origin: FakeOrigin, tiers: MakeTiers,
                   clock: FakeClock) -> ImageService:
    cluster = flight(link, wait_timeout=30.0)
    return ImageService(cache=await tiers(), origin=origin, cluster=cluster,
                        flights=SingleFlight[FlightResult](60.0), stats=Stats(),
                        fallback=None, ttl=TTL, clock=clock)


@pytest.mark.parametrize("error", [OriginTimeout("slow body"), OriginError("500")])
async def test_a_replica_waiting_on_a_failed_fetch_does_not_fetch_again(
        make_link: MakeLink, make_tiers: MakeTiers, clock: FakeClock,
        error: OriginError) -> None:
    # Before: the waiter found the lease gone without a result and fetched itself,
    # failing again after another whole origin budget (a 504 after twice the budget).
    origin = FakeOrigin()
    origin.put("a.png", PNG)
    first = await _service(make_link(), origin, make_tiers, clock)
    second = await _service(make_link(), origin, make_tiers, clock)
    try:
        gate = origin.hold()
        origin.fail(error)
        holding = asyncio.create_task(first.get("a.png"))
        await origin.started.wait()
        waiting = asyncio.create_task(second.get("a.png"))
        await asyncio.sleep(0.2)  # the second replica is polling for the holder's result
        gate.set()
        for task in (holding, waiting):
            with pytest.raises(type(error)):
                await asyncio.wait_for(task, 5.0)
        assert origin.fetch_count == 1
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def gateway_link(redis_server: RedisServer, redis_url: str
                       ) -> AsyncIterator[RedisLink]:
    """A link with the gateway's own client (one attempt per call: cluster/connect.py)."""
    async with contextlib.AsyncExitStack() as stack:
        client = open_redis(RedisConfig(url=redis_url), stack)
        yield RedisLink(client, RedisKeys(PREFIX, DEPLOYMENT), RedisHealth(True, backoff=1.0))


async def test_a_release_that_meets_a_broken_pooled_connection_is_tried_again(
        gateway_link: RedisLink, redis_server: RedisServer, redis: Redis) -> None:
    stats = Stats()
    holder = ClusterFlight(gateway_link, lease_ttl=5.0, wait_timeout=5.0, poll_interval=0.01,
                           fill_max_bytes=10_000, fill_ttl=30, codec=fill_codec(),
                           rejected=RedisRejections(stats), stats=stats)
    lease = await holder.acquire(K)  # leaves a pooled connection behind
    assert isinstance(lease, Lease)
    redis_server.stop()  # restarted: the pooled connection is now broken
    redis_server.start()
    # What the lease looked like to the others (a Redis with persistence keeps it).
    await redis.set(LEASE_KEY, lease.token, px=5000)
    result: Blob = blob(PNG)
    await holder.release(lease, result)
    assert stats.lease_release_retries == 1  # gateway_lease_release_retries_total
    assert await redis.exists(LEASE_KEY) == 0  # the waiters are not left hanging
    assert await redis.exists(FILL_KEY) == 1


async def test_a_lease_set_while_redis_stalled_is_released_once_it_answers(
        redis_server: RedisServer, redis_url: str, redis: Redis) -> None:
    # Redis paused (or partitioned) runs the SET it had queued when it resumes: a lease
    # that the replica which sent it never knew it held, and others would wait on.
    async with contextlib.AsyncExitStack() as stack:
        client = open_redis(RedisConfig(url=redis_url), stack)
        link = RedisLink(client, RedisKeys(PREFIX, DEPLOYMENT), RedisHealth(True, backoff=0))
        holder = flight(link)
        assert isinstance(await holder.acquire("warm.png/0/"), Lease)  # connected
        redis_server.pause()
        try:
            assert await holder.acquire(K) is None  # no answer: fetch locally
        finally:
            redis_server.resume()

        async def orphaned() -> bool:
            return bool(await redis.exists(LEASE_KEY))

        await until(orphaned, timeout=5)
        assert isinstance(await holder.acquire("b.png/0/"), Lease)  # Redis answers again
        assert await redis.exists(LEASE_KEY) == 0
