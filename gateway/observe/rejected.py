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
from gateway.observe.throttle import Throttled

log = logging.getLogger(__name__)

Kind = Literal["url", "known", "alias", "fill", "version"]
KINDS: tuple[Kind, ...] = ("url", "known", "alias", "fill", "version")


class RedisRejections:
    def __init__(self, stats: Stats, log_every: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._warnings = {kind: Throttled(log, log_every, clock) for kind in KINDS}

    def __call__(self, kind: Kind, name: str, reason: str) -> None:
        """Count a rejected value; ``name`` says whose it was (never the value itself,
        which may be anything, or a working presigned URL)."""
        counter = f"redis_rejected_{kind}"
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        self._warnings[kind].log(logging.WARNING, "ignored the %s read from redis for %s: %s",
                                 kind, name, reason)
