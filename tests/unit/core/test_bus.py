"""InvalidationBus against a real redis-server: versions that never repeat, messages
to subscribers, catching up on (re)subscribe, and a bounded close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from gateway.cluster.bus import IMAGE_KIND, USER_KIND, InvalidationBus, parse_message
from gateway.cluster.epoch import identity_of
from gateway.cluster.redis import RedisLink
from gateway.observe.counters import Stats
from tests.support.fakes import until
from tests.support.redis_server import RedisServer

from .conftest import MakeLink

BOUND = 5.0  # how long a test lets something run before calling it hung
START = 1_700_000_000_000_000  # a purge's floor: the time in microseconds


class Heard:
    """Records what a bus tells its owner."""

    def __init__(self, bus: InvalidationBus) -> None:
        self.images: list[tuple[str, int]] = []
        self.users: list[str] = []
        self.resyncs: list[dict[str, int]] = []
        self.gaps = 0
        bus.on_image = self.on_image
        bus.on_user = self.on_user
        bus.on_resync = self.on_resync
        bus.on_gap = self.on_gap

    def on_gap(self) -> None:
        assert len(self.resyncs) == self.gaps  # a gap comes before its resync
        self.gaps += 1

    async def on_image(self, image_id: str, version: int) -> None:
        self.images.append((image_id, version))

    async def on_user(self, user_id: str) -> None:
        self.users.append(user_id)

    async def on_resync(self, versions: dict[str, int]) -> None:
        self.resyncs.append(versions)


MakeBus = Callable[..., InvalidationBus]


@pytest.fixture
async def make_bus(make_link: MakeLink) -> AsyncIterator[MakeBus]:
    buses: list[InvalidationBus] = []

    def make(link: RedisLink | None = None) -> InvalidationBus:
        bus = InvalidationBus(link or make_link(), retry_interval=0.05)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


async def subscribed(bus: InvalidationBus) -> Heard:
    heard = Heard(bus)
    await bus.start()
    await asyncio.wait_for(bus.subscribed.wait(), BOUND)
    return heard


# -- versions ---------------------------------------------------------------------------------


async def test_bump_moves_forward_and_respects_the_floor(make_bus: MakeBus,
                                                         redis: Redis) -> None:
    bus = make_bus()
    assert await bus.bump("a.png", 0) == 1
    assert await bus.bump("a.png", 0) == 2
    assert await bus.bump("a.png", 100) == 100
    assert await bus.bump("a.png", 50) == 101
    assert await bus.bump("b.png", 0) == 1  # per image
    assert await redis.get("test:dep:ver:a.png") == b"101"
    assert await bus.version_of("a.png") == 101 and await bus.version_of("c.png") == 0


async def test_bump_never_repeats_after_redis_lost_its_data(make_bus: MakeBus,
                                                            redis: Redis) -> None:
    bus = make_bus()
    first = await bus.bump("a.png", START)
    second = await bus.bump("a.png", START)
    assert first == START and second == START + 1
    await redis.flushall()  # what a restart without persistence leaves
    third = await bus.bump("a.png", second + 1)
    assert third == second + 1
    assert await redis.get("test:dep:ver:a.png") == str(third).encode()  # stored exactly


async def test_without_redis_nothing_is_bumped_or_sent(no_redis: RedisLink) -> None:
    bus = InvalidationBus(no_redis)
    assert not bus.enabled
    assert await bus.bump("a.png", 5) is None
    assert await bus.publish_image("a.png") is False
    assert await bus.version_of("a.png") is None
    await bus.start()
    await bus.close()  # nothing was started


async def test_redis_down_answers_none(make_bus: MakeBus, redis_server: RedisServer) -> None:
    bus = make_bus()
    try:
        redis_server.kill()
        assert await bus.bump("a.png", 5) is None
        assert await bus.publish_image("a.png") is False
        assert await bus.version_of("a.png") is None
    finally:
        redis_server.ensure_running()


# -- messages ----------------------------------------------------------------------------------


async def test_image_message_reaches_subscribers_with_the_version(make_bus: MakeBus) -> None:
    heard = await subscribed(make_bus())
    publisher = make_bus()
    version = await publisher.bump("a.png", START)
    assert await publisher.publish_image("a.png") is True
    assert await publisher.publish_image("never-purged.png") is True
    await until(lambda: len(heard.images) == 2)
    assert heard.images == [("a.png", version), ("never-purged.png", 0)]
    assert heard.users == []


async def test_user_message_reaches_on_user(make_bus: MakeBus) -> None:
    heard = await subscribed(make_bus())
    publisher = make_bus()
    assert await publisher.publish_user("bob")
    await until(lambda: heard.users == ["bob"])
    assert heard.images == []


async def test_messages_name_their_kind(make_bus: MakeBus, redis: Redis) -> None:
    publisher = make_bus()
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(publisher.channel)
    await publisher.publish_image("user:bob")  # an object key that looks like an alias
    await publisher.publish_user("bob")
    seen = []

    async def two_messages() -> None:
        while len(seen) < 2:  # None for the subscription's own confirmation
            message = await pubsub.get_message(timeout=BOUND)
            if message is not None:
                seen.append(message["data"])

    await asyncio.wait_for(two_messages(), BOUND)
    await pubsub.aclose()
    assert seen == [b"i:user:bob", b"u:bob"]


async def test_a_key_that_looks_like_an_alias_purges_the_object(make_bus: MakeBus) -> None:
    heard = await subscribed(make_bus())
    publisher = make_bus()
    await publisher.publish_image("user:bob")
    await publisher.publish_image("u:x/日本語 +%.png")
    await until(lambda: len(heard.images) == 2)
    assert heard.images == [("user:bob", 0), ("u:x/日本語 +%.png", 0)]
    assert heard.users == []


@pytest.mark.parametrize(("message", "image", "user"), [
    ("i:a/b.png", "a/b.png", None),
    ("u:bob", None, "bob"),
    ("a.png", "a.png", None),  # what a replica of before keys sends during an upgrade
    ("user:bob", None, "bob"),
])
def test_parse_message(message: str, image: str | None, user: str | None) -> None:
    expected = (IMAGE_KIND, image) if image is not None else (USER_KIND, user)
    assert parse_message(message) == expected
    assert parse_message(message.encode()) == expected


@pytest.mark.parametrize("message", [
    "i:", "i:../x", "i:a//b", "i:a\x00b", "u:", "u:a/b", "u:../x", "x:a.png", "user:",
    "user:a/b", b"i:\xff", "", "a/../b",
])
def test_parse_message_refuses(message: str | bytes) -> None:
    assert parse_message(message) is None


async def test_unknown_messages_are_ignored_and_counted(make_link: MakeLink,
                                                       redis: Redis) -> None:
    stats = Stats()
    bus = InvalidationBus(make_link(), retry_interval=0.05, stats=stats)
    try:
        heard = await subscribed(bus)
        for junk in ("x:a.png", "i:../../etc/passwd", "u:a/b", "i:a\x00b"):
            await redis.publish(bus.channel, junk)
        await redis.publish(bus.channel, "i:ok.png")
        await until(lambda: heard.images == [("ok.png", 0)])
        assert heard.users == [] and stats.bus_messages_rejected == 4
    finally:
        await bus.close()


async def test_publish_with_nobody_listening_still_succeeds(make_bus: MakeBus) -> None:
    assert await make_bus().publish_image("a.png") is True


# -- catching up -------------------------------------------------------------------------------


async def test_subscribe_reads_every_version(make_bus: MakeBus, redis: Redis) -> None:
    versions = {f"img{i}.png": i + 1 for i in range(1500)}  # more than one SCAN batch
    await redis.mset({f"test:dep:ver:{k}": v for k, v in versions.items()})
    await redis.set("test:dep:user:bob", "img1.png")  # not a version
    await redis.set("other:ver:x.png", 9)  # another prefix
    heard = await subscribed(make_bus())
    assert heard.resyncs == [versions]


async def test_resubscribe_resyncs_and_keeps_listening(make_bus: MakeBus,
                                                       redis: Redis) -> None:
    bus = make_bus()
    heard = await subscribed(bus)
    assert heard.resyncs == [{}]
    publisher = make_bus()
    missed = await publisher.bump("a.png", START)  # a purge whose message is lost
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await until(lambda: len(heard.resyncs) == 2, timeout=BOUND)
    assert heard.resyncs[1] == {"a.png": missed}
    await asyncio.wait_for(bus.subscribed.wait(), BOUND)
    await publisher.publish_user("eve")
    await until(lambda: heard.users == ["eve"])


async def test_subscribes_once_redis_is_back(make_bus: MakeBus, make_link: MakeLink,
                                             redis_server: RedisServer) -> None:
    link = make_link()
    bus = make_bus(link)
    heard = Heard(bus)
    try:
        redis_server.kill()
        await bus.start()
        await until(lambda: link.health.state == "down", timeout=BOUND)
        assert not bus.subscribed.is_set()
    finally:
        redis_server.ensure_running()
    await asyncio.wait_for(bus.subscribed.wait(), BOUND)
    assert heard.resyncs == [{}] and link.health.state == "up"


async def test_close_is_bounded_while_redis_hangs(make_bus: MakeBus,
                                                  redis_server: RedisServer) -> None:
    bus = make_bus()
    await subscribed(bus)
    try:
        redis_server.pause()
        await asyncio.wait_for(bus.close(), BOUND)
    finally:
        redis_server.resume()


# -- purges that may have been missed ------------------------------------------------------------


async def test_every_subscription_starts_with_a_gap(make_bus: MakeBus, redis: Redis) -> None:
    heard = await subscribed(make_bus())  # Heard checks that the gap comes first
    assert (heard.gaps, len(heard.resyncs)) == (1, 1)
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await until(lambda: len(heard.resyncs) == 2, timeout=BOUND)
    assert heard.gaps == 2


async def test_a_silent_reconnect_by_the_client_library_is_a_gap(
        make_bus: MakeBus, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py re-opens a dropped pub/sub connection and subscribes again on its own,
    without an error: what was published in between is lost all the same."""
    heard = await subscribed(make_bus())
    publisher = make_bus()
    missed = await publisher.bump("a.png", START)  # a purge published while we were away
    real = PubSub.get_message
    drop = asyncio.Event()
    drop.set()

    async def get_message(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        if drop.is_set() and self.connection is not None:
            drop.clear()
            await self.connection.disconnect()  # the next read reconnects by itself
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(PubSub, "get_message", get_message)
    await until(lambda: len(heard.resyncs) == 2, timeout=BOUND)
    assert heard.gaps == 2 and heard.resyncs[1] == {"a.png": missed}


async def test_redis_losing_its_data_under_a_live_subscription_is_a_gap(
        make_bus: MakeBus, redis: Redis) -> None:
    bus = make_bus()
    bus.identity_interval = 0.05
    heard = await subscribed(bus)
    epoch = await redis.get("test:dep:epoch")
    assert epoch is not None
    await redis.flushall()  # the connection stays, the data (and the epoch) are gone
    await until(lambda: heard.gaps == 2, timeout=BOUND)
    await until(lambda: len(heard.resyncs) == 2, timeout=BOUND)
    assert await redis.get("test:dep:epoch") not in (None, epoch)


async def test_identity_is_stable_until_redis_loses_its_data(link: RedisLink,
                                                             redis: Redis) -> None:
    client = link.client
    assert client is not None
    first = await identity_of(client, link.keys)
    assert first.run_id and first.epoch
    assert await identity_of(client, link.keys) == first
    await redis.delete("test:dep:epoch")
    again = await identity_of(client, link.keys)
    assert again.run_id == first.run_id and again.epoch != first.epoch


async def test_identity_changes_when_redis_restarts(make_link: MakeLink,
                                                    redis_server: RedisServer) -> None:
    before, after = make_link(), make_link()
    assert before.client is not None and after.client is not None
    first = await identity_of(before.client, before.keys)
    redis_server.stop()
    redis_server.start()  # empty: no persistence
    second = await identity_of(after.client, after.keys)
    assert second.run_id != first.run_id and second.epoch != first.epoch


# -- versions read back from Redis are input -----------------------------------------------


async def test_hostile_versions_are_skipped_and_counted(make_link: MakeLink,
                                                        redis: Redis) -> None:
    stats = Stats()
    bus = InvalidationBus(make_link(), retry_interval=0.05, stats=stats)
    keys = bus._keys
    await redis.mset({keys.version("ok.png"): "7", keys.version("junk.png"): "abc",
                      keys.version("neg.png"): "-3", keys.version("big.png"): str(2**60),
                      keys.version("../x"): "9"})
    assert await bus.versions(redis) == {"ok.png": 7}
    assert stats.redis_rejected_version == 4
    assert await bus.version_of("junk.png") is None  # unknown: purged locally all the same
    assert await bus.version_of("ok.png") == 7


async def test_a_purge_overwrites_a_hostile_version(make_link: MakeLink, redis: Redis) -> None:
    bus = InvalidationBus(make_link(), retry_interval=0.05)
    await redis.set(bus._keys.version("a.png"), "not a number")
    assert await bus.bump("a.png", 5) == 5
    assert await redis.get(bus._keys.version("a.png")) == b"5"
