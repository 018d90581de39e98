"""Presigned-URL store in Redis, shared by every replica.

Redis is a cache here, never the only copy: when it fails the store answers
"miss" and the caller signs locally, so an outage costs a signature (local CPU),
not a request. Errors are counted on ``RedisHealth`` for /readyz and metrics.

Redis is also input, not truth: a URL read from it is used only if the caller's
check (``origin/presign.StoredUrlCheck``) passes; what a probe learned only if
its reader (``origin/known.KnownCheck``) accepts it. Anything else is counted,
logged (rate-limited) and treated as a miss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from gateway.cluster.redis import RedisLink
from gateway.observe.counters import Stats
from gateway.observe.rejected import Kind, RedisRejections
from gateway.origin.presign import KnownRead, SignedUrl, UrlCheck, counted, expiry_of

T = TypeVar("T")


class RedisUrlStore:
    def __init__(self, link: RedisLink, stats: Stats, rejected: RedisRejections) -> None:
        self._link = link
        self._stats = stats
        self._rejected = rejected

    async def get(self, image_id: str, check: UrlCheck) -> SignedUrl | None:
        def signed(url: str) -> SignedUrl:
            problem = check(url)
            expires_at = expiry_of(url)
            if problem is not None or expires_at is None:
                raise ValueError(problem or "no expiry")
            return SignedUrl(url, expires_at)

        found = await self._read("url", image_id, self._link.keys.url(image_id), signed)
        return counted(self._stats, "store", found)

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None:
        await self._link.guarded(
            lambda r: r.set(self._link.keys.url(image_id), signed.url, ex=ttl), None)

    async def get_known(self, image_id: str, read: KnownRead[T]) -> T | None:
        found = await self._read("known", image_id, self._link.keys.known(image_id), read)
        return counted(self._stats, "known", found)

    async def _read(self, kind: Kind, image_id: str, key: str,
                    parse: Callable[[str], T]) -> T | None:
        """The value at ``key`` as ``parse`` reads it; None when Redis has none or it
        fails (Redis is input: ValueError from ``parse`` says why, and is counted)."""
        raw = await self._link.guarded(lambda r: r.get(key), None)
        if raw is None:
            return None
        try:
            return parse(raw.decode("ascii") if isinstance(raw, bytes) else raw)
        except UnicodeDecodeError:
            problem = "not ASCII"
        except ValueError as exc:
            problem = str(exc)
        self._rejected(kind, f"image {image_id}", problem)
        return None

    async def put_known(self, image_id: str, value: str, ttl: int) -> None:
        await self._link.guarded(
            lambda r: r.set(self._link.keys.known(image_id), value, ex=ttl), None)

    async def delete(self, image_id: str) -> None:
        keys = self._link.keys
        await self._link.guarded(lambda r: r.delete(keys.url(image_id), keys.known(image_id)),
                                 None, when_down=True)
