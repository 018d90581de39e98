"""Images the origin said do not exist, remembered for a short while and bounded by bytes.

Without it every request for a missing image (a typo, a deleted picture, someone
trying random ids) reaches the origin. A remembered miss is answered with the
fallback at the cost of one dict lookup.

Keys are the original's cache key (its version and key): every variant of
the image shares it, and a purge or an upload, which moves the version, ends it
at once. An entry is dropped when it is older than ``ttl``; when the bound is
reached the oldest goes first. With one TTL for every entry, insertion order is
expiry order, so a plain FIFO is also the right eviction order: a BoundedLRU that
is only ever peeked at.
"""

from __future__ import annotations

import sys

from gateway.cache.lru import BoundedLRU

#: What an entry costs besides its key string: its float, the dict slot and the
#: OrderedDict's link (measured with tracemalloc: 70-90 bytes; tests/unit/cache/
#: test_negative.py checks that the accounting never falls below the real use).
ENTRY_OVERHEAD = 160


def _cost(key: str, since: float = 0.0) -> int:
    return sys.getsizeof(key) + ENTRY_OVERHEAD


class NegativeCache:
    def __init__(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._since: BoundedLRU[str, float] = BoundedLRU(max_bytes, _cost)  # oldest first

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_bytes > 0

    @property
    def size_bytes(self) -> int:
        return self._since.size

    def __len__(self) -> int:
        return len(self._since)

    def remember(self, key: str, since: float) -> None:
        """The origin said ``key`` is missing, in an answer to a request sent at
        ``since``: the entry counts from then, not from when the answer came."""
        if self.enabled:
            self._since.put(key, since)

    def since(self, key: str, now: float) -> float | None:
        """When the origin was asked about ``key`` (it said missing), or None when
        nothing still valid is remembered."""
        since = self._since.peek(key)  # never moved: the oldest stays first
        if since is None:
            return None
        if now >= since + self.ttl:
            self.forget(key)
            return None
        return since

    def forget(self, key: str) -> None:
        self._since.pop(key)

    def clear(self) -> None:
        self._since.clear()
