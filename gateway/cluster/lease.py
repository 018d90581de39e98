"""Cluster-wide single-flight: one origin fetch per object per burst, across replicas.

The replica that takes the lease (``SET {prefix}:lease:{key} NX PX``) fetches;
when done it leaves the result under ``{prefix}:fill:{key}`` for a short while
(small objects' bytes, or a "missing" marker). The others poll for that result
(or for it on a shared disk, which the caller checks), and fetch themselves if
the lease disappears without a result (holder died or failed) or the wait runs
out. Never a deadlock: the lease expires by itself, and every wait is bounded.

Polling rather than a pub/sub notice keeps this stateless and robust to a
missed message; only the one local single-flight leader per replica polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Literal

from redis.asyncio import Redis

from gateway.cluster.redis import RedisHealth, redis_errors
from gateway.model import Blob, ObjectMeta, digest_of

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
MISSING = b"missing"


class Lease:
    """A held lease; ``token`` proves ownership when releasing."""

    def __init__(self, key: str, token: str) -> None:
        self.key = key
        self.token = token


class Landed:
    """What another replica's fetch left: the bytes, or that the object is missing."""

    def __init__(self, blob: Blob | None) -> None:
        self.blob = blob


class ClusterFlight:
    def __init__(self, redis: Redis, prefix: str, health: RedisHealth, *,
                 lease_ttl: float, wait_timeout: float, poll_interval: float,
                 fill_max_bytes: int, fill_ttl: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._health = health
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.fill_max_bytes = fill_max_bytes
        self.fill_ttl = fill_ttl

    def _lease_key(self, key: str) -> str:
        return f"{self._prefix}:lease:{key}"

    def _fill_key(self, key: str) -> str:
        return f"{self._prefix}:fill:{key}"

    async def acquire(self, key: str) -> Lease | Literal[False] | None:
        """A Lease when this replica should fetch; False when another holds it;
        None when Redis is unusable (fetch locally, as a single process would)."""
        if not self._health.usable():
            return None
        token = secrets.token_hex(8)
        try:
            won = await self._redis.set(self._lease_key(key), token, nx=True,
                                        px=int(self.lease_ttl * 1000))
        except redis_errors as exc:
            self._health.failed(exc)
            return None
        self._health.ok()
        return Lease(key, token) if won else False

    async def release(self, lease: Lease, blob: Blob | None, missing: bool = False) -> None:
        try:
            if missing:
                await self._redis.set(self._fill_key(lease.key), MISSING, ex=self.fill_ttl)
            elif blob is not None and blob.meta.size <= self.fill_max_bytes:
                await self._redis.set(self._fill_key(lease.key), _pack(blob),
                                      ex=self.fill_ttl)
            await self._redis.eval(_RELEASE, 1, self._lease_key(lease.key), lease.token)
        except redis_errors as exc:
            self._health.failed(exc)  # the lease expires by itself

    async def wait(self, key: str, local: Callable[[], Awaitable[Blob | None]]
                   ) -> Landed | None:
        """Wait (bounded) for the lease holder's result: from ``local`` (a shared
        disk) or from Redis. None means: fetch yourself."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        delay = self.poll_interval
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            blob = await local()
            if blob is not None:
                return Landed(blob)
            try:
                raw, holder = await self._redis.mget(self._fill_key(key),
                                                     self._lease_key(key))
            except redis_errors as exc:
                self._health.failed(exc)
                return None
            if isinstance(raw, bytes):
                if raw == MISSING:
                    return Landed(None)
                blob = _unpack(raw)
                if blob is not None:
                    return Landed(blob)
            if holder is None:
                return None  # released without a result, or the holder died
        log.info("gave up waiting for another replica's fetch of %s", key)
        return None



def _pack(blob: Blob) -> bytes:
    header = json.dumps(asdict(blob.meta), separators=(",", ":")).encode()
    return len(header).to_bytes(4, "big") + header + blob.body


def _unpack(raw: bytes) -> Blob | None:
    try:
        size = int.from_bytes(raw[:4], "big")
        fields: dict[str, Any] = json.loads(raw[4:4 + size])
        meta = ObjectMeta(**fields)
    except (ValueError, TypeError):
        return None
    body = raw[4 + size:]
    if len(body) != meta.size:
        return None
    if digest_of(body) != meta.digest:
        return None
    return Blob(meta, body)
