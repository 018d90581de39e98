"""User -> image aliases (the ``user`` keys), with a bounded local copy.

Lookups are cached in-process until the bus says the alias changed, so serving
``/images/user/{id}`` costs no Redis round trip once warm; when Redis is down,
the last known alias keeps being served.

An alias read from Redis is input: a value that is not a valid image key of this
deployment is never followed. It is counted, logged, and remembered as "no alias"
(the fallback picture) until the alias changes, so it is not read and logged again
on every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.cache.lru import BoundedLRU
from gateway.cluster.redis import RedisKeys, RedisLink
from gateway.errors import AliasesFull, BadRequest
from gateway.model import validate_key, validate_user_id
from gateway.observe.rejected import RedisRejections

_UNKNOWN = ""


def key_from_redis(raw: bytes | str) -> str | None:
    """An alias value read from Redis as an image key, or None when it is not one.

    The one place where Redis values meet the key rule: the request path and
    ``migrate-aliases`` both come through here.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return validate_key(text)
    except (UnicodeDecodeError, BadRequest):
        return None


class AliasStore:
    def __init__(self, link: RedisLink, rejected: RedisRejections,
                 max_local: int = 100_000) -> None:
        self._link = link
        self._rejected = rejected
        # Without Redis this is the store itself; with Redis, a cache of it.
        self._local: BoundedLRU[str, str] = BoundedLRU(max_local)

    async def resolve(self, user_id: str) -> str | None:
        known = self._local.get(user_id)
        if known is not None:
            return known or None
        raw: Any = await self._link.guarded(
            lambda r: r.get(self._link.keys.user(user_id)), _FAILED)
        if raw is _FAILED:
            return None  # no Redis, or Redis down: not remembered, asked again later
        image_id = None if raw is None else key_from_redis(raw)
        if raw is not None and image_id is None:
            self._rejected("alias", f"user {user_id}", "not a valid image key")
        self._remember(user_id, image_id or _UNKNOWN)
        return image_id

    async def set(self, user_id: str, image_id: str) -> None:
        if not self._link.enabled:
            local = self._local
            if local.peek(user_id) is None and len(local) >= local.max_size:
                raise AliasesFull()  # the only copy: dropping the oldest would lose it
            self._remember(user_id, image_id)
            return
        await self._link.required(lambda r: r.set(self._link.keys.user(user_id), image_id),
                                  "redis unavailable: alias not changed")
        self.forget(user_id)

    async def delete(self, user_id: str) -> None:
        if self._link.enabled:
            await self._link.required(lambda r: r.delete(self._link.keys.user(user_id)),
                                      "redis unavailable: alias not removed")
        self.forget(user_id)

    def forget(self, user_id: str) -> None:
        self._local.pop(user_id)

    def forget_all(self) -> None:
        if self._link.enabled:
            self._local.clear()

    def _remember(self, user_id: str, image_id: str) -> None:
        self._local.put(user_id, image_id)


_FAILED = object()


@dataclass
class Migration:
    """What ``migrate_legacy_aliases`` did, by Redis key of the old alias."""

    copied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the new name was set already
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (old key, why)


async def migrate_legacy_aliases(redis: Redis, keys: RedisKeys) -> Migration:
    """Copy every valid alias stored under its old name (``{prefix}:user:{user_id}``)
    to this deployment's name for it; never overwrite, never delete, so running it
    again (or for another deployment sharing the Redis) is safe. Raises Redis errors."""
    done = Migration()
    async for raw_key in redis.scan_iter(match=keys.legacy_user_pattern, count=1000):
        name = raw_key.decode("utf-8", "replace")
        user_id = keys.user_of_legacy(raw_key)
        try:
            validate_user_id(user_id)
        except BadRequest:
            done.skipped.append((name, "not a valid user id"))
            continue
        try:
            value = await redis.get(raw_key)
        except ResponseError:  # WRONGTYPE: a hash, a list...
            value = None
        image_id = None if value is None else key_from_redis(value)
        if image_id is None:
            done.skipped.append((name, "not a valid image key"))
        elif await redis.set(keys.user(user_id), image_id, nx=True):
            done.copied.append(name)
        else:
            done.kept.append(name)
    return done
