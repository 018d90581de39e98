"""AliasStore: user -> image, in process without Redis, in Redis with a bounded local
copy otherwise."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.cluster.aliases import AliasStore
from gateway.cluster.redis import RedisLink
from gateway.errors import Unavailable
from tests.support.redis_server import RedisServer

from .conftest import MakeLink

# -- without Redis: the store itself ---------------------------------------------------------


async def test_local_store_sets_resolves_deletes(no_redis: RedisLink) -> None:
    aliases = AliasStore(no_redis)
    assert await aliases.resolve("bob") is None
    await aliases.set("bob", "b1.png")
    await aliases.set("eve", "e1.png")
    assert await aliases.resolve("bob") == "b1.png"
    await aliases.set("bob", "b2.png")
    assert await aliases.resolve("bob") == "b2.png"
    await aliases.delete("bob")
    assert await aliases.resolve("bob") is None
    assert await aliases.resolve("eve") == "e1.png"


async def test_local_store_survives_forget_all(no_redis: RedisLink) -> None:
    aliases = AliasStore(no_redis)
    await aliases.set("bob", "b1.png")
    aliases.forget_all()  # a resync: only ever drops copies, and this is no copy
    assert await aliases.resolve("bob") == "b1.png"


# -- with Redis -------------------------------------------------------------------------------


async def test_set_is_stored_in_redis_for_every_replica(make_link: MakeLink,
                                                        redis: Redis) -> None:
    here, there = AliasStore(make_link()), AliasStore(make_link())
    await here.set("bob", "b1.png")
    assert await redis.get("test:user:bob") == b"b1.png"
    assert await there.resolve("bob") == "b1.png"
    await here.delete("bob")
    assert await redis.exists("test:user:bob") == 0
    assert await here.resolve("bob") is None


async def test_local_copy_is_used_until_forgotten(link: RedisLink, redis: Redis) -> None:
    aliases = AliasStore(link)
    await redis.set("test:user:bob", "b1.png")
    assert await aliases.resolve("bob") == "b1.png"
    assert await aliases.resolve("nobody") is None
    await redis.set("test:user:bob", "b2.png")  # changed by another replica
    await redis.set("test:user:nobody", "n1.png")
    assert await aliases.resolve("bob") == "b1.png"
    assert await aliases.resolve("nobody") is None  # "no alias" is remembered too
    aliases.forget("bob")
    aliases.forget("nobody")
    assert await aliases.resolve("bob") == "b2.png"
    assert await aliases.resolve("nobody") == "n1.png"


async def test_forget_all_drops_every_local_copy(link: RedisLink, redis: Redis) -> None:
    aliases = AliasStore(link)
    await redis.mset({"test:user:bob": "b1.png", "test:user:eve": "e1.png"})
    assert await aliases.resolve("bob") == "b1.png" and await aliases.resolve("eve") == "e1.png"
    await redis.mset({"test:user:bob": "b2.png", "test:user:eve": "e2.png"})
    aliases.forget_all()
    assert await aliases.resolve("bob") == "b2.png" and await aliases.resolve("eve") == "e2.png"


async def test_own_changes_replace_the_local_copy(link: RedisLink) -> None:
    aliases = AliasStore(link)
    await aliases.set("bob", "b1.png")
    assert await aliases.resolve("bob") == "b1.png"
    await aliases.set("bob", "b2.png")
    assert await aliases.resolve("bob") == "b2.png"
    await aliases.delete("bob")
    assert await aliases.resolve("bob") is None


async def test_local_copy_is_bounded_least_recently_used_first(link: RedisLink,
                                                               redis: Redis) -> None:
    aliases = AliasStore(link, max_local=2)
    await redis.mset({f"test:user:{u}": f"{u}1.png" for u in ("a", "b", "c")})
    await aliases.resolve("a")
    await aliases.resolve("b")
    await aliases.resolve("a")  # used again: b is now the oldest
    await aliases.resolve("c")
    await redis.mset({f"test:user:{u}": f"{u}2.png" for u in ("a", "b", "c")})
    assert await aliases.resolve("c") == "c1.png"
    assert await aliases.resolve("a") == "a1.png"
    assert await aliases.resolve("b") == "b2.png"  # dropped, so read again


@pytest.mark.parametrize("outage", ["pause", "kill"])
async def test_changes_need_redis(link: RedisLink, redis_server: RedisServer,
                                  outage: str) -> None:
    aliases = AliasStore(link)
    await aliases.set("bob", "b1.png")
    assert await aliases.resolve("bob") == "b1.png"
    try:
        getattr(redis_server, outage)()
        with pytest.raises(Unavailable, match="alias not changed") as info:
            await aliases.set("bob", "b2.png")
        assert info.value.status == 503
        with pytest.raises(Unavailable, match="alias not removed"):
            await aliases.delete("bob")
        assert await aliases.resolve("bob") == "b1.png"  # the last known alias is served
    finally:
        redis_server.ensure_running()


async def test_resolve_while_redis_is_down_is_not_remembered(
        link: RedisLink, redis: Redis, redis_server: RedisServer) -> None:
    aliases = AliasStore(link)
    await redis.set("test:user:bob", "b1.png")
    try:
        redis_server.pause()
        assert await aliases.resolve("bob") is None
    finally:
        redis_server.resume()
    assert await aliases.resolve("bob") == "b1.png"  # asked again, not a remembered miss
