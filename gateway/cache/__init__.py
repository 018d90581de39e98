"""Cache layers: one small async protocol, one module a layer."""

from __future__ import annotations

from typing import Protocol

from gateway.model import Blob, Entry


class CacheLayer(Protocol):
    """A store of entries by key. Expired entries are still returned (the
    service serves them stale when the origin fails); a layer drops an entry
    only past its ``expires_at`` plus the layer's max-stale window, on
    eviction, or on delete."""

    name: str

    async def get(self, key: str) -> Entry | None: ...

    async def put(self, key: str, blob: Blob) -> None: ...

    async def clear(self) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def purge(self, image_id: str) -> int:
        """Drop every version and variant of one image; returns how many."""
        ...

    async def close(self) -> None: ...
