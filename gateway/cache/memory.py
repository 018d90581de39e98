"""In-process LRU bounded by total body bytes, with a per-object cap."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

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
        self._entries: OrderedDict[str, Blob] = OrderedDict()
        self._keys_by_image: dict[str, set[str]] = {}
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def fits(self, size: int) -> bool:
        return size <= self.max_object_bytes

    def get_nowait(self, key: str) -> Blob | None:
        blob = self._entries.get(key)
        if blob is None:
            return None
        if self._clock() > blob.meta.expires_at + self.max_stale:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return blob

    async def get(self, key: str) -> Blob | None:
        return self.get_nowait(key)

    def put_nowait(self, key: str, blob: Blob) -> None:
        size = len(blob.body)
        if not self.fits(size):
            self._remove(key)
            return
        self._remove(key)
        while self._entries and self.size_bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.counters.evictions += 1
        self._entries[key] = blob
        self._keys_by_image.setdefault(image_of(key), set()).add(key)
        self.size_bytes += size

    async def put(self, key: str, blob: Blob) -> None:
        self.put_nowait(key, blob)

    async def delete(self, key: str) -> None:
        self._remove(key)

    async def purge(self, image_id: str) -> int:
        keys = self._keys_by_image.get(image_id, set()).copy()
        for key in keys:
            self._remove(key)
        return len(keys)

    async def clear(self) -> None:
        self._entries.clear()
        self._keys_by_image.clear()
        self.size_bytes = 0

    async def close(self) -> None:
        await self.clear()

    def _remove(self, key: str) -> None:
        blob = self._entries.pop(key, None)
        if blob is None:
            return
        self.size_bytes -= len(blob.body)
        image_id = image_of(key)
        keys = self._keys_by_image.get(image_id)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_by_image[image_id]
