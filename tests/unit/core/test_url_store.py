"""RedisUrlStore on a real redis-server: what it reads back is checked like input,
and every read is counted once, as a hit or a miss (a rejected value is a miss)."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from gateway.cluster.redis import RedisLink
from gateway.cluster.urls import RedisUrlStore
from gateway.observe.counters import Stats
from gateway.origin.presign import SignedUrl

from .conftest import CountedRejections

URL = ("http://s3.test/b/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20300101T000000Z"
       "&X-Amz-Expires=3600")


def ours(url: str) -> str | None:
    return None if url.startswith("http://s3.test/b/") else "another endpoint"


def known(text: str) -> dict[str, int]:
    value = json.loads(text)
    if not isinstance(value, dict) or set(value) != {"size"}:
        raise ValueError("not what a probe stores")
    return value


def counts(stats: Stats) -> tuple[int, int, int, int]:
    return (stats.url_store_hits, stats.url_store_misses,
            stats.url_known_hits, stats.url_known_misses)


async def test_urls_read_back_are_checked_and_counted(link: RedisLink, redis: Redis,
                                                      rejected: CountedRejections) -> None:
    stats = Stats()
    store = RedisUrlStore(link, stats, rejected)
    assert await store.get("a.png", ours) is None  # absent: a miss, nothing rejected
    await store.put("a.png", SignedUrl(URL, 1.0), ttl=60)
    found = await store.get("a.png", ours)
    assert found is not None and found.url == URL
    assert found.expires_at == 1893456000 + 3600  # read from the URL itself
    for bad in ("http://evil.test/b/a.png", b"http://s3.test/b/\xff.png",
                "http://s3.test/b/a.png"):  # another host, not ASCII, no expiry
        await redis.set(link.keys.url("a.png"), bad)
        assert await store.get("a.png", ours) is None
    assert counts(stats) == (1, 4, 0, 0)
    assert rejected.stats.redis_rejected_url == 3


async def test_what_probes_learned_is_read_by_its_reader(link: RedisLink, redis: Redis,
                                                         rejected: CountedRejections) -> None:
    stats = Stats()
    store = RedisUrlStore(link, stats, rejected)
    assert await store.get_known("a.png", known) is None
    await store.put_known("a.png", '{"size": 3}', ttl=60)
    assert await store.get_known("a.png", known) == {"size": 3}
    for bad in ('{"size": 3, "host": "evil"}', b"\xff"):
        await redis.set(link.keys.known("a.png"), bad)
        assert await store.get_known("a.png", known) is None
    assert counts(stats) == (0, 0, 1, 3)
    assert rejected.stats.redis_rejected_known == 2
    await store.delete("a.png")
    assert await redis.exists(link.keys.url("a.png"), link.keys.known("a.png")) == 0
