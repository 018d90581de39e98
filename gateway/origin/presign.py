"""Presigned-URL store: Redis (shared by every replica) or in-process.

Redis is a cache here, never the only copy: when it fails the store answers
"miss" and the caller signs locally, so an outage costs a signature (local CPU),
not a request. Errors are counted on ``RedisHealth`` for /readyz and metrics.
"""

from __future__ import annotations

import logging
import time
from calendar import timegm
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from gateway.cluster.redis import RedisLink
from gateway.observe.counters import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    expires_at: float  # epoch seconds when the signature stops working


def expiry_of(url: str) -> float | None:
    """When a SigV4 presigned URL expires, read from its own query (X-Amz-Date + Expires)."""
    query = parse_qs(urlsplit(url).query)
    try:
        signed = time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
        return float(timegm(signed) + int(query["X-Amz-Expires"][0]))
    except (KeyError, ValueError, IndexError):
        return None


class UrlStore(Protocol):
    async def get(self, image_id: str) -> SignedUrl | None: ...

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None: ...

    async def delete(self, image_id: str) -> None: ...


class MemoryUrlStore:
    """For a single development process without Redis."""

    def __init__(self, stats: Stats) -> None:
        self._urls: dict[str, tuple[SignedUrl, float]] = {}
        self._stats = stats

    async def get(self, image_id: str) -> SignedUrl | None:
        item = self._urls.get(image_id)
        if item is None or item[1] <= time.time():
            self._urls.pop(image_id, None)
            self._stats.url_store_misses += 1
            return None
        self._stats.url_store_hits += 1
        return item[0]

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None:
        self._urls[image_id] = (signed, time.time() + ttl)

    async def delete(self, image_id: str) -> None:
        self._urls.pop(image_id, None)


class RedisUrlStore:
    def __init__(self, link: RedisLink, stats: Stats) -> None:
        self._link = link
        self._stats = stats

    async def get(self, image_id: str) -> SignedUrl | None:
        raw = await self._link.guarded(lambda r: r.get(self._link.keys.url(image_id)), None)
        expires_at = None
        if raw is not None:
            url = raw.decode() if isinstance(raw, bytes) else str(raw)
            expires_at = expiry_of(url)
        if expires_at is None:
            self._stats.url_store_misses += 1
            return None
        self._stats.url_store_hits += 1
        return SignedUrl(url, expires_at)

    async def put(self, image_id: str, signed: SignedUrl, ttl: int) -> None:
        await self._link.guarded(
            lambda r: r.set(self._link.keys.url(image_id), signed.url, ex=ttl), None)

    async def delete(self, image_id: str) -> None:
        await self._link.guarded(lambda r: r.delete(self._link.keys.url(image_id)), None,
                                 when_down=True)
