"""TieredCache: memory over disk, with per-image versions in the keys.

The one place that knows the order of the layers: look up (memory, then disk,
promoting a disk hit into memory and keeping an expired copy for stale serving
or revalidation), store in both, renew after a 304, purge an image (every
version and variant) and clear. The service and the variant service ask it;
nothing else touches the layers.

Versions: a purge moves an image's version forward and the version is part of
every cache key, so a fetch that was in flight during the purge lands under a
key nobody asks for any more.

Trust: versions live in Redis and in process memory only, so a process that was
deaf to the invalidation channel for a while (disconnected, not yet started, or
facing a Redis that lost its data) may hold copies of purged images under keys
that still look current. ``distrust(since)`` then makes every copy the origin
confirmed before ``since`` count as expired: the normal read path revalidates it
(a conditional GET: 304, or the new bytes) before serving it as fresh, and never
serves it as a stale copy. ``ObjectMeta.stored_at`` is when the request that
confirmed the bytes was sent, so a fetch in flight across ``since`` is not trusted.

Bounded versions: a version is the time of its purge in µs (or just above it), and
no copy cached before a purge outlives it by more than ``version_horizon`` (disk.ttl +
disk.max_stale), so versions older than that are forgotten (swept during purges):
the map holds the images purged within the horizon, not every image ever purged.

Misses: images the origin said are missing are remembered (``NegativeCache``)
under the original's key, so a purge or an upload ends them with the version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.cache.disk import DiskCache
from gateway.cache.memory import MemoryCache
from gateway.cache.negative import NegativeCache
from gateway.model import Blob, Entry, FileBlob, Layer, ObjectMeta, Served, cache_key
from gateway.observe.health import Check


class NoDisk:
    """The disk layer when ``disk.enabled`` is false: finds nothing, keeps nothing."""

    size_bytes = 0
    entry_count = 0
    max_bytes = 0

    async def get(self, key: str) -> None:
        return None

    async def put(self, key: str, blob: Blob) -> None:
        return None

    async def refresh(self, key: str, meta: ObjectMeta) -> None:
        return None

    async def purge(self, image_id: str) -> int:
        return 0

    async def clear(self) -> None:
        return None


@dataclass(slots=True)
class Lookup:
    """What the layers hold for one key: a fresh entry with its layer, or (maybe) an
    expired copy. Whoever receives a FileBlob in either closes it. ``disk_missed``:
    a disk was asked and had no fresh copy (a miss to count; never without a disk)."""

    hit: Served | None = None
    stale: Entry | None = None
    disk_missed: bool = False


class TieredCache:
    def __init__(self, memory: MemoryCache, disk: DiskCache | NoDisk,
                 clock: Callable[[], float] = time.time, *,
                 negative: NegativeCache | None = None, trusted_since: float = 0.0,
                 version_horizon: float = 0.0) -> None:
        self.memory = memory
        self.disk = disk
        self.clock = clock
        self.negative = negative if negative is not None else NegativeCache(0, 0)
        self.trusted_since = trusted_since
        self.versions: dict[str, int] = {}
        self.version_horizon = version_horizon  # 0: versions are never forgotten
        self._sweep_every = min(version_horizon / 16, 3600.0)
        self._next_sweep = clock() + self._sweep_every
        self._has_disk = isinstance(disk, DiskCache)  # the only place that asks

    def version_of(self, image_id: str) -> int:
        return self.versions.get(image_id, 0)

    def key_for(self, image_id: str, variant: str = "") -> str:
        return cache_key(image_id, self.versions.get(image_id, 0), variant)

    # -- trust -------------------------------------------------------------------

    def distrust(self, since: float) -> None:
        """Purges made before ``since`` may have been missed: every copy the origin
        confirmed before then must be revalidated before it is served."""
        self.trusted_since = max(self.trusted_since, since)

    def trusted(self, meta: ObjectMeta) -> bool:
        """Whether no purge can have been missed since the origin confirmed these
        bytes; an untrusted copy is only a validator, never served as it is."""
        return meta.stored_at >= self.trusted_since

    def fresh(self, meta: ObjectMeta, now: float) -> bool:
        return meta.fresh(now) and self.trusted(meta)

    # -- misses ------------------------------------------------------------------

    def known_missing(self, key: str, now: float) -> bool:
        """Whether the origin said, within ``cache.negative_ttl`` and since the last
        purge of the image (``key`` is its original's), that it does not exist."""
        since = self.negative.since(key, now)
        return since is not None and since >= self.trusted_since

    def remember_missing(self, key: str, since: float) -> None:
        """The origin said the original of ``key`` is missing, answering a request
        sent at ``since``."""
        self.negative.remember(key, since)

    # -- reads -------------------------------------------------------------------

    async def lookup(self, key: str, now: float) -> Lookup:
        """The nearest fresh copy (a disk hit that fits is promoted into memory),
        else the expired (or untrusted) copy the layers still hold, if any."""
        blob = self.memory.get_nowait(key)
        if blob is not None and self.fresh(blob.meta, now):
            return Lookup(Served(Layer.MEMORY, blob))
        entry = await self.disk.get(key)
        if entry is not None and self.fresh(entry.meta, now):
            if isinstance(entry, Blob):
                self.memory.put_nowait(key, entry)
            return Lookup(Served(Layer.DISK, entry))
        if blob is None:
            return Lookup(stale=entry, disk_missed=self._has_disk)
        if entry is not None:
            entry.close()
        return Lookup(stale=blob, disk_missed=self._has_disk)

    def fresh_in_memory(self, key: str, now: float) -> Blob | None:
        """The hot path: a fresh (and trusted) memory entry, with no coroutine and no
        disk I/O."""
        blob = self.memory.fresh(key, now)
        return blob if blob is not None and self.trusted(blob.meta) else None

    def in_memory(self, key: str) -> Blob | None:
        """The memory copy, fresh or not (no disk I/O)."""
        return self.memory.get_nowait(key)

    async def any_copy(self, key: str) -> Entry | None:
        """Whatever copy the layers hold, fresh or not, without promoting it."""
        blob = self.memory.get_nowait(key)
        if blob is not None:
            return blob
        return await self.disk.get(key)

    async def fresh_on_disk(self, key: str) -> Blob | None:
        """A fresh memory-sized copy on disk: what another process sharing the disk
        folder (a worker, a replica on this host) has just written."""
        entry = await self.disk.get(key)
        if isinstance(entry, Blob) and self.fresh(entry.meta, self.clock()):
            return entry
        if entry is not None:
            entry.close()
        return None

    async def has_fresh(self, key: str) -> bool:
        """Whether a fresh copy is in memory or on disk (nothing promoted)."""
        now = self.clock()
        blob = self.memory.get_nowait(key)
        if blob is not None and self.fresh(blob.meta, now):
            return True
        entry = await self.disk.get(key)
        if entry is None:
            return False
        entry.close()
        return self.fresh(entry.meta, now)

    # -- writes ------------------------------------------------------------------

    def remember(self, key: str, blob: Blob) -> None:
        """Memory only: for entries that are cheap to remake (fallback variants)."""
        self.memory.put_nowait(key, blob)

    async def store(self, key: str, blob: Blob) -> None:
        self.memory.put_nowait(key, blob)
        await self.disk.put(key, blob)

    async def adopt(self, key: str, blob: Blob) -> None:
        """Store another replica's result: in memory, and on disk unless a process
        sharing our disk folder has written it already."""
        self.memory.put_nowait(key, blob)
        entry = await self.disk.get(key)
        if entry is None:
            await self.disk.put(key, blob)
        else:
            entry.close()

    async def renew(self, key: str, held: Entry, meta: ObjectMeta) -> Entry:
        """New freshness for bytes the caller holds (the origin answered 304, or the
        original of a variant is unchanged): both layers get ``meta``; the returned
        entry is ``held`` with it (the same open file for a FileBlob)."""
        if isinstance(held, FileBlob):
            renewed: Entry = FileBlob(meta, held.file, held.offset)
        else:
            renewed = Blob(meta, held.body)
            self.memory.put_nowait(key, renewed)
        await self.disk.refresh(key, meta)
        return renewed

    async def purge(self, image_id: str, version: int | None = None) -> bool:
        """Drop every cached version and variant of one image.

        Later reads use a key no earlier read used: ``version`` when it is newer
        than ours, else our version + 1. ``version`` equal to ours is a purge
        already applied here (our own message coming back): nothing is done and
        False returned.
        """
        current = self.versions.get(image_id, 0)
        if version is not None and version == current:
            return False
        self.negative.forget(self.key_for(image_id))
        self.versions[image_id] = (version if version is not None and version > current
                                   else current + 1)
        await self.memory.purge(image_id)
        await self.disk.purge(image_id)
        if self.version_horizon and self.clock() >= self._next_sweep:
            self.forget_versions()
        return True

    def forget_versions(self) -> int:
        """Forget the versions of purges older than ``version_horizon``; how many."""
        now = self.clock()
        self._next_sweep = now + self._sweep_every
        oldest = int((now - self.version_horizon) * 1_000_000)
        old = [image_id for image_id, version in self.versions.items() if version < oldest]
        for image_id in old:
            del self.versions[image_id]
        return len(old)

    async def clear(self) -> tuple[int, int]:
        """Empty both layers of this process; (memory, disk) entries dropped."""
        counts = (len(self.memory), self.disk.entry_count)
        self.negative.clear()
        await self.memory.clear()
        await self.disk.clear()
        return counts

    def checks(self) -> dict[str, Check]:
        """Readiness checks of the layers, by name: the disk's, when there is one."""
        return {"disk": self.disk.writable} if isinstance(self.disk, DiskCache) else {}

    def gauges(self) -> dict[str, float]:
        """Sizes and bounds of each layer, for metrics."""
        out: dict[str, float] = {"memory.bytes": self.memory.size_bytes,
                                 "memory.entries": len(self.memory),
                                 "memory.limit": self.memory.max_bytes}
        if self.negative.enabled:
            out.update({"negative.bytes": self.negative.size_bytes,
                        "negative.entries": len(self.negative),
                        "negative.limit": self.negative.max_bytes})
        if self._has_disk:
            out.update({"disk.bytes": self.disk.size_bytes,
                        "disk.entries": self.disk.entry_count,
                        "disk.limit": self.disk.max_bytes})
        return out
