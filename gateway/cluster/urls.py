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

from typing import TypeVar

from gateway.cluster.redis import RedisLink
from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections
from gateway.origin.presign import KnownRead, SignedUrl, UrlCheck, expiry_of

T = TypeVar("T")


class RedisUrlStore:
    def __init__(self, link: RedisLink, stats: Stats, rejected: RedisRejections) -> None:
        self._link = link
        self._stats = stats
        self._rejected = rejected

    async def get(self, image_id: str, check: UrlCheck) -> SignedUrl | None:
        raw = await self._link.guarded(lambda r: r.get(self._link.keys.url(image_id)), None)
        signed = None if raw is None else self._checked(image_id, raw, check)
        if signed is None:
            self._stats.url_store_misses += 1
            return None
        self._stats.url_store_hits += 1
        return signed

    def _checked(self, image_id: str, raw: bytes | str, check: UrlCheck) -> SignedUrl | None:
        try:
            url = raw.decode("ascii") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            url = "\0"  # fails the check as not a plain URL
        problem = check(url)
        expires_at = expiry_of(url)
        if problem is not None or expires_at is None:
            self._rejected("url", f"image {image_id}", problem or "no expiry")
            return None
        return SignedUrl(url, expires_at)

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None:
        await self._link.guarded(
            lambda r: r.set(self._link.keys.url(image_id), signed.url, ex=ttl), None)

    async def get_known(self, image_id: str, read: KnownRead[T]) -> T | None:
        raw = await self._link.guarded(lambda r: r.get(self._link.keys.known(image_id)), None)
        known = None if raw is None else self._read_known(image_id, raw, read)
        if known is None:
            self._stats.url_known_misses += 1
            return None
        self._stats.url_known_hits += 1
        return known

    def _read_known(self, image_id: str, raw: bytes | str, read: KnownRead[T]) -> T | None:
        try:
            return read(raw.decode("ascii") if isinstance(raw, bytes) else raw)
        except UnicodeDecodeError:
            problem = "not ASCII"
        except ValueError as exc:
            problem = str(exc)
        self._rejected("known", f"image {image_id}", problem)
        return None

    async def put_known(self, image_id: str, value: str, ttl: int) -> None:
        await self._link.guarded(
            lambda r: r.set(self._link.keys.known(image_id), value, ex=ttl), None)

    async def delete(self, image_id: str) -> None:
        keys = self._link.keys
        await self._link.guarded(lambda r: r.delete(keys.url(image_id), keys.known(image_id)),
                                 None, when_down=True)
