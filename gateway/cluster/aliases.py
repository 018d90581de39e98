"""User -> image aliases (the ``user`` keys), with a bounded local copy.

Lookups are cached in-process until the bus says the alias changed, so serving
``/images/user/{id}`` costs no Redis round trip once warm; when Redis is down,
the last known alias keeps being served.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from gateway.cluster.redis import RedisLink

_UNKNOWN = ""


class AliasStore:
    def __init__(self, link: RedisLink, max_local: int = 100_000) -> None:
        self._link = link
        self._max_local = max_local
        # Without Redis this is the store itself; with Redis, a cache of it.
        self._local: OrderedDict[str, str] = OrderedDict()

    async def resolve(self, user_id: str) -> str | None:
        known = self._local.get(user_id)
        if known is not None:
            self._local.move_to_end(user_id)
            return known or None
        raw: Any = await self._link.guarded(
            lambda r: r.get(self._link.keys.user(user_id)), _FAILED)
        if raw is _FAILED:
            return None  # no Redis, or Redis down: not remembered, asked again later
        image_id = raw.decode() if isinstance(raw, bytes) else raw
        self._remember(user_id, image_id or _UNKNOWN)
        return image_id or None

    async def set(self, user_id: str, image_id: str) -> None:
        if not self._link.enabled:
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
        self._local.pop(user_id, None)

    def forget_all(self) -> None:
        if self._link.enabled:
            self._local.clear()

    def _remember(self, user_id: str, image_id: str) -> None:
        self._local[user_id] = image_id
        self._local.move_to_end(user_id)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)


_FAILED = object()
