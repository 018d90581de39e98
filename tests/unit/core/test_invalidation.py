"""Invalidator: purges and alias changes applied here and told to every replica, with
fake local caches, a real bus and a real redis-server (and without Redis)."""

from __future__ import annotations

import logging
import time

import pytest
from redis.asyncio import Redis

from gateway.cluster.aliases import AliasStore
from gateway.cluster.redis import RedisLink
from gateway.observe.counters import Stats
from gateway.origin.presign import MemoryUrlStore, SignedUrl
from tests.support.fakes import until
from tests.support.redis_server import RedisServer

from .conftest import BOUND, FakeCaches, MakeReplica

SIGNED = SignedUrl("https://s3.example/a.png?X-Amz-Signature=x", time.time() + 3600)


def accept_any(url: str) -> None:
    return None


def now_us() -> int:
    return time.time_ns() // 1000


async def resolves(aliases: AliasStore, user_id: str, expected: str | None) -> None:
    """Until ``aliases`` answers ``expected`` (its local copy goes once the message
    arrives)."""
    async def answers() -> bool:
        return await aliases.resolve(user_id) == expected

    await until(answers, timeout=BOUND)


# -- purge ---------------------------------------------------------------------------------


async def test_purge_everywhere(make_replica: MakeReplica, redis: Redis) -> None:
    here = make_replica(FakeCaches(a=5))
    there = await make_replica(FakeCaches(a=5)).listen()
    await here.urls.put("a.png", SIGNED, 60)
    assert await redis.exists("test:dep:url:a.png:v1") == 1
    floor = now_us()
    result = await here.invalidator.purge("a.png")
    assert result.image_id == "a.png" and result.propagated is True
    assert result.version >= floor  # above any version used before (time in µs)
    assert await redis.get("test:dep:ver:a.png") == str(result.version).encode()
    assert await redis.exists("test:dep:url:a.png:v1") == 0
    assert here.caches.purged == [("a.png", result.version)]
    await until(lambda: there.caches.purged != [])
    assert there.caches.purged == [("a.png", result.version)]


async def test_purge_goes_above_the_local_version(make_replica: MakeReplica) -> None:
    ahead = now_us() + 10**12
    here = make_replica(FakeCaches(a=ahead))
    assert (await here.invalidator.purge("a.png")).version == ahead + 1


async def test_purge_goes_above_the_version_in_redis(make_replica: MakeReplica,
                                                     redis: Redis) -> None:
    stored = now_us() + 10**12
    await redis.set("test:dep:ver:a.png", stored)
    here = make_replica(FakeCaches(a=5))
    result = await here.invalidator.purge("a.png")
    assert result.version == stored + 1 and here.caches.purged == [("a.png", stored + 1)]


async def test_purge_while_redis_is_down_applies_locally(
        make_replica: MakeReplica, redis_server: RedisServer,
        caplog: pytest.LogCaptureFixture) -> None:
    urls = MemoryUrlStore(Stats())
    await urls.put("a.png", SIGNED, 60)
    here = make_replica(FakeCaches(a=5), urls=urls)
    floor = now_us()
    try:
        redis_server.kill()
        with caplog.at_level(logging.WARNING, "gateway.cluster.invalidation"):
            result = await here.invalidator.purge("a.png")
    finally:
        redis_server.ensure_running()
    assert result.propagated is False and result.version >= floor
    assert here.caches.purged == [("a.png", result.version)]
    assert await urls.get("a.png", accept_any) is None
    assert "applied locally only" in caplog.text


async def test_purge_without_redis(make_replica: MakeReplica, no_redis: RedisLink,
                                   caplog: pytest.LogCaptureFixture) -> None:
    urls = MemoryUrlStore(Stats())
    await urls.put("a.png", SIGNED, 60)
    here = make_replica(FakeCaches(a=5), link=no_redis, urls=urls)
    floor = now_us()
    with caplog.at_level(logging.WARNING, "gateway.cluster.invalidation"):
        result = await here.invalidator.purge("a.png")
    assert result.propagated is False and result.version >= floor
    assert here.caches.purged == [("a.png", result.version)]
    assert await urls.get("a.png", accept_any) is None
    assert caplog.text == ""  # nothing is wrong: there is no cluster to tell


# -- what the others tell us ---------------------------------------------------------------------


async def test_message_with_an_unreadable_version_still_purges(
        make_replica: MakeReplica) -> None:
    here = make_replica(FakeCaches(a=5))
    await here.invalidator.on_image("a.png", -1)  # the bus could not read the version
    await here.invalidator.on_image("a.png", 9)
    assert here.caches.purged == [("a.png", None), ("a.png", 9)]


async def test_resync_applies_only_newer_versions(make_replica: MakeReplica,
                                                  redis: Redis) -> None:
    await redis.mset({"test:dep:ver:a.png": 7, "test:dep:ver:b.png": 3, "test:dep:ver:c.png": 1,
                      "test:dep:ver:d.png": 9})
    there = await make_replica(FakeCaches(a=5, b=9, d=9)).listen()
    assert sorted(there.caches.purged) == [("a.png", 7), ("c.png", 1)]


async def test_resync_forgets_alias_copies(make_replica: MakeReplica, redis: Redis) -> None:
    there = make_replica()
    await redis.set("test:dep:user:bob", "b1.png")
    assert await there.aliases.resolve("bob") == "b1.png"
    await redis.set("test:dep:user:bob", "b2.png")  # changed while we were not listening
    await there.invalidator.on_resync({})
    assert await there.aliases.resolve("bob") == "b2.png"


async def test_alias_changes_reach_the_other_replicas(make_replica: MakeReplica) -> None:
    here = make_replica()
    there = await make_replica().listen()
    await here.aliases.set("bob", "b1.png")
    assert await there.aliases.resolve("bob") == "b1.png"  # now a local copy there
    assert await here.invalidator.set_alias("bob", "b2.png") is True
    await resolves(there.aliases, "bob", "b2.png")
    assert await here.invalidator.delete_alias("bob") is True
    await resolves(there.aliases, "bob", None)


async def test_alias_change_without_redis_is_local(make_replica: MakeReplica,
                                                   no_redis: RedisLink) -> None:
    here = make_replica(link=no_redis, urls=MemoryUrlStore(Stats()))
    assert await here.invalidator.set_alias("bob", "b1.png") is False  # nobody to tell
    assert await here.aliases.resolve("bob") == "b1.png"
    assert await here.invalidator.delete_alias("bob") is False
    assert await here.aliases.resolve("bob") is None


async def test_every_subscription_distrusts_the_local_copies(make_replica: MakeReplica,
                                                             redis: Redis) -> None:
    there = await make_replica(FakeCaches(a=5)).listen()
    assert there.caches.distrusted == 1  # what it cached before may predate missed purges
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await until(lambda: there.caches.distrusted == 2, timeout=BOUND)
