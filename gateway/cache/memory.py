"""In-process LRU bounded by total body bytes, with a per-object cap."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.cache.lru import ByteLRU
from gateway.model import Blob, image_of
from gateway.observe.counters import LayerCounters


class MemoryCache:
    name = "memory"

    def __init__(self, max_bytes: int, max_object_bytes: int, max_stale: float,
                 counters: LayerCounters | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.max_bytes = max_bytes
        self.max_object_bytes = min(max_object_bytes, max_bytes)
        self.max_stale = max_stale
        self.counters = counters or LayerCounters()
        self._clock = clock
        self._entries: ByteLRU[str, Blob] = ByteLRU(
            max_bytes, size_of=lambda blob: len(blob.body), image_of=lambda key, _: image_of(key))

    @property
    def size_bytes(self) -> int:
        return self._entries.size

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, size: int) -> bool:
        return size <= self.max_object_bytes

    def get_nowait(self, key: str) -> Blob | None:
        blob = self._entries.get(key)
        if blob is None:
            return None
        if self._clock() > blob.meta.expires_at + self.max_stale:
            self._entries.pop(key)
            return None
        self._entries.used(key)
        return blob

    def fresh(self, key: str, now: float) -> Blob | None:
        """The entry if it is fresh at ``now`` (made most recently used), else None
        (an expired entry stays for get_nowait: it may still be served stale)."""
        blob = self._entries.get(key)
        if blob is None or blob.meta.expires_at <= now:
            return None
        self._entries.used(key)
        return blob

    async def get(self, key: str) -> Blob | None:
        return self.get_nowait(key)

    def put_nowait(self, key: str, blob: Blob) -> None:
        if not self.fits(len(blob.body)):
            self._entries.pop(key)  # an older copy must not outlive this one
            return
        self._entries.add(key, blob)
        self.counters.evictions += len(self._entries.evict())

    async def put(self, key: str, blob: Blob) -> None:
        self.put_nowait(key, blob)

    async def delete(self, key: str) -> None:
        self._entries.pop(key)

    async def purge(self, image_id: str) -> int:
        keys = self._entries.keys_of(image_id)
        for key in keys:
            self._entries.pop(key)
        return len(keys)

    async def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        await self.clear()
