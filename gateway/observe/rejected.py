"""Values read back from Redis that failed their check: counted, logged (rate-limited).

Redis is shared and often unauthenticated, so what it hands back is input, like a
request. A value that fails its check is never used: the caller carries on as if
it were absent (signs a fresh URL, serves the fallback picture, fetches the origin
itself). Each one is counted by kind (``gateway_redis_values_rejected_total``);
the warning is rate-limited per kind, because whoever writes bad values can write
them faster than anyone reads logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from gateway.observe.counters import Stats

log = logging.getLogger(__name__)

Kind = Literal["url", "alias", "fill", "version"]
KINDS: tuple[Kind, ...] = ("url", "alias", "fill", "version")


class RedisRejections:
    def __init__(self, stats: Stats, log_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._log_every = log_every
        self._clock = clock
        self._logged_at: dict[Kind, float] = {}
        self._quiet: dict[Kind, int] = dict.fromkeys(KINDS, 0)

    def __call__(self, kind: Kind, name: str, reason: str) -> None:
        """Count a rejected value; ``name`` says whose it was (never the value itself,
        which may be anything, or a working presigned URL)."""
        stats = self._stats
        if kind == "url":
            stats.redis_rejected_url += 1
        elif kind == "alias":
            stats.redis_rejected_alias += 1
        elif kind == "fill":
            stats.redis_rejected_fill += 1
        else:
            stats.redis_rejected_version += 1
        now = self._clock()
        last = self._logged_at.get(kind)
        if last is not None and now - last < self._log_every:
            self._quiet[kind] += 1
            return
        quiet, self._quiet[kind] = self._quiet[kind], 0
        self._logged_at[kind] = now
        log.warning("ignored the %s read from redis for %s: %s (%d more since the last "
                    "such warning)", kind, name, reason, quiet)
