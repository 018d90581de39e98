"""On-disk blob cache: one verified file per entry, sharded by key hash, LRU-bounded.

The layout and the atomic write are described in ``files``, the file format and
its checks in ``format``, the executor jobs and their verification marks in
``jobs``. This module is the event-loop side: the index, the life cycle and the
public API.

Bound
    The index (a ``ByteLRU`` of key hash -> record) counts the whole file size
    (header + body), because that is what fills the disk. After each put the
    least recently used entries are evicted until the total is within
    ``max_bytes``; an entry that alone exceeds ``max_bytes`` is not stored.
    Entries found on disk at start-up join the index in a background scan,
    ordered by file mtime (``get`` re-touches an entry's mtime at most every few
    minutes, so mtime approximates the last use across restarts).

Replicas sharing one root each bound what they know of (their start-up scan
plus their own reads and writes); files written by another replica after our
scan are only counted once we read them.

Deployments
    Files are named for, and hold, ``{namespace}/{cache key}`` (the namespace names
    the deployment): deployments given one root never read each other's files, and
    a purge or ``clear`` removes only its own (and the layout before's). The scan
    still counts theirs, and those of the layout before, until they age out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple

from gateway.cache.disk.files import key_hash, other_namespace
from gateway.cache.disk.format import encode_header, storable
from gateway.cache.disk.jobs import DEFAULT_TEMP_GRACE, DiskJobs, Found, close_orphan
from gateway.cache.lru import ByteLRU
from gateway.model import Blob, FileBlob, ObjectMeta, image_of
from gateway.observe.counters import LayerCounters
from gateway.tasks import BackgroundTasks

log = logging.getLogger(__name__)

_SCAN_BATCH: Final = 256

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(slots=True)
class _Record:
    size: int  # whole file: header + body
    key: str
    tick: int  # when the index last learned of this file (see DiskCache.get)


class DiskCache:
    """The on-disk layer of the cache; see the module docstring."""

    name = "disk"

    def __init__(self, root: Path, *, max_bytes: int, max_stale: float, inline_max_bytes: int,
                 counters: LayerCounters | None = None, clock: Callable[[], float] = time.time,
                 executor_threads: int = 4, temp_grace: float = DEFAULT_TEMP_GRACE,
                 namespace: str = "") -> None:
        """``namespace``: the deployment (see the module docstring); no '/' or ':'."""
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if executor_threads < 1:
            raise ValueError(f"executor_threads must be at least 1, not {executor_threads}")
        if "/" in namespace or ":" in namespace:
            raise ValueError(f"namespace must hold no '/' or ':', not {namespace!r}")
        # Settings are read once: the index and the jobs keep what they need of them.
        self._prefix = f"{namespace}/" if namespace else ""
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_stale = max_stale
        self.inline_max_bytes = inline_max_bytes
        self.temp_grace = temp_grace
        self.counters = counters if counters is not None else LayerCounters()
        self._clock = clock
        self._jobs = DiskJobs(self.root, max_stale=max_stale,
                              inline_max_bytes=inline_max_bytes, temp_grace=temp_grace)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=executor_threads, thread_name_prefix="disk-cache")
        self._index: ByteLRU[str, _Record] = ByteLRU(
            max_bytes, size_of=lambda r: r.size, image_of=lambda _h, r: image_of(r.key))
        self._tick = 0
        self._unlinking: dict[str, int] = {}  # hash -> pending unlink jobs
        # While the start-up scan runs: hashes dropped and images purged since it
        # began. The scan must not bring back either.
        self._forgotten: set[str] | None = None
        self._purged: set[str] | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._scanned = asyncio.Event()
        # A cancelled put must still record (or clean up) the file its job
        # writes, or the index and the disk would drift apart: such work runs
        # here, shielded from its caller, and close waits for it.
        self._tasks = BackgroundTasks("disk-cache")
        self._closed = False

    # -- introspection -----------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes (header + body) of the entries in the index."""
        return self._index.size

    @property
    def entry_count(self) -> int:
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def _stored(self, key: str) -> str:  # as the files hold it, and the index knows it
        return self._prefix + key

    def _key_of(self, h: str) -> str:
        record = self._index.get(h)
        return record.key if record is not None else ""

    def path_for(self, key: str) -> Path:
        return self._jobs.path(key_hash(self._stored(key)))

    # -- life cycle --------------------------------------------------------

    async def start(self) -> None:
        """Create the root, remove dead temp files, and start the background scan.

        Raises ``OSError`` when the root cannot be created or listed (a
        misconfiguration worth stopping for); everything later degrades to
        cache misses and counted write errors instead.
        """
        if self._scan_task is not None or self._closed:
            return
        paths = await self._run(self._jobs.sweep)
        self._forgotten = set()
        self._purged = set()
        self._scan_task = asyncio.create_task(self._scan(paths), name="disk-cache-scan")

    async def wait_scanned(self) -> None:
        """Until the start-up scan has filled the index (immediately if none runs)."""
        if self._scan_task is None:
            return
        await self._scanned.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_scan()
        await self._tasks.wait()  # writes in flight finish, so no temp file is left behind
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._scanned.set()

    async def writable(self) -> bool:
        """Whether a small file can be created and removed under root (/readyz)."""
        if self._closed:
            return False
        return await self._run(self._jobs.probe)

    # -- what the tiers ask of a layer ---------------------------------------------

    async def get(self, key: str) -> Blob | FileBlob | None:
        if self._closed:
            return None
        key = self._stored(key)
        h = key_hash(key)
        tick = self._tick
        now = self._clock()
        res = self._jobs.read_cached(key, h, now)  # page-cache hit: no thread hop
        if res is None:
            cf = self._executor.submit(self._jobs.read, key, h, now)
            try:
                res = await asyncio.wrap_future(cf)
            except asyncio.CancelledError:
                cf.add_done_callback(close_orphan)
                raise
        if res.entry is not None:
            if self._purged is not None and image_of(key) in self._purged \
                    and h not in self._index:
                # Written before a purge that came while the scan had not found
                # it (anything stored since the purge is in the index).
                res.entry.close()
                self._drop(h)
                await self._unlink([h])
                return None
            if h not in self._unlinking:
                self._schedule_unlink(self._admit(h, key, res.file_size))
            return res.entry
        if res.status == "corrupt":
            self.counters.corrupt_dropped += 1
            log.warning("disk cache: dropped corrupt entry %r: %s", key, res.detail)
        elif res.status == "error":
            log.warning("disk cache: cannot read %r: %s", key, res.detail)
        if res.status in ("missing", "expired", "corrupt"):
            record = self._index.get(h)
            # Keep a record the index learned of after our job started: a put
            # that finished meanwhile has written the file we did not see.
            if record is not None and record.tick <= tick:
                self._drop(h)
        return None

    async def put(self, key: str, blob: Blob) -> None:
        """Store ``blob``; disk errors are logged and counted, never raised."""
        if self._closed:
            return
        if len(blob.body) != blob.meta.size:
            raise ValueError(f"body is {len(blob.body)} bytes, meta.size says {blob.meta.size}")
        await self._tasks.shielded(self._put(self._stored(key), blob))

    async def refresh(self, key: str, meta: ObjectMeta) -> None:
        """Replace the metadata of an existing entry (after a 304), keeping its body.

        A no-op when the entry is missing, or when ``meta`` describes other bytes
        (different digest or size): that is a new body, which needs ``put``.
        """
        if self._closed:
            return
        await self._tasks.shielded(self._refresh(self._stored(key), meta))

    async def delete(self, key: str) -> None:
        if self._closed:
            return
        h = key_hash(self._stored(key))
        self._drop(h)
        await self._tasks.shielded(self._unlink([h]))

    async def purge(self, image_id: str) -> int:
        """Remove every entry of ``image_id``; returns how many files it removed.

        Only the index knows which files belong to an image (a file's name is a
        hash). While the start-up scan runs, files it has not reached yet are
        removed when it reaches them, or when a get finds one first, rather
        than making this call (on the request path, for an origin 404) wait
        for the whole scan; those are not in the returned count.
        """
        if self._closed:
            return 0
        # Another deployment's copies of the same key on a shared root are its own.
        hashes = [h for h in self._index.keys_of(image_id)
                  if not other_namespace(self._key_of(h), self._prefix)]
        for h in hashes:
            self._drop(h)
        if self._purged is not None:
            self._purged.add(image_id)
        return await self._tasks.shielded(self._unlink(hashes))

    async def clear(self) -> None:
        if self._closed:
            return
        await self._tasks.shielded(self._clear())

    # -- event-loop side ---------------------------------------------------

    def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _put(self, key: str, blob: Blob) -> None:
        h = key_hash(key)
        header = encode_header(key, blob.meta)
        total = len(header) + blob.meta.size
        if not storable(header) or total > self.max_bytes:
            # Not storable; an older copy of this key must not outlive it.
            log.debug("disk cache: not storing %r (%d bytes)", key, total)
            self._drop(h)
            await self._unlink([h])
            return
        error = await self._run(self._jobs.write, h, header, blob.body)
        if error is not None:
            self.counters.write_errors += 1
            log.warning("disk cache: cannot store %r: %s", key, error)
            return
        await self._unlink(self._admit(h, key, total))

    async def _refresh(self, key: str, meta: ObjectMeta) -> None:
        h = key_hash(key)
        header = encode_header(key, meta)
        res = await self._run(self._jobs.refresh, key, h, header, meta)
        if res.status == "ok":
            await self._unlink(self._admit(h, key, res.file_size))
        elif res.status == "missing":
            self._drop(h)
        elif res.status == "corrupt":
            self._drop(h)
            self.counters.corrupt_dropped += 1
            log.warning("disk cache: dropped corrupt entry %r: %s", key, res.detail)
        elif res.status == "mismatch":
            log.warning("disk cache: not refreshing %r: %s", key, res.detail)
        else:
            self.counters.write_errors += 1
            log.warning("disk cache: cannot refresh %r: %s", key, res.detail)

    async def _clear(self) -> None:
        await self._stop_scan()  # everything it would find is about to go
        self._index.clear()
        removed = await self._run(self._jobs.clear, self._prefix)
        log.info("disk cache: cleared %d entries", removed)

    async def _stop_scan(self) -> None:
        if self._scan_task is not None and not self._scan_task.done():
            self._scan_task.cancel()
            await asyncio.wait({self._scan_task})

    async def _scan(self, paths: list[Path]) -> None:
        found: list[Found] = []
        corrupt = expired = 0
        try:
            for start in range(0, len(paths), _SCAN_BATCH):
                batch = paths[start:start + _SCAN_BATCH]
                entries, bad, old = await self._run(self._jobs.scan, batch, self._clock())
                found.extend(entries)
                corrupt += bad
                expired += old
            self.counters.corrupt_dropped += corrupt
            self._merge(found)
            log.info("disk cache: %d entries, %d bytes on disk (%d corrupt and %d expired "
                     "files removed)", len(self._index), self._index.size, corrupt, expired)
        except Exception:
            log.exception("disk cache: start-up scan failed; the index holds only new entries")
        finally:
            self._forgotten = None
            self._purged = None
            self._scanned.set()

    def _merge(self, found: list[Found]) -> None:
        """Put scanned files before (older than) anything used since start-up."""
        forgotten = self._forgotten or set()
        purged = self._purged or set()
        older: list[tuple[str, _Record]] = []
        doomed: list[str] = []
        for e in sorted(found, key=lambda e: e.mtime):
            if e.hash in forgotten:
                continue
            if image_of(e.key) not in purged or other_namespace(e.key, self._prefix):
                older.append((e.hash, _Record(e.size, e.key, 0)))
            elif e.hash not in self._index:  # in the index: stored since the purge
                doomed.append(e.hash)
        self._index.add_older(older)
        self._schedule_unlink(doomed + self._evict_over_bound())

    def _admit(self, h: str, key: str, size: int) -> list[str]:
        """Record ``h`` as most recently used; returns the hashes evicted for it.

        The file's verification mark stays: re-admitting the file a get has just
        verified must not make the next get hash it again.
        """
        if size > self.max_bytes:  # a file larger than the bound (max_bytes lowered?)
            self._drop(h)
            return [h]
        self._tick += 1
        self._index.add(h, _Record(size, key, self._tick))
        return self._evict_over_bound()

    def _evict_over_bound(self) -> list[str]:
        victims = [h for h, _record in self._index.evict()]
        if self._forgotten is not None:
            self._forgotten.update(victims)
        self.counters.evictions += len(victims)
        return victims

    def _drop(self, h: str) -> None:
        if self._forgotten is not None:  # the scan may have read this file already
            self._forgotten.add(h)
        self._index.pop(h)

    def _schedule_unlink(self, hashes: list[str]) -> None:
        if hashes:
            self._tasks.spawn(self._unlink(hashes))

    async def _unlink(self, hashes: list[str]) -> int:
        """Remove these files (already out of the index); returns how many existed.

        While the job runs, a get that still finds one of them does not put it
        back into the index.
        """
        if not hashes:
            return 0
        for h in hashes:
            self._unlinking[h] = self._unlinking.get(h, 0) + 1
        try:
            return await self._run(self._jobs.unlink, hashes)
        finally:
            for h in hashes:
                left = self._unlinking[h] - 1
                if left:
                    self._unlinking[h] = left
                else:
                    del self._unlinking[h]
