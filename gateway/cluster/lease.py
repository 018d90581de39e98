"""Cluster-wide single-flight: one origin fetch per object per burst, across replicas.

The replica that takes the lease (``SET lease NX PX``) fetches; when done it
leaves the result under the ``fill`` key for a short while (small objects' bytes,
or, for two seconds, a "missing" marker). The others poll for that result (or
for it on a shared disk, which the caller checks), and fetch themselves if the
lease disappears without a result (holder died or failed) or the wait runs out.
Never a deadlock: the lease expires by itself, and every wait is bounded.

Polling rather than a pub/sub notice keeps this stateless and robust to a
missed message; only the one local single-flight leader per replica polls.
Without Redis (or while it is down) ``acquire`` answers None: fetch locally, as a
single process would.

A result is authenticated and re-checked (cluster/fill.py) before it is used; one
that fails is dropped from Redis, counted, and the waiter fetches the origin itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.cluster.fill import Failed, FillCodec, RejectedFill
from gateway.cluster.redis import RedisLink
from gateway.model import Blob
from gateway.observe.counters import Stats
from gateway.observe.rejected import RedisRejections

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
#: Seconds the "missing" marker stays: only the replicas already waiting need it (they
#: poll at least every 0.25 s), and each remembers the miss itself (cache.negative_ttl).
#: Kept any longer it would be one Redis key per id anyone ever asked for in vain.
MISSING_TTL = 2.0
#: Seconds the "failed" marker stays: the replicas waiting on the failed fetch answer at
#: once (stale copy, 502 or 504) instead of fetching again after the whole wait
#: (bench/SOAK-NOTES.md, finding 4); the next request after it tries the origin again.
FAILED_TTL = 2.0
#: Leases whose SET went unanswered remembered at most (each released once Redis
#: answers again; beyond this many, they expire by themselves after lease_ttl).
MAX_UNANSWERED = 1000
# Deletes a rejected fill only if it is still the value we read (by its SHA-1), so a
# genuine result written since is kept.
_DROP = """
local value = redis.call('get', KEYS[1])
if value and redis.sha1hex(value) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease; ``token`` proves ownership when releasing."""

    key: str
    token: str


@dataclass(frozen=True, slots=True)
class Landed:
    """What another replica's fetch left: the bytes, that the object is missing
    (None), or that the fetch failed."""

    blob: Blob | Failed | None


class ClusterFlight:
    def __init__(self, link: RedisLink, *, lease_ttl: float, wait_timeout: float,
                 poll_interval: float, fill_max_bytes: int, fill_ttl: int,
                 codec: FillCodec, rejected: RedisRejections,
                 stats: Stats | None = None) -> None:
        self._link = link
        self._keys = link.keys
        self._codec = codec
        self._rejected = rejected
        self.lease_ttl = lease_ttl
        self.wait_timeout = wait_timeout
        self.poll_interval = poll_interval
        self.fill_max_bytes = fill_max_bytes
        self.fill_ttl = fill_ttl
        self._stats = stats or Stats()
        self._unanswered: dict[str, str] = {}  # cache key -> token of a SET not answered

    async def acquire(self, key: str) -> Lease | Literal[False] | None:
        """A Lease when this replica should fetch; False when another holds it;
        None when Redis is unusable (fetch locally, as a single process would)."""
        token = secrets.token_hex(8)
        sent = False

        async def take(r: Any) -> bool:
            nonlocal sent
            sent = True
            # SET NX answers nil when the key exists: another replica holds the lease.
            return bool(await r.set(self._keys.lease(key), token, nx=True,
                                    px=int(self.lease_ttl * 1000)))

        won = await self._link.guarded(take, None)
        if won is None:
            if sent and len(self._unanswered) < MAX_UNANSWERED:
                # A Redis that stalled (paused, partitioned) may still run the SET
                # later: a lease nobody holds, which others would wait on.
                self._unanswered[key] = token
            return None
        if self._unanswered:
            await self._drop_unanswered()
        return Lease(key, token) if won else False

    async def _drop_unanswered(self) -> None:
        """Release the leases whose SET got no answer, now that Redis answers again."""
        taken, self._unanswered = self._unanswered, {}

        async def release_all(r: Any) -> None:
            async with r.pipeline(transaction=False) as pipe:
                for key, token in taken.items():
                    pipe.eval(_RELEASE, 1, self._keys.lease(key), token)
                await pipe.execute()

        await self._link.guarded(release_all, None)

    async def release(self, lease: Lease, blob: Blob | None, missing: bool = False,
                      failed: int = 0) -> None:
        """Leave the result for the others (``failed``: the status the fetch failed
        with) and give the lease back."""
        async def publish(r: Any) -> bool:
            fill = self._keys.fill(lease.key)
            if missing:
                await r.set(fill, self._codec.pack(lease.key, None),
                            px=int(min(self.fill_ttl, MISSING_TTL) * 1000))
            elif failed:
                await r.set(fill, self._codec.pack_failed(lease.key, failed),
                            px=int(min(self.fill_ttl, FAILED_TTL) * 1000))
            elif blob is not None and blob.meta.size <= self.fill_max_bytes:
                await r.set(fill, self._codec.pack(lease.key, blob), ex=self.fill_ttl)
            await r.eval(_RELEASE, 1, self._keys.lease(lease.key), lease.token)
            return True

        # Once more on failure: a pooled connection broken by a Redis restart fails once
        # when next used (redis-py then reconnects it), and a lease left behind would
        # keep the others waiting until it expires (bench/SOAK-NOTES.md, finding 5).
        if not await self._link.guarded(publish, False, when_down=True):
            self._stats.lease_release_retries += 1
            await self._link.guarded(publish, False, when_down=True)

    async def wait(self, key: str, local: Callable[[], Awaitable[Blob | None]]
                   ) -> Landed | None:
        """Wait (bounded) for the lease holder's result: from ``local`` (a shared
        disk) or from Redis. None means: fetch yourself."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_timeout
        delay = self.poll_interval
        keys = (self._keys.fill(key), self._keys.lease(key))
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)
            blob = await local()
            if blob is not None:
                return Landed(blob)
            found = await self._link.guarded(lambda r: r.mget(*keys), None, when_down=True)
            if found is None:
                return None  # Redis failed: fetch ourselves
            raw, holder = found
            if isinstance(raw, bytes):
                try:
                    return Landed(self._codec.unpack(key, raw))
                except RejectedFill as exc:
                    await self._drop(key, raw, str(exc))
                    return None  # whatever the holder is doing: fetch ourselves
            if holder is None:
                return None  # released without a result, or the holder died
        log.info("gave up waiting for another replica's fetch of %s", key)
        return None

    async def _drop(self, key: str, raw: bytes, reason: str) -> None:
        self._rejected("fill", key, reason)
        digest = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
        await self._link.guarded(lambda r: r.eval(_DROP, 1, self._keys.fill(key), digest),
                                 None)
