"""Invalidation across replicas: Redis pub/sub on the ``invalidate`` channel.

A message is ``i:{key}`` (drop that object) or ``u:{user_id}`` (drop that alias):
the kind is a fixed prefix, so no key (which may hold ':' or start with ``user:``)
reads as an alias. A message of neither kind is ignored and counted. Versions
live in Redis (the ``version`` keys); a replica that missed messages
(Redis down, or the replica restarting) catches up by reading every version
when it (re)subscribes.

Reading the versions is not enough when Redis lost them (restarted empty,
flushed, failed over): so every new subscription first calls ``on_gap`` (the
owner then revalidates every cached copy before serving it as fresh), and the
subscription is renewed, with another ``on_gap``, whenever it may have missed
messages without an error surfacing: the client library reconnected it by
itself, or Redis's identity (run id, epoch: see epoch.py) changed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import Connection

from gateway.cluster.epoch import Identity, identity_of
from gateway.cluster.redis import REDIS_ERRORS, RedisLink
from gateway.errors import BadRequest
from gateway.model import validate_key, validate_user_id
from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections
from gateway.observe.throttle import Throttled

log = logging.getLogger(__name__)

IMAGE_KIND = "i:"
USER_KIND = "u:"
# What replicas of before object keys sent: a flat id (no ':' could occur in one) or
# ``user:{id}``; still understood, so a rolling upgrade loses no purge they publish.
_LEGACY_USER = "user:"

# Lua numbers are doubles: exact up to 2**53, far above microseconds since 1970.
# ARGV[2]: seconds the version is kept (0: for ever), see InvalidationBus.version_ttl.
_BUMP = """
local v = math.max((tonumber(redis.call('GET', KEYS[1]) or '0') or 0) + 1, tonumber(ARGV[1]))
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], string.format('%d', v), 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], string.format('%d', v))
end
return v
"""

OnImage = Callable[[str, int], Awaitable[None]]
OnUser = Callable[[str], Awaitable[None]]
OnResync = Callable[[dict[str, int]], Awaitable[None]]
OnGap = Callable[[], None]

#: Seconds to wait for Redis to confirm a subscription.
CONFIRM_TIMEOUT = 5.0


class _Lost(Exception):
    """The subscription may have missed messages although no call failed."""


class InvalidationBus:
    #: Seconds between checks of Redis's identity (and pings on the subscription).
    identity_interval = 5.0
    #: Seconds a ping on the subscription may go unanswered before it counts as lost.
    pong_timeout = 3.0

    def __init__(self, link: RedisLink, retry_interval: float = 0.5, *,
                 stats: Stats | None = None,
                 rejected: RedisRejections | None = None, version_ttl: int = 0) -> None:
        self._link = link
        # A version is the time of its purge (in µs) or just above it, and nothing
        # cached before a purge is served later than disk.ttl + disk.max_stale after
        # it: past that, the version key tells no replica anything any more.
        self.version_ttl = version_ttl
        self._stats = stats or Stats()
        self._rejected = rejected or RedisRejections(self._stats)
        self._keys = link.keys
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._failing = Throttled(log)
        self._identity: Identity | None = None
        self._reconnected = False
        self._subscriptions = 0
        self.channel = link.keys.invalidate
        self.subscribed = asyncio.Event()
        self.on_image: OnImage | None = None
        self.on_user: OnUser | None = None
        self.on_resync: OnResync | None = None
        self.on_gap: OnGap | None = None

    @property
    def enabled(self) -> bool:
        return self._link.enabled

    async def start(self) -> None:
        if self._link.client is not None:
            self._task = asyncio.create_task(self._listen(self._link.client),
                                             name="invalidation-bus")

    async def close(self) -> None:
        self._closing = True
        task = self._task
        if task is None:
            return
        # redis-py can swallow a cancellation that lands inside get_message's own
        # timeout; the flag ends the loop at its next turn, and cancelling again
        # until the task is done makes sure shutdown never hangs on it.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()

    # -- publishing ---------------------------------------------------------------

    async def bump(self, image_id: str, at_least: int) -> int | None:
        """New cluster-wide version of the image, or None when Redis is unavailable.

        Never a version used before, even by a Redis that lost its data: the new
        version is above the stored one and at least ``at_least`` (the caller's own
        version + 1 and the time in microseconds), so a cache key can't come back.
        """
        raw = await self._link.guarded(
            lambda r: r.eval(_BUMP, 1, self._keys.version(image_id), str(at_least),
                             str(self.version_ttl)),
            None, when_down=True)
        return None if raw is None else int(raw)

    async def publish_image(self, key: str) -> bool:
        """Tell every replica to drop the object ``key``; False when Redis failed."""
        return await self._publish(IMAGE_KIND + key)

    async def publish_user(self, user_id: str) -> bool:
        """Tell every replica that the alias of ``user_id`` changed."""
        return await self._publish(USER_KIND + user_id)

    async def _publish(self, message: str) -> bool:
        sent = await self._link.guarded(lambda r: r.publish(self.channel, message), None,
                                        when_down=True)
        return sent is not None

    async def version_of(self, image_id: str) -> int | None:
        """The image's version in Redis (0: never purged); None when Redis failed."""
        raw: Any = await self._link.guarded(lambda r: r.get(self._keys.version(image_id)),
                                            _FAILED, when_down=True)
        if raw is _FAILED:
            return None
        if raw is None:
            return 0
        return self._version(raw, image_id)  # None (unknown): purged locally all the same

    async def versions(self, redis: Redis) -> dict[str, int]:
        """Every image version in Redis (only purged images have one); raises on
        Redis errors (the listener retries)."""
        out: dict[str, int] = {}
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=self._keys.version_pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                out.update(await self._read_versions(redis, batch))
                batch = []
        if batch:
            out.update(await self._read_versions(redis, batch))
        return out

    async def _read_versions(self, redis: Redis, keys: list[bytes]) -> dict[str, int]:
        values = await redis.mget(keys)
        out: dict[str, int] = {}
        for raw_key, raw in zip(keys, values, strict=True):
            if raw is None:
                continue
            try:
                key = validate_key(self._keys.image_of_version(raw_key))
            except (BadRequest, UnicodeDecodeError):
                self._rejected("version", "a version key", "not an object key")
                continue
            version = self._version(raw, key)
            if version is not None:
                out[key] = version
        return out

    def _version(self, raw: bytes | str, key: str) -> int | None:
        """A version read from Redis (input, not truth): a whole number that a Lua
        double holds exactly, else None, counted."""
        text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        if text.isascii() and text.isdigit() and int(text) < 2**53:
            return int(text)
        self._rejected("version", key, "not a version number")
        return None

    # -- listening ----------------------------------------------------------------

    async def _listen(self, redis: Redis) -> None:
        while not self._closing:
            pubsub = redis.pubsub()
            try:
                await self._subscribe(redis, pubsub)
                await self._receive(redis, pubsub)
            except asyncio.CancelledError:
                raise
            except _Lost as exc:
                # INFO: nothing is wrong now, and the outage (if any) was logged once.
                self.subscribed.clear()
                log.info("invalidation messages may have been missed (%s): cached "
                         "pictures are revalidated before they are served", exc)
            except REDIS_ERRORS as exc:
                # RedisHealth logs the outage (once, then a reminder now and then); a
                # line per retry here would be two a second for as long as it lasts.
                self.subscribed.clear()
                self._link.health.failed(exc)
                log.debug("invalidation subscription lost (%s); retrying",
                          type(exc).__name__)
            except Exception:
                self.subscribed.clear()
                self._failing.log(logging.ERROR, "invalidation listener failed; retrying",
                                  exc_info=True)
            finally:
                connection = _connection_of(pubsub)
                if connection is not None:
                    connection.deregister_connect_callback(  # type: ignore[no-untyped-call]
                        self._on_reconnect)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._closing:
                await asyncio.sleep(self._retry_interval)

    async def _subscribe(self, redis: Redis, pubsub: PubSub) -> None:
        await pubsub.subscribe(self.channel)
        await _confirmed(pubsub)
        # From here on every message reaches us; whatever was published before may
        # not have, and Redis may no longer hold the versions that would tell.
        self._reconnected = False
        connection = _connection_of(pubsub)
        assert connection is not None  # it carried the confirmation
        connection.register_connect_callback(  # type: ignore[no-untyped-call]
            self._on_reconnect)
        if self.on_gap is not None:
            self.on_gap()
        identity = await identity_of(redis, self._keys)
        if self._identity is not None and identity != self._identity:
            log.info("redis lost its data or was replaced (run id or epoch changed)")
        self._identity = identity
        if self.on_resync is not None:
            await self.on_resync(await self.versions(redis))
        self._link.health.ok()  # after an outage: its one "reachable again" line
        self.subscribed.set()
        self._failing.reset()
        self._subscriptions += 1
        log.log(logging.INFO if self._subscriptions == 1 else logging.DEBUG,
                "subscribed to %s", self.channel)

    async def _receive(self, redis: Redis, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        check_at = loop.time() + self.identity_interval
        pong_due: float | None = None
        while not self._closing:
            # The timeout lets a dead connection surface as an error instead of
            # a silent wait; redis-py raises on a broken socket.
            message = await pubsub.get_message(timeout=1.0)
            if message is not None:
                if message.get("type") == "message":
                    await self._dispatch(message["data"])
                elif message.get("type") == "pong":
                    pong_due = None
            if self._reconnected:
                raise _Lost("the client library re-opened the pub/sub connection by itself")
            now = loop.time()
            if pong_due is not None and now >= pong_due:
                # A partition that drops packets breaks no socket: without an answer
                # on the subscription itself, it may be deaf (tests/integration/
                # test_ha_partitions.py).
                raise _Lost("no answer from redis on the subscription")
            if now >= check_at:
                check_at = now + self.identity_interval
                await self._check_identity(redis)
                if pong_due is None:
                    await pubsub.ping()
                    pong_due = now + self.pong_timeout

    async def _check_identity(self, redis: Redis) -> None:
        try:
            identity = await identity_of(redis, self._keys)
        except REDIS_ERRORS:
            return  # if Redis is really gone, the subscription itself fails
        if identity != self._identity:
            raise _Lost("redis's run id or epoch changed while listening")

    def _on_reconnect(self, _connection: object) -> None:
        # redis-py re-establishes a dropped pub/sub connection and subscribes again
        # without telling: whatever was published in between is gone.
        self._reconnected = True

    async def _dispatch(self, data: bytes | str) -> None:
        parsed = parse_message(data)
        if parsed is None:
            self._stats.bus_messages_rejected += 1
            log.debug("ignored invalidation message %r", data[:100])
            return
        kind, name = parsed
        if kind == USER_KIND:
            if self.on_user is not None:
                await self.on_user(name)
            return
        if self.on_image is not None:
            version = await self.version_of(name)
            await self.on_image(name, version if version is not None else -1)


def parse_message(data: bytes | str) -> tuple[str, str] | None:
    """(IMAGE_KIND, key) or (USER_KIND, user id) of a message; None when it is neither:
    Redis is shared, what comes from it is checked like a client's input."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        if text.startswith(IMAGE_KIND):
            return IMAGE_KIND, validate_key(text[len(IMAGE_KIND):])
        if text.startswith(USER_KIND):
            return USER_KIND, validate_user_id(text[len(USER_KIND):])
        if text.startswith(_LEGACY_USER):
            return USER_KIND, validate_user_id(text[len(_LEGACY_USER):])
        if ":" not in text:
            return IMAGE_KIND, validate_key(text)
    except (UnicodeDecodeError, BadRequest):
        pass
    return None


def _connection_of(pubsub: PubSub) -> Connection | None:
    # redis-py declares PubSub.connection as None (its initial value) only.
    connection: Connection | None = getattr(pubsub, "connection", None)
    return connection


async def _confirmed(pubsub: PubSub) -> None:
    """Until Redis confirms the subscription: only then is no message missed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONFIRM_TIMEOUT
    while (remaining := deadline - loop.time()) > 0:
        message = await pubsub.get_message(timeout=remaining)
        if message is not None and message.get("type") == "subscribe":
            return
    raise TimeoutError("redis did not confirm the subscription")


_FAILED = object()
