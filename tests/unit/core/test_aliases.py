"""AliasStore: user -> image, in process without Redis, in Redis with a bounded local
copy otherwise."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from gateway.cluster.aliases import AliasStore, key_from_redis, migrate_legacy_aliases
from gateway.cluster.redis import RedisLink
from gateway.errors import AliasesFull, Unavailable
from tests.support.redis_server import RedisServer

from .conftest import CountedRejections, MakeLink

# -- without Redis: the store itself ---------------------------------------------------------


async def test_local_store_sets_resolves_deletes(no_redis: RedisLink) -> None:
    aliases = AliasStore(no_redis, CountedRejections())
    assert await aliases.resolve("bob") is None
    await aliases.set("bob", "b1.png")
    await aliases.set("eve", "e1.png")
    assert await aliases.resolve("bob") == "b1.png"
    await aliases.set("bob", "b2.png")
    assert await aliases.resolve("bob") == "b2.png"
    await aliases.delete("bob")
    assert await aliases.resolve("bob") is None
    assert await aliases.resolve("eve") == "e1.png"


async def test_local_store_refuses_a_new_alias_when_full(no_redis: RedisLink) -> None:
    """Without Redis the local map is the only copy: nothing is dropped to make room."""
    aliases = AliasStore(no_redis, CountedRejections(), max_local=2)
    await aliases.set("ann", "a1.png")
    await aliases.set("bob", "b1.png")
    with pytest.raises(AliasesFull) as refused:
        await aliases.set("eve", "e1.png")
    assert refused.value.status == 507
    await aliases.set("ann", "a2.png")  # a change of a kept alias takes no room
    assert [await aliases.resolve(u) for u in ("ann", "bob", "eve")] == [
        "a2.png", "b1.png", None]
    await aliases.delete("bob")
    await aliases.set("eve", "e1.png")
    assert await aliases.resolve("eve") == "e1.png"


async def test_local_store_survives_forget_all(no_redis: RedisLink) -> None:
    aliases = AliasStore(no_redis, CountedRejections())
    await aliases.set("bob", "b1.png")
    aliases.forget_all()  # a resync: only ever drops copies, and this is no copy
    assert await aliases.resolve("bob") == "b1.png"


# -- with Redis -------------------------------------------------------------------------------


async def test_set_is_stored_in_redis_for_every_replica(make_link: MakeLink,
                                                        redis: Redis) -> None:
    here = AliasStore(make_link(), CountedRejections())
    there = AliasStore(make_link(), CountedRejections())
    await here.set("bob", "b1.png")
    assert await redis.get("test:dep:user:bob") == b"b1.png"
    assert await there.resolve("bob") == "b1.png"
    await here.delete("bob")
    assert await redis.exists("test:dep:user:bob") == 0
    assert await here.resolve("bob") is None


async def test_local_copy_is_used_until_forgotten(link: RedisLink, redis: Redis) -> None:
    aliases = AliasStore(link, CountedRejections())
    await redis.set("test:dep:user:bob", "b1.png")
    assert await aliases.resolve("bob") == "b1.png"
    assert await aliases.resolve("nobody") is None
    await redis.set("test:dep:user:bob", "b2.png")  # changed by another replica
    await redis.set("test:dep:user:nobody", "n1.png")
    assert await aliases.resolve("bob") == "b1.png"
    assert await aliases.resolve("nobody") is None  # "no alias" is remembered too
    aliases.forget("bob")
    aliases.forget("nobody")
    assert await aliases.resolve("bob") == "b2.png"
    assert await aliases.resolve("nobody") == "n1.png"


async def test_forget_all_drops_every_local_copy(link: RedisLink, redis: Redis) -> None:
    aliases = AliasStore(link, CountedRejections())
    await redis.mset({"test:dep:user:bob": "b1.png", "test:dep:user:eve": "e1.png"})
    assert await aliases.resolve("bob") == "b1.png" and await aliases.resolve("eve") == "e1.png"
    await redis.mset({"test:dep:user:bob": "b2.png", "test:dep:user:eve": "e2.png"})
    aliases.forget_all()
    assert await aliases.resolve("bob") == "b2.png" and await aliases.resolve("eve") == "e2.png"


async def test_own_changes_replace_the_local_copy(link: RedisLink) -> None:
    aliases = AliasStore(link, CountedRejections())
    await aliases.set("bob", "b1.png")
    assert await aliases.resolve("bob") == "b1.png"
    await aliases.set("bob", "b2.png")
    assert await aliases.resolve("bob") == "b2.png"
    await aliases.delete("bob")
    assert await aliases.resolve("bob") is None


async def test_local_copy_is_bounded_least_recently_used_first(link: RedisLink,
                                                               redis: Redis) -> None:
    aliases = AliasStore(link, CountedRejections(), max_local=2)
    await redis.mset({f"test:dep:user:{u}": f"{u}1.png" for u in ("a", "b", "c")})
    await aliases.resolve("a")
    await aliases.resolve("b")
    await aliases.resolve("a")  # used again: b is now the oldest
    await aliases.resolve("c")
    await redis.mset({f"test:dep:user:{u}": f"{u}2.png" for u in ("a", "b", "c")})
    assert await aliases.resolve("c") == "c1.png"
    assert await aliases.resolve("a") == "a1.png"
    assert await aliases.resolve("b") == "b2.png"  # dropped, so read again


@pytest.mark.parametrize("outage", ["pause", "kill"])
async def test_changes_need_redis(link: RedisLink, redis_server: RedisServer,
                                  outage: str) -> None:
    aliases = AliasStore(link, CountedRejections())
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
    aliases = AliasStore(link, CountedRejections())
    await redis.set("test:dep:user:bob", "b1.png")
    try:
        redis_server.pause()
        assert await aliases.resolve("bob") is None
    finally:
        redis_server.resume()
    assert await aliases.resolve("bob") == "b1.png"  # asked again, not a remembered miss


# -- hostile values written straight into Redis ----------------------------------------------

# Not object keys (nested names, spaces and dots are: "other/x.png" is served as it is).
HOSTILE = ["../other-bucket/x", "../../etc/passwd", "a/./b.png", "a//b.png", "/abs.png",
           "x.png\r\nX-Evil: 1", "x" * 1025]


@pytest.mark.parametrize("value", [*HOSTILE, b"\xff\xfe.png"])
async def test_an_invalid_alias_is_never_followed(link: RedisLink, redis: Redis,
                                                  value: str | bytes) -> None:
    rejected = CountedRejections()
    aliases = AliasStore(link, rejected)
    await redis.set("test:dep:user:bob", value)
    assert await aliases.resolve("bob") is None  # the fallback picture, not a lookup
    assert rejected.stats.redis_rejected_alias == 1
    assert await aliases.resolve("bob") is None
    assert rejected.stats.redis_rejected_alias == 1  # remembered: not read, logged again
    await redis.set("test:dep:user:bob", "b1.png")
    aliases.forget("bob")  # the alias changed (the bus says so)
    assert await aliases.resolve("bob") == "b1.png"


async def test_an_invalid_alias_is_logged_rate_limited(link: RedisLink, redis: Redis,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    aliases = AliasStore(link, CountedRejections())
    await redis.mset({f"test:dep:user:u{i}": "../other-bucket/x" for i in range(5)})
    with caplog.at_level(logging.WARNING, "gateway.observe.rejected"):
        for i in range(5):
            assert await aliases.resolve(f"u{i}") is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "user u0" in warnings[0] and "other-bucket" not in warnings[0]


def test_key_from_redis_is_the_image_key_rule() -> None:
    assert key_from_redis(b"b1.png") == "b1.png" and key_from_redis("b1.png") == "b1.png"
    for value in [*HOSTILE, "", b"\xff"]:
        assert key_from_redis(value) is None


# -- migrate-aliases: the names from before the deployment was in the key space ------------


async def test_migration_copies_valid_aliases_and_skips_the_rest(link: RedisLink,
                                                                  redis: Redis) -> None:
    await redis.mset({"test:user:bob": "b1.png", "test:user:eve": "e1.png",
                      "test:user:mal": "../other-bucket/x", "test:user:../x": "a.png",
                      "test:user:kept": "old.png", "test:dep:user:kept": "new.png",
                      "test:url:bob": "not an alias", "other:user:ann": "a.png"})
    await redis.hset("test:user:odd", "f", "v")  # not even a string
    assert link.client is not None
    done = await migrate_legacy_aliases(link.client, link.keys)
    assert sorted(done.copied) == ["test:user:bob", "test:user:eve"]
    assert done.kept == ["test:user:kept"]
    assert sorted(done.skipped) == [("test:user:../x", "not a valid user id"),
                                    ("test:user:mal", "not a valid image key"),
                                    ("test:user:odd", "not a valid image key")]
    assert await redis.get("test:dep:user:bob") == b"b1.png"
    assert await redis.get("test:dep:user:kept") == b"new.png"  # never overwritten
    assert await redis.exists("test:dep:user:mal", "test:dep:user:../x",
                              "test:dep:user:odd", "test:dep:user:ann") == 0
    assert await redis.get("test:user:bob") == b"b1.png"  # the old names stay
    again = await migrate_legacy_aliases(link.client, link.keys)
    assert again.copied == [] and len(again.kept) == 3
