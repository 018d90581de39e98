"""Redis as the gateway uses it: every key and channel in one table, one guarded call.

Redis is a cache and a bus here, never the only copy of anything. Every call goes
through :meth:`RedisLink.guarded`, the one place where Redis errors are mapped
(to a default answer, or to ``Unavailable`` for the admin calls that must not
pretend) and where :class:`RedisHealth` learns whether Redis answers. After a
failure, hot-path calls skip Redis for a short back-off instead of paying a
socket timeout on every request (no retry storm); the first call after the
back-off probes it again, and a success marks it healthy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.config import Config
from gateway.errors import Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a Redis call may raise when Redis is down, slow or gone.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class KeyDoc:
    """One row of the key table (docs/ARCHITECTURE.md is checked against it)."""

    pattern: str  # with the default prefix
    value: str
    ttl: str


def deployment_of(config: Config) -> str:
    """12 hex digits naming where this deployment's bytes live (origin kind, S3 endpoint,
    bucket and prefix; for the local origin, its folder).

    Every key and channel carries it, so deployments that share one Redis (another
    bucket, another MinIO) never read each other's URLs, aliases, versions or results.
    It depends on nothing else: every replica of one deployment computes the same.
    """
    if config.origin.kind == "local":
        parts = ["local", os.path.abspath(config.origin.root)]
    else:
        s3 = config.s3
        parts = ["s3", s3.endpoint.rstrip("/"), s3.bucket, s3.prefix]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


class RedisKeys:
    """Every Redis key and channel the gateway uses, built in this one place.

    Every name is ``{prefix}:{deployment}:{kind}:...``, the kind a fixed word, so two
    kinds of key can never collide and two deployments never share a key. The one
    exception is the ``legacy_user`` name, from before the deployment was part of the
    key space: only ``migrate-aliases`` reads it, nothing writes it.
    An object key may hold ':', but the kind is read before it.
    """

    def __init__(self, prefix: str, deployment: str) -> None:
        self.prefix = prefix
        self.deployment = deployment
        self._base = base = f"{prefix}:{deployment}"
        self.invalidate = f"{base}:invalidate"  # pub/sub channel
        self.version_pattern = f"{base}:ver:*"
        self._version_head = f"{base}:ver:"
        self.legacy_user_pattern = f"{prefix}:user:*"
        self._legacy_user_head = f"{prefix}:user:"

    def url(self, image_id: str) -> str:
        return f"{self._base}:url:{image_id}:v1"

    def known(self, image_id: str) -> str:
        return f"{self._base}:known:{image_id}:v1"

    def user(self, user_id: str) -> str:
        return f"{self._base}:user:{user_id}"

    def version(self, image_id: str) -> str:
        return f"{self._version_head}{image_id}"

    def image_of_version(self, key: bytes | str) -> str:
        """The image id of a ``version`` key (as SCAN returns it)."""
        text = key.decode() if isinstance(key, bytes) else key
        return text.removeprefix(self._version_head)

    def lease(self, cache_key: str) -> str:
        return f"{self._base}:lease:{cache_key}"

    def fill(self, cache_key: str) -> str:
        return f"{self._base}:fill:{cache_key}"

    def legacy_user(self, user_id: str) -> str:
        return f"{self._legacy_user_head}{user_id}"

    def user_of_legacy(self, key: bytes) -> str:
        """The user id of a ``legacy_user`` key as SCAN returns it (not yet checked)."""
        return key.decode("utf-8", "replace").removeprefix(self._legacy_user_head)

    def epoch(self) -> str:
        return f"{self._base}:epoch"

    @classmethod
    def table(cls) -> list[KeyDoc]:
        """The key space with the default prefix, as the architecture document shows it."""
        keys = cls("profile_pic", "{deployment}")
        return [
            KeyDoc(keys.url("{key}"), "presigned GET URL",
                   "presign.cache_ttl (below presign.expires)"),
            KeyDoc(keys.known("{key}"), "what a probe learned of the object (JSON: size, "
                   "modified, type, etag), for `GET /images/{key}/url`",
                   "what is left of its URL's"),
            KeyDoc(keys.user("{user_id}"), "object key of the user's picture", "none"),
            KeyDoc(keys.version("{key}"),
                   "version, moved forward on purge, never repeats",
                   "disk.ttl + disk.max_stale (from the last purge)"),
            KeyDoc(keys.lease("{cache_key}"), "token of the replica fetching it",
                   "cluster.lease_ttl"),
            KeyDoc(keys.fill("{cache_key}"), "the lease holder's result, authenticated "
                   "(HMAC): meta + bytes, 'missing', or 'failed' (its status)",
                   "cluster.fill_ttl ('missing', 'failed': 2 s)"),
            KeyDoc(keys.epoch(), "random token set once (SET NX): gone or changed means "
                   "Redis lost its data", "none"),
            KeyDoc(keys.invalidate, "channel: i:{key} (an object) or u:{user_id} (an alias)",
                   "-"),
            KeyDoc(keys.legacy_user("{user_id}"), "an alias from before the deployment "
                   "was in the key space: read by `migrate-aliases`, never written", "none"),
        ]


def keys_for(config: Config) -> RedisKeys:
    return RedisKeys(config.redis.prefix, deployment_of(config))


class RedisHealth:
    """Whether Redis is answering, shared by everything that talks to it.

    It is also the one voice of an outage in the log: one WARNING when Redis goes
    down, a reminder every ``remind_every`` seconds while it stays down (however many
    calls fail meanwhile: the listener alone retries twice a second), one INFO when
    it is back."""

    def __init__(self, configured: bool, backoff: float = 1.0, remind_every: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = configured
        self.backoff = backoff
        self.remind_every = remind_every
        self.clock = clock
        self.healthy = configured
        self.failures = 0
        self._retry_at = 0.0
        self._down_since = 0.0
        self._reminded_at = 0.0

    @property
    def state(self) -> str:
        if not self.configured:
            return "disabled"
        return "up" if self.healthy else "down"

    def usable(self) -> bool:
        return self.configured and (self.healthy or self.clock() >= self._retry_at)

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        now = self.clock()
        if self.healthy:
            log.warning("redis unavailable (%s); serving without it", type(exc).__name__)
            self._down_since = self._reminded_at = now
        elif now - self._reminded_at >= self.remind_every:
            log.warning("redis still unavailable after %.0f s (%s)", now - self._down_since,
                        type(exc).__name__)
            self._reminded_at = now
        self.healthy = False
        self._retry_at = now + self.backoff

    def ok(self) -> None:
        if not self.healthy and self.configured:
            log.info("redis reachable again after %.0f s", self.clock() - self._down_since)
        self.healthy = True


class RedisLink:
    """The Redis client (None: no Redis configured), its key table and its health."""

    def __init__(self, client: Redis | None, keys: RedisKeys, health: RedisHealth) -> None:
        self.client = client
        self.keys = keys
        self.health = health

    @property
    def enabled(self) -> bool:
        return self.client is not None

    async def guarded(self, call: Callable[[Redis], Awaitable[T]], default: T, *,
                      when_down: bool = False) -> T:
        """``call(client)``, or ``default`` when Redis is not configured, fails, or is
        in its back-off after a failure. ``when_down`` tries even then: for calls
        that are rare and matter (a purge, a release), not for the request path."""
        client = self.client
        if client is None or not (when_down or self.health.usable()):
            return default
        try:
            result = await call(client)
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            return default
        self.health.ok()
        return result

    async def required(self, call: Callable[[Redis], Awaitable[T]], failure: str) -> T:
        """``call(client)`` for an operation that cannot be done without Redis:
        ``Unavailable`` (503) with ``failure`` as its message when Redis fails."""
        if self.client is None:
            raise Unavailable(failure)
        try:
            result = await call(self.client)
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            raise Unavailable(failure) from None
        self.health.ok()
        return result

    async def ping(self) -> bool:
        """For /readyz: whether Redis answers now (ignores the back-off)."""
        return await self.guarded(lambda r: r.ping(), False, when_down=True)
