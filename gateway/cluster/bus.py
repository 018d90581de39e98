"""Invalidation across replicas: Redis pub/sub on ``{prefix}:invalidate``.

A message is an image id (drop that image) or ``user:{user_id}`` (drop that
alias); ':' cannot occur in an image id, so the two never collide. Versions
live in Redis (``{prefix}:ver:{image_id}``); a replica that missed messages
(Redis down, or the replica restarting) catches up by reading every version
when it (re)subscribes, so a purge is never lost for longer than an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from gateway.cluster.redis import RedisHealth, redis_errors

log = logging.getLogger(__name__)

USER_PREFIX = "user:"

# Lua numbers are doubles: exact up to 2**53, far above microseconds since 1970.
_BUMP = """
local v = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') + 1, tonumber(ARGV[1]))
redis.call('SET', KEYS[1], string.format('%d', v))
return v
"""

OnImage = Callable[[str, int], Awaitable[None]]
OnUser = Callable[[str], Awaitable[None]]
OnResync = Callable[[dict[str, int]], Awaitable[None]]


class InvalidationBus:
    def __init__(self, redis: Redis | None, prefix: str, health: RedisHealth,
                 retry_interval: float = 0.5) -> None:
        self._redis = redis
        self._prefix = prefix
        self._health = health
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.channel = f"{prefix}:invalidate"
        self.subscribed = asyncio.Event()
        self.on_image: OnImage | None = None
        self.on_user: OnUser | None = None
        self.on_resync: OnResync | None = None

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def version_key(self, image_id: str) -> str:
        return f"{self._prefix}:ver:{image_id}"

    def user_key(self, user_id: str) -> str:
        return f"{self._prefix}:user:{user_id}"

    async def start(self) -> None:
        if self._redis is not None:
            self._task = asyncio.create_task(self._listen(), name="invalidation-bus")

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
        if self._redis is None:
            return None
        try:
            version = int(await self._redis.eval(_BUMP, 1, self.version_key(image_id),
                                                 str(at_least)))
        except redis_errors as exc:
            self._health.failed(exc)
            return None
        self._health.ok()
        return version

    async def publish(self, message: str) -> bool:
        if self._redis is None:
            return False
        try:
            await self._redis.publish(self.channel, message)
        except redis_errors as exc:
            self._health.failed(exc)
            return False
        return True

    async def versions(self) -> dict[str, int]:
        """Every image version in Redis (only purged images have one)."""
        assert self._redis is not None
        out: dict[str, int] = {}
        head = len(self._prefix) + len(":ver:")
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=f"{self._prefix}:ver:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                out.update(await self._read_versions(batch, head))
                batch = []
        if batch:
            out.update(await self._read_versions(batch, head))
        return out

    async def _read_versions(self, keys: list[bytes], head: int) -> dict[str, int]:
        assert self._redis is not None
        values = await self._redis.mget(keys)
        return {k.decode()[head:]: int(v) for k, v in zip(keys, values, strict=True)
                if v is not None}

    async def version_of(self, image_id: str) -> int | None:
        if self._redis is None:
            return None
        try:
            raw = await self._redis.get(self.version_key(image_id))
        except redis_errors as exc:
            self._health.failed(exc)
            return None
        return int(raw) if raw is not None else 0

    # -- listening ----------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._redis is not None
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if self.on_resync is not None:
                    await self.on_resync(await self.versions())
                self._health.ok()
                self.subscribed.set()
                log.info("subscribed to %s", self.channel)
                while not self._closing:
                    # The timeout lets a dead connection surface as an error instead of
                    # a silent wait; redis-py raises on a broken socket.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except redis_errors as exc:
                self.subscribed.clear()
                self._health.failed(exc)
                log.warning("invalidation subscription lost (%s); retrying",
                            type(exc).__name__)
            except Exception:
                self.subscribed.clear()
                log.exception("invalidation listener failed; retrying")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._closing:
                await asyncio.sleep(self._retry_interval)

    async def _dispatch(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        if text.startswith(USER_PREFIX):
            if self.on_user is not None:
                await self.on_user(text[len(USER_PREFIX):])
            return
        if self.on_image is not None:
            version = await self.version_of(text)
            await self.on_image(text, version if version is not None else -1)
