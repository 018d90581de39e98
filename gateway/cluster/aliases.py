"""User -> image aliases (``{prefix}:user:{user_id}``), with a bounded local copy.

Lookups are cached in-process until the bus says the alias changed, so serving
``/images/user/{id}`` costs no Redis round trip once warm; when Redis is down,
the last known alias keeps being served.
"""

from __future__ import annotations

from collections import OrderedDict

from redis.asyncio import Redis

from gateway.cluster.redis import RedisHealth, redis_errors
from gateway.errors import Unavailable

_UNKNOWN = ""


class AliasStore:
    def __init__(self, redis: Redis | None, prefix: str, health: RedisHealth,
                 max_local: int = 100_000) -> None:
        self._redis = redis
        self._prefix = prefix
        self._health = health
        self._max_local = max_local
        # Without Redis this is the store itself; with Redis, a cache of it.
        self._local: OrderedDict[str, str] = OrderedDict()

    def key(self, user_id: str) -> str:
        return f"{self._prefix}:user:{user_id}"

    async def resolve(self, user_id: str) -> str | None:
        known = self._local.get(user_id)
        if known is not None:
            self._local.move_to_end(user_id)
            return known or None
        if self._redis is None or not self._health.usable():
            return None
        try:
            raw = await self._redis.get(self.key(user_id))
        except redis_errors as exc:
            self._health.failed(exc)
            return None
        self._health.ok()
        image_id = raw.decode() if isinstance(raw, bytes) else raw
        self._remember(user_id, image_id or _UNKNOWN)
        return image_id or None

    async def set(self, user_id: str, image_id: str) -> None:
        if self._redis is None:
            self._remember(user_id, image_id)
            return
        try:
            await self._redis.set(self.key(user_id), image_id)
        except redis_errors as exc:
            self._health.failed(exc)
            raise Unavailable("redis unavailable: alias not changed") from None
        self.forget(user_id)

    async def delete(self, user_id: str) -> None:
        if self._redis is not None:
            try:
                await self._redis.delete(self.key(user_id))
            except redis_errors as exc:
                self._health.failed(exc)
                raise Unavailable("redis unavailable: alias not removed") from None
        self.forget(user_id)

    def forget(self, user_id: str) -> None:
        self._local.pop(user_id, None)

    def forget_all(self) -> None:
        if self._redis is not None:
            self._local.clear()

    def _remember(self, user_id: str, image_id: str) -> None:
        self._local[user_id] = image_id
        self._local.move_to_end(user_id)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)
