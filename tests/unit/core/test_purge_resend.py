"""A purge taken while Redis is out of reach of this replica only is sent to the
other replicas once Redis takes it again: with a real redis-server, a TCP partition
between this replica and Redis, and replicas that kept their subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.cluster.redis import RedisHealth, RedisKeys, RedisLink
from gateway.observe.counters import Stats
from gateway.origin.presign import MemoryUrlStore
from tests.support.fakes import until
from tests.support.redis_server import RedisServer
from tests.support.tcp_proxy import TcpProxy

from .conftest import BOUND, DEPLOYMENT, PREFIX, REDIS_TIMEOUT, FakeCaches, MakeReplica, Replica

RESEND = 0.05


@pytest.fixture
def partition(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    yield proxy
    proxy.close()


@pytest.fixture
async def cut_off(make_replica: MakeReplica, partition: TcpProxy) -> AsyncIterator[Replica]:
    """A replica whose every Redis call goes through ``partition``."""
    client = Redis.from_url(f"redis://127.0.0.1:{partition.port}/0",
                            socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
                            retry=Retry(NoBackoff(), 0))
    link = RedisLink(client, RedisKeys(PREFIX, DEPLOYMENT), RedisHealth(True, backoff=0.0))
    replica = make_replica(FakeCaches(a=5, b=5), link=link, urls=MemoryUrlStore(Stats()))
    replica.invalidator.resend_interval = RESEND
    replica.invalidator.stats = Stats()
    yield await replica.listen()
    # The bus before the client: a listener cancelled while it reconnects through a
    # closed client can leave a socket behind.
    await replica.invalidator.close()
    await replica.bus.close()
    await client.aclose()


def purges_of(replica: Replica, key: str) -> list[int | None]:
    return [version for image_id, version in replica.caches.purged if image_id == key]


async def test_a_local_purge_reaches_the_others_when_redis_is_back(
        cut_off: Replica, make_replica: MakeReplica, partition: TcpProxy,
        redis: Redis) -> None:
    there = await make_replica(FakeCaches(a=5, b=5)).listen()
    partition.cut()
    result = await cut_off.invalidator.purge("a.png")
    assert result.propagated is False and cut_off.invalidator.unsent == 1
    await asyncio.sleep(RESEND * 5)  # attempts while cut off send nothing, lose nothing
    assert cut_off.invalidator.unsent == 1 and there.caches.purged == []

    partition.heal()
    await until(lambda: purges_of(there, "a.png") != [], timeout=BOUND)
    sent = int(await redis.get("test:dep:ver:a.png") or 0)
    assert purges_of(there, "a.png") == [sent] and sent > result.version
    await until(lambda: cut_off.invalidator.unsent == 0, timeout=BOUND)
    assert cut_off.invalidator.stats.purges_resent == 1
    assert purges_of(there, "b.png") == []  # only what was purged


async def test_a_purge_that_reached_redis_replaces_the_kept_one(
        cut_off: Replica, partition: TcpProxy) -> None:
    partition.cut()
    assert (await cut_off.invalidator.purge("a.png")).propagated is False
    cut_off.invalidator.resend_interval = 3600.0  # only the next purge can send it now
    partition.heal()

    async def purged_everywhere() -> bool:
        # The first call after the heal may meet a pooled connection the cut broke.
        return (await cut_off.invalidator.purge("a.png")).propagated

    await until(purged_everywhere, timeout=BOUND, interval=0.05)
    assert cut_off.invalidator.unsent == 0


async def test_the_kept_purges_are_bounded(cut_off: Replica, make_replica: MakeReplica,
                                          partition: TcpProxy) -> None:
    there = await make_replica(FakeCaches(a=5, b=5, c=5)).listen()
    cut_off.invalidator.max_unsent = 2
    partition.cut()
    for key in ("a.png", "b.png", "c.png"):
        assert (await cut_off.invalidator.purge(key)).propagated is False
    assert cut_off.invalidator.unsent == 2
    assert cut_off.invalidator.stats.purges_given_up == 1

    partition.heal()
    await until(lambda: cut_off.invalidator.unsent == 0, timeout=BOUND)
    await until(lambda: purges_of(there, "c.png") != [], timeout=BOUND)
    assert purges_of(there, "b.png") != [] and purges_of(there, "a.png") == []  # the oldest


async def test_nothing_is_kept_without_redis(make_replica: MakeReplica,
                                             no_redis: RedisLink) -> None:
    here = make_replica(FakeCaches(a=5), link=no_redis, urls=MemoryUrlStore(Stats()))
    assert (await here.invalidator.purge("a.png")).propagated is False
    assert here.invalidator.unsent == 0  # no other replica to tell
