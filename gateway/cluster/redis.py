"""Whether Redis is answering, shared by everything that talks to it.

After a failure, callers skip Redis for a short back-off instead of paying a
socket timeout on every request (no retry storm); the first call after the
back-off probes it again, and a success marks it healthy.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

redis_errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


class RedisHealth:
    def __init__(self, configured: bool, backoff: float = 1.0) -> None:
        self.configured = configured
        self.backoff = backoff
        self.healthy = configured
        self.failures = 0
        self._retry_at = 0.0

    @property
    def state(self) -> str:
        if not self.configured:
            return "disabled"
        return "up" if self.healthy else "down"

    def usable(self) -> bool:
        return self.configured and (self.healthy or time.monotonic() >= self._retry_at)

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.healthy:
            log.warning("redis unavailable (%s); serving without it", type(exc).__name__)
        self.healthy = False
        self._retry_at = time.monotonic() + self.backoff

    def ok(self) -> None:
        if not self.healthy and self.configured:
            log.info("redis reachable again")
        self.healthy = True
