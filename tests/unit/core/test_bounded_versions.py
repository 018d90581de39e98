"""Purge versions are bounded in time: a version is the time of its purge in µs, and
nothing cached before a purge is served later than disk.ttl + disk.max_stale after it,
so the ``ver`` keys in Redis expire then and each worker forgets its own copy of them."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from gateway.cache.memory import MemoryCache
from gateway.cache.tiers import NoDisk, TieredCache
from gateway.cluster.bus import InvalidationBus
from tests.support.fakes import FakeClock, blob

from .conftest import MakeLink

HORIZON = 1000.0  # disk.ttl + disk.max_stale


def micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


async def test_a_version_key_expires_after_the_horizon(make_link: MakeLink,
                                                       redis: Redis) -> None:
    bus = InvalidationBus(make_link(), version_ttl=int(HORIZON))
    version = await bus.bump("a.png", micros(time.time()))
    assert version is not None
    key = "test:dep:ver:a.png"
    assert await redis.get(key) == str(version).encode()
    assert 0 < await redis.ttl(key) <= HORIZON
    await redis.expire(key, 100)
    assert await bus.bump("a.png", 1) == version + 1  # still above the stored one
    assert await redis.ttl(key) > 100  # every purge restarts it


async def test_without_a_horizon_a_version_key_is_kept(make_link: MakeLink,
                                                       redis: Redis) -> None:
    bus = InvalidationBus(make_link())
    assert await bus.bump("a.png", micros(time.time())) is not None
    assert await redis.ttl("test:dep:ver:a.png") == -1


async def test_a_worker_forgets_versions_older_than_the_horizon() -> None:
    clock = FakeClock()
    memory = MemoryCache(1_000_000, 100_000, HORIZON, clock=clock)
    tiers = TieredCache(memory, NoDisk(), clock, version_horizon=HORIZON)
    await tiers.purge("old.png", micros(clock()))
    await tiers.store(tiers.key_for("old.png"), blob(now=clock()))
    clock.advance(HORIZON / 2)
    await tiers.purge("recent.png", micros(clock()))
    assert tiers.forget_versions() == 0  # both within the horizon
    clock.advance(HORIZON / 2 + 1)
    await tiers.purge("new.png", micros(clock()))  # sweeps on the way (once per horizon/16)
    assert set(tiers.versions) == {"recent.png", "new.png"}
    assert tiers.version_of("old.png") == 0
    # What was cached under the old version can no longer be served: it is past its
    # ttl + max_stale whatever key it is looked up under.
    assert tiers.in_memory(tiers.key_for("old.png")) is None


async def test_a_sweep_runs_at_most_once_per_sixteenth_of_the_horizon() -> None:
    clock = FakeClock()
    tiers = TieredCache(MemoryCache(1_000_000, 100_000, HORIZON, clock=clock), NoDisk(),
                        clock, version_horizon=HORIZON)
    await tiers.purge("old.png", micros(clock() - 2 * HORIZON))  # a version from long ago
    clock.advance(HORIZON / 32)
    await tiers.purge("b.png", micros(clock()))
    assert "old.png" in tiers.versions  # not yet time to sweep
    clock.advance(HORIZON / 16)
    await tiers.purge("c.png", micros(clock()))
    assert "old.png" not in tiers.versions


async def test_without_a_horizon_no_version_is_forgotten() -> None:
    clock = FakeClock()
    tiers = TieredCache(MemoryCache(1_000_000, 100_000, HORIZON, clock=clock), NoDisk(),
                        clock)
    await tiers.purge("old.png", 1)
    clock.advance(10 * HORIZON)
    await tiers.purge("b.png", micros(clock()))
    assert tiers.version_of("old.png") == 1
