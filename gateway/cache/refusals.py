"""Objects the origin holds but the gateway will not serve, remembered like misses.

An object that is no allowed image, or is over ``origin.max_bytes``, is refused
(502) every time it is asked for; without this each request downloaded it again
(up to ``origin.max_bytes`` from S3) and logged two WARNING lines only to refuse it
once more: whoever knows such a key could make the gateway pull from S3 at will.
A refusal is remembered as a miss is (``NegativeCache``: ``cache.negative_ttl``,
bounded by bytes) under the original's cache key, so every variant shares it and a
purge or an upload, which moves the version, ends it at once.
"""

from __future__ import annotations

import logging
from typing import Final

from gateway.cache.negative import NegativeCache
from gateway.errors import OriginError, TooLarge, UnsupportedMedia
from gateway.observe.counters import Stats
from gateway.observe.throttle import Throttled

log = logging.getLogger(__name__)

#: The answers that would be the same next time: the object, not the origin, is at fault.
REFUSALS: Final[tuple[type[OriginError], ...]] = (UnsupportedMedia, TooLarge)


class Refusals:
    def __init__(self, ttl: float, max_bytes: int, stats: Stats | None = None) -> None:
        self.stats = stats if stats is not None else Stats()
        # Whoever knows the key of a refused object can ask for it: one line a minute.
        self._logged = Throttled(log)
        # One store for every kind: the kind's index leads the key (a cache key
        # starts with its version's digits, so "0|" and "1|" never collide with one).
        self._seen = NegativeCache(ttl, max_bytes)

    def remember(self, key: str, since: float, error: BaseException) -> bool:
        """Remember ``error`` for ``key`` when it is a refusal, in an answer to a
        request sent at ``since``; whether it was one."""
        for i, kind in enumerate(REFUSALS):
            if isinstance(error, kind):
                self._seen.remember(f"{i}|{key}", since)
                return True
        return False

    def refusal(self, key: str, now: float, trusted_since: float) -> OriginError | None:
        """The error to answer ``key`` with, when one is remembered from after
        ``trusted_since`` (a purge may have been missed before then); else None.
        It is already logged: the edge does not log it again."""
        for i, kind in enumerate(REFUSALS):
            since = self._seen.since(f"{i}|{key}", now)
            if since is not None and since >= trusted_since:
                error = kind("refused a moment ago (cache.negative_ttl)")
                error.quiet = True
                return error
        return None

    def raise_remembered(self, key: str, now: float, trusted_since: float) -> None:
        """Raise the refusal remembered for ``key``, if any (counted): then no origin
        request is made for it."""
        refusal = self.refusal(key, now, trusted_since)
        if refusal is not None:
            self.stats.refused_hits += 1
            raise refusal

    def is_refusal(self, image_id: str, error: OriginError) -> bool:
        """Whether ``error`` refuses the object itself; such an error is counted and
        logged here (throttled), and marked so the edge does not log it again."""
        if not isinstance(error, REFUSALS):
            return False
        self.stats.origin_refused += 1
        self._logged.log(logging.WARNING, "refused %s: %s (remembered for "
                         "cache.negative_ttl)", image_id, error.detail)
        error.quiet = True
        return True
