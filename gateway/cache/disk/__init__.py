"""On-disk blob cache: one verified file per entry, sharded by key hash, LRU-bounded.

Layout
    ``root/h[0:2]/h[2:4]/h`` with ``h = sha256(key)``. The key itself never
    becomes part of a path, so nothing a client can influence names a file.

File format (integers big-endian)
    ======  ====  ==============================================
    0       4s    magic ``b"IGWB"``
    4       H     format version (1)
    6       H     reserved, 0
    8       I     length n of the JSON metadata block
    12      I     CRC-32 of the JSON metadata block
    16      n     JSON: every ``ObjectMeta`` field plus ``"key"``
    16 + n        body: ``meta.size`` bytes whose sha256 is ``meta.digest``
    ======  ====  ==============================================

    ``get`` trusts nothing it has not checked: magic, version, metadata CRC and
    JSON, stored key == requested key, file size == header + body, and the
    sha256 of the body. A file failing any check is removed and counted in
    ``counters.corrupt_dropped``; its bytes are never returned.

Writes
    A temp file (``.tmp-<random>``) in the entry's shard folder is written,
    fsynced and ``os.replace``d over the entry, then the folder is fsynced (best
    effort). Readers -- in this process or another replica sharing the folder --
    therefore see the old or the new whole file, never a mix. The writer holds
    an exclusive ``flock`` on its temp file until the rename; start-up removes
    every temp file it can lock (its writer died), whatever its age.

Threads
    Every file operation runs in a dedicated ``ThreadPoolExecutor``, one job per
    logical operation (open + read + verify of a ``get`` is ONE job). That is
    why this is not built on aiofiles: it wraps each call (open, read, seek,
    close) in its own executor hop, which costs a thread round trip per syscall
    and cannot keep "open, verify, hand over the same fd" atomic from the
    caller's point of view. Jobs only touch files and return plain results; the
    LRU index is read and written on the event loop thread only, so it needs no
    lock.

Bound
    The index (``OrderedDict`` key hash -> record) counts the whole file size
    (header + body), because that is what fills the disk. After each put the
    least recently used entries are evicted until the total is within
    ``max_bytes``; an entry that alone exceeds ``max_bytes`` is not stored.
    Entries found on disk at start-up join the index in a background scan,
    ordered by file mtime (``get`` re-touches an entry's mtime at most every few
    minutes, so mtime approximates the last use across restarts).

Replicas sharing one root each bound what they know of (their start-up scan
plus their own reads and writes); files written by another replica after our
scan are only counted once we read them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Final, TypeVar, TypeVarTuple

from gateway.model import Blob, FileBlob, ObjectMeta, image_of
from gateway.observe.counters import LayerCounters

log = logging.getLogger(__name__)

MAGIC: Final = b"IGWB"
FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sHHII")
HEADER_SIZE: Final = _HEADER.size
MAX_META_BYTES: Final = 64 * 1024
TEMP_PREFIX: Final = ".tmp-"
#: Only where the filesystem has no flock support: temp files younger than this
#: are taken to belong to a live writer (another replica sharing the folder).
DEFAULT_TEMP_GRACE: Final = 60.0
#: A hit re-touches the file's mtime (the recency hint for the next start-up
#: scan) only when the mtime is older than this, to keep hits cheap.
TOUCH_INTERVAL: Final = 300.0
_CHUNK: Final = 1 << 20
_SCAN_BATCH: Final = 256
_HEX: Final = frozenset("0123456789abcdef")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def key_hash(key: str) -> str:
    """The file name of ``key``: sha256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def encode_header(key: str, meta: ObjectMeta) -> bytes:
    """Fixed header + JSON metadata block, everything that precedes the body."""
    doc: dict[str, Any] = {f.name: getattr(meta, f.name) for f in fields(meta)}
    doc["key"] = key
    block = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(block), zlib.crc32(block)) + block


class _Corrupt(Exception):
    """The file is not a whole, well-formed entry."""


class _Foreign(Exception):
    """A well-formed header of a newer format version: not ours to judge or delete."""


def _want_str(doc: dict[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str):
        raise TypeError(name)
    return value


def _want_int(doc: dict[str, Any], name: str) -> int:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(name)
    return value


def _want_num(doc: dict[str, Any], name: str) -> float:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(name)
    return value


def _decode_meta(block: bytes) -> tuple[str, ObjectMeta]:
    try:
        doc = json.loads(block)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _Corrupt("metadata is not JSON") from exc
    if not isinstance(doc, dict):
        raise _Corrupt("metadata is not an object")
    try:
        key = _want_str(doc, "key")
        origin_etag = doc.get("origin_etag")
        if origin_etag is not None and not isinstance(origin_etag, str):
            raise TypeError("origin_etag")
        meta = ObjectMeta(
            etag=_want_str(doc, "etag"), digest=_want_str(doc, "digest"),
            content_type=_want_str(doc, "content_type"), size=_want_int(doc, "size"),
            last_modified=_want_int(doc, "last_modified"),
            stored_at=_want_num(doc, "stored_at"), expires_at=_want_num(doc, "expires_at"),
            origin_etag=origin_etag)
    except (KeyError, TypeError) as exc:
        raise _Corrupt(f"metadata field {exc} missing or mistyped") from exc
    if meta.size < 0 or len(meta.digest) != 64 or not set(meta.digest) <= _HEX:
        raise _Corrupt("metadata size or digest invalid")
    return key, meta


def _read_meta(f: IO[bytes], file_size: int) -> tuple[str, ObjectMeta, int]:
    """Check the header of an open entry file; returns (key, meta, body offset).

    Leaves ``f`` positioned at the body.
    """
    raw = f.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise _Corrupt("truncated header")
    magic, version, _reserved, meta_len, crc = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise _Corrupt("bad magic")
    if version > FORMAT_VERSION:
        raise _Foreign(f"format version {version}")
    if version != FORMAT_VERSION:
        raise _Corrupt(f"bad format version {version}")
    if not 0 < meta_len <= MAX_META_BYTES:
        raise _Corrupt(f"bad metadata length {meta_len}")
    block = f.read(meta_len)
    if len(block) != meta_len:
        raise _Corrupt("truncated metadata")
    if zlib.crc32(block) != crc:
        raise _Corrupt("metadata checksum mismatch")
    key, meta = _decode_meta(block)
    offset = HEADER_SIZE + meta_len
    if file_size != offset + meta.size:
        raise _Corrupt(f"file is {file_size} bytes, header says {offset + meta.size}")
    return key, meta, offset


def _hash_body(f: IO[bytes], size: int, sink: IO[bytes] | None = None) -> str:
    """sha256 of the next ``size`` bytes of ``f``, read in chunks (copied to ``sink``)."""
    hasher = hashlib.sha256()
    remaining = size
    while remaining:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            raise _Corrupt("body shorter than its header says")
        hasher.update(chunk)
        if sink is not None:
            sink.write(chunk)
        remaining -= len(chunk)
    return hasher.hexdigest()


def _lock_temp(fd: int) -> None:
    with contextlib.suppress(OSError):  # no lock support: the mtime rule covers it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _abandoned(path: str, cutoff: float) -> bool:
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            return os.fstat(f.fileno()).st_mtime < cutoff
        return True


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; best effort (not every FS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_if_same(path: Path, st: os.stat_result | None) -> None:
    """Remove ``path`` if it is still the file ``st`` describes.

    Another replica may have replaced a bad file with a good one since we opened
    it; comparing inodes keeps us from deleting that (a tiny race remains between
    the stat and the unlink, and its worst case is one lost cache entry).
    """
    try:
        if st is not None:
            current = os.stat(path)
            if (current.st_ino, current.st_dev) != (st.st_ino, st.st_dev):
                return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("disk cache: cannot remove %s: %s", path, exc)


def _is_shard(name: str) -> bool:
    return len(name) == 2 and set(name) <= _HEX


def _shard_dirs(root: Path) -> Iterator[Path]:
    """Every ``root/xx/yy`` folder, skipping whatever else lives there."""
    try:
        level1 = [e for e in os.scandir(root) if _is_shard(e.name) and e.is_dir()]
    except OSError as exc:
        log.warning("disk cache: cannot list %s: %s", root, exc)
        return
    for d1 in level1:
        try:
            level2 = [e for e in os.scandir(d1.path) if _is_shard(e.name) and e.is_dir()]
        except OSError as exc:
            log.warning("disk cache: cannot list %s: %s", d1.path, exc)
            continue
        for d2 in level2:
            yield Path(d2.path)


@dataclass(slots=True)
class _Record:
    size: int  # whole file: header + body
    key: str
    tick: int  # when the index last learned of this file (see DiskCache.get)


@dataclass(slots=True)
class _Found:
    mtime: float
    hash: str
    size: int
    key: str


@dataclass(slots=True)
class _Read:
    status: str  # hit | missing | expired | corrupt | foreign | error
    entry: Blob | FileBlob | None = None
    file_size: int = 0
    detail: str = ""


@dataclass(slots=True)
class _Refreshed:
    status: str  # ok | missing | corrupt | mismatch | error
    file_size: int = 0
    detail: str = ""


def _close_orphan(cf: concurrent.futures.Future[_Read]) -> None:
    """A get was cancelled while its job ran: close the file nobody will send."""
    if cf.cancelled() or cf.exception() is not None:
        return
    entry = cf.result().entry
    if isinstance(entry, FileBlob):
        entry.file.close()


class DiskCache:
    """The on-disk layer of the cache; see the module docstring."""

    name = "disk"

    def __init__(self, root: Path, *, max_bytes: int, max_stale: float, inline_max_bytes: int,
                 counters: LayerCounters | None = None, clock: Callable[[], float] = time.time,
                 executor_threads: int = 4, temp_grace: float = DEFAULT_TEMP_GRACE) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if executor_threads < 1:
            raise ValueError(f"executor_threads must be at least 1, not {executor_threads}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_stale = max_stale
        self.inline_max_bytes = inline_max_bytes
        self.counters = counters if counters is not None else LayerCounters()
        # Compared with file mtimes, hence wall-clock time and not ``clock``.
        self.temp_grace = temp_grace
        self._clock = clock
        # key hash -> (dev, inode, size, mtime_ns) of the file last verified; written
        # by the executor threads (single dict operations, atomic under the GIL).
        self._verified: dict[str, tuple[int, int, int, int]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=executor_threads, thread_name_prefix="disk-cache")
        self._index: OrderedDict[str, _Record] = OrderedDict()
        self._by_image: dict[str, set[str]] = {}
        self._size = 0
        self._tick = 0
        self._unlinking: dict[str, int] = {}  # hash -> pending unlink jobs
        # While the start-up scan runs: hashes dropped and images purged since it
        # began. The scan must not bring back either.
        self._forgotten: set[str] | None = None
        self._purged: set[str] | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._scanned = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- introspection -----------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Bytes (header + body) of the entries in the index."""
        return self._size

    @property
    def entry_count(self) -> int:
        return len(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def path_for(self, key: str) -> Path:
        return self._path(key_hash(key))

    def _path(self, h: str) -> Path:
        return self.root / h[0:2] / h[2:4] / h

    # -- life cycle --------------------------------------------------------

    async def start(self) -> None:
        """Create the root, remove dead temp files, and start the background scan.

        Raises ``OSError`` when the root cannot be created or listed (a
        misconfiguration worth stopping for); everything later degrades to
        cache misses and counted write errors instead.
        """
        if self._scan_task is not None or self._closed:
            return
        paths = await self._run(self._sweep_job)
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
        if self._scan_task is not None and not self._scan_task.done():
            self._scan_task.cancel()
            await asyncio.wait({self._scan_task})
        if self._tasks:
            # Writes in flight finish, so no temp file is left behind.
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._scanned.set()

    async def writable(self) -> bool:
        """Whether a small file can be created and removed under root (/readyz)."""
        if self._closed:
            return False
        return await self._run(self._probe_job)

    # -- the CacheLayer protocol -----------------------------------------------

    async def get(self, key: str) -> Blob | FileBlob | None:
        if self._closed:
            return None
        h = key_hash(key)
        tick = self._tick
        cf = self._executor.submit(self._read_job, key, h, self._clock())
        try:
            res = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            cf.add_done_callback(_close_orphan)
            raise
        if res.status == "hit":
            if self._purged is not None and image_of(key) in self._purged \
                    and h not in self._index:
                # Written before a purge that came while the scan had not found
                # it (anything stored since the purge is in the index).
                if isinstance(res.entry, FileBlob):
                    res.entry.file.close()
                self._forget(h)
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
                self._forget(h)
        return None

    async def put(self, key: str, blob: Blob) -> None:
        """Store ``blob``; disk errors are logged and counted, never raised."""
        if self._closed:
            return
        if len(blob.body) != blob.meta.size:
            raise ValueError(f"body is {len(blob.body)} bytes, meta.size says {blob.meta.size}")
        await self._shielded(self._put(key, blob))

    async def refresh(self, key: str, meta: ObjectMeta) -> None:
        """Replace the metadata of an existing entry (after a 304), keeping its body.

        A no-op when the entry is missing, or when ``meta`` describes other bytes
        (different digest or size): that is a new body, which needs ``put``.
        """
        if self._closed:
            return
        await self._shielded(self._refresh(key, meta))

    async def delete(self, key: str) -> None:
        if self._closed:
            return
        h = key_hash(key)
        self._forget(h)
        await self._shielded(self._unlink([h]))

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
        hashes = list(self._by_image.get(image_id, ()))
        for h in hashes:
            self._forget(h)
        if self._purged is not None:
            self._purged.add(image_id)
        return await self._shielded(self._unlink(hashes))

    async def clear(self) -> None:
        if self._closed:
            return
        await self._shielded(self._clear())

    # -- event-loop side ---------------------------------------------------

    def _run(self, fn: Callable[[*Ts], T], *args: *Ts) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to the end even if the caller is cancelled.

        A cancelled put must still record (or clean up) the file its job
        writes, or the index and the disk would drift apart.
        """
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, key: str, blob: Blob) -> None:
        h = key_hash(key)
        header = encode_header(key, blob.meta)
        total = len(header) + blob.meta.size
        if len(header) > HEADER_SIZE + MAX_META_BYTES or total > self.max_bytes:
            # Not storable; an older copy of this key must not outlive it.
            log.debug("disk cache: not storing %r (%d bytes)", key, total)
            self._forget(h)
            await self._unlink([h])
            return
        error = await self._run(self._write_job, h, header, blob.body)
        if error is not None:
            self.counters.write_errors += 1
            log.warning("disk cache: cannot store %r: %s", key, error)
            return
        victims = self._admit(h, key, total)
        if victims:
            await self._unlink(victims)

    async def _refresh(self, key: str, meta: ObjectMeta) -> None:
        h = key_hash(key)
        header = encode_header(key, meta)
        res = await self._run(self._refresh_job, key, h, header, meta)
        if res.status == "ok":
            victims = self._admit(h, key, res.file_size)
            if victims:
                await self._unlink(victims)
        elif res.status == "missing":
            self._forget(h)
        elif res.status == "corrupt":
            self._forget(h)
            self.counters.corrupt_dropped += 1
            log.warning("disk cache: dropped corrupt entry %r: %s", key, res.detail)
        elif res.status == "mismatch":
            log.warning("disk cache: not refreshing %r: %s", key, res.detail)
        else:
            self.counters.write_errors += 1
            log.warning("disk cache: cannot refresh %r: %s", key, res.detail)

    async def _clear(self) -> None:
        if self._scan_task is not None and not self._scan_task.done():
            self._scan_task.cancel()  # everything it would find is about to go
            await asyncio.wait({self._scan_task})
        self._index.clear()
        self._by_image.clear()
        self._size = 0
        removed = await self._run(self._clear_job)
        log.info("disk cache: cleared %d entries", removed)

    async def _scan(self, paths: list[Path]) -> None:
        found: list[_Found] = []
        corrupt = expired = 0
        try:
            for start in range(0, len(paths), _SCAN_BATCH):
                batch = paths[start:start + _SCAN_BATCH]
                entries, bad, old = await self._run(self._scan_job, batch, self._clock())
                found.extend(entries)
                corrupt += bad
                expired += old
            self.counters.corrupt_dropped += corrupt
            self._merge(found)
            log.info("disk cache: %d entries, %d bytes on disk (%d corrupt and %d expired "
                     "files removed)", len(self._index), self._size, corrupt, expired)
        except Exception:
            log.exception("disk cache: start-up scan failed; the index holds only new entries")
        finally:
            self._forgotten = None
            self._purged = None
            self._scanned.set()

    def _merge(self, found: list[_Found]) -> None:
        """Put scanned files before (older than) anything used since start-up."""
        forgotten = self._forgotten or set()
        purged = self._purged or set()
        found.sort(key=lambda e: e.mtime)
        merged: OrderedDict[str, _Record] = OrderedDict()
        doomed: list[str] = []
        for e in found:
            if e.hash in self._index or e.hash in forgotten or e.hash in merged:
                continue
            if image_of(e.key) in purged:
                doomed.append(e.hash)
                continue
            merged[e.hash] = _Record(e.size, e.key, 0)
            self._size += e.size
            self._by_image.setdefault(image_of(e.key), set()).add(e.hash)
        merged.update(self._index)
        self._index = merged
        self._schedule_unlink(doomed + self._evict_over_bound())

    def _admit(self, h: str, key: str, size: int) -> list[str]:
        """Record ``h`` as most recently used; returns the hashes evicted for it."""
        self._forget(h)
        if size > self.max_bytes:  # a file larger than the bound (max_bytes lowered?)
            return [h]
        self._tick += 1
        self._index[h] = _Record(size, key, self._tick)
        self._size += size
        self._by_image.setdefault(image_of(key), set()).add(h)
        return self._evict_over_bound()

    def _evict_over_bound(self) -> list[str]:
        victims: list[str] = []
        while self._size > self.max_bytes and self._index:
            h = next(iter(self._index))
            self._forget(h)
            victims.append(h)
            self.counters.evictions += 1
        return victims

    def _forget(self, h: str) -> bool:
        self._verified.pop(h, None)
        if self._forgotten is not None:  # the scan may have read this file already
            self._forgotten.add(h)
        record = self._index.pop(h, None)
        if record is None:
            return False
        self._size -= record.size
        image_id = image_of(record.key)
        hashes = self._by_image.get(image_id)
        if hashes is not None:
            hashes.discard(h)
            if not hashes:
                del self._by_image[image_id]
        return True

    def _schedule_unlink(self, hashes: list[str]) -> None:
        if hashes:
            self._spawn(self._unlink(hashes))

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
            return await self._run(self._unlink_job, hashes)
        finally:
            for h in hashes:
                left = self._unlinking[h] - 1
                if left:
                    self._unlinking[h] = left
                else:
                    del self._unlinking[h]

    # -- executor jobs: files only, never the index --------------------------

    def _temp_path(self, folder: Path) -> Path:
        return folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"

    def _read_job(self, key: str, h: str, now: float) -> _Read:
        path = self._path(h)
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller inside a FileBlob
        except FileNotFoundError:
            return _Read("missing")
        except OSError as exc:
            return _Read("error", detail=str(exc))
        keep_open = False
        st: os.stat_result | None = None
        try:
            st = os.fstat(f.fileno())
            stored_key, meta, offset = _read_meta(f, st.st_size)
            if stored_key != key:
                raise _Corrupt(f"file holds key {stored_key!r}")
            if meta.expires_at + self.max_stale < now:
                _unlink_if_same(path, st)
                return _Read("expired")
            entry: Blob | FileBlob
            # A file this process has verified and that has not changed since (same
            # inode, size and mtime) is not hashed again: after a crash or restart
            # the set is empty, so every file is verified once before it is served.
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            verified = self._verified.get(h) == signature
            if meta.size <= self.inline_max_bytes:
                body = f.read(meta.size)
                if len(body) != meta.size:
                    raise _Corrupt("body shorter than its header says")
                if not verified and hashlib.sha256(body).hexdigest() != meta.digest:
                    raise _Corrupt("body digest mismatch")
                entry = Blob(meta, body)
            else:
                # Verified through this very fd: whatever replaces or removes
                # the path from now on, the caller sends these checked bytes.
                if not verified and _hash_body(f, meta.size) != meta.digest:
                    raise _Corrupt("body digest mismatch")
                f.seek(offset)
                entry = FileBlob(meta, f, offset)
                keep_open = True
            self._verified[h] = signature
            if time.time() - st.st_mtime > TOUCH_INTERVAL and os.utime in os.supports_fd:
                with contextlib.suppress(OSError):
                    os.utime(f.fileno())
            return _Read("hit", entry, st.st_size)
        except _Corrupt as exc:
            self._verified.pop(h, None)
            _unlink_if_same(path, st)
            return _Read("corrupt", detail=str(exc))
        except _Foreign as exc:
            return _Read("foreign", detail=str(exc))
        except OSError as exc:
            return _Read("error", detail=str(exc))
        finally:
            if not keep_open:
                f.close()

    def _write_job(self, h: str, header: bytes, body: bytes) -> OSError | None:
        path = self._path(h)
        tmp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._temp_path(path.parent)
            with open(tmp, "xb") as f:
                _lock_temp(f.fileno())
                f.write(header)
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
                # Renamed while still open and locked: a sweeper never sees it unlocked.
                os.replace(tmp, path)
                tmp = None
            _fsync_dir(path.parent)
            return None
        except OSError as exc:
            return exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _refresh_job(self, key: str, h: str, header: bytes, meta: ObjectMeta) -> _Refreshed:
        path = self._path(h)
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            return _Refreshed("missing")
        except OSError as exc:
            return _Refreshed("error", detail=str(exc))
        with src:
            st: os.stat_result | None = None
            tmp: Path | None = None
            try:
                st = os.fstat(src.fileno())
                stored_key, old, _offset = _read_meta(src, st.st_size)
                if stored_key != key:
                    raise _Corrupt(f"file holds key {stored_key!r}")
                if (old.digest, old.size) != (meta.digest, meta.size):
                    return _Refreshed("mismatch", detail="new metadata describes other bytes")
                tmp = self._temp_path(path.parent)
                with open(tmp, "xb") as dst:
                    _lock_temp(dst.fileno())
                    dst.write(header)
                    # Copy and verify in one pass: never bless bad bytes with new meta.
                    if _hash_body(src, meta.size, dst) != meta.digest:
                        raise _Corrupt("body digest mismatch")
                    dst.flush()
                    os.fsync(dst.fileno())
                os.replace(tmp, path)
                tmp = None
                _fsync_dir(path.parent)
                return _Refreshed("ok", len(header) + meta.size)
            except _Corrupt as exc:
                _unlink_if_same(path, st)
                return _Refreshed("corrupt", detail=str(exc))
            except _Foreign:
                return _Refreshed("missing")
            except OSError as exc:
                return _Refreshed("error", detail=str(exc))
            finally:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)

    def _unlink_job(self, hashes: list[str]) -> int:
        removed = 0
        for h in hashes:
            try:
                os.unlink(self._path(h))
                removed += 1
            except FileNotFoundError:
                pass  # another replica got there first
            except OSError as exc:
                log.warning("disk cache: cannot remove %s: %s", self._path(h), exc)
        return removed

    def _sweep_job(self) -> list[Path]:
        """Create root, remove dead temp files, list entry files (no stat, no open)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.listdir(self.root)  # unreadable root: fail start() now, not every request later
        cutoff = time.time() - self.temp_grace
        removed = self._remove_temps(self.root, cutoff)  # writable() probes
        entries: list[Path] = []
        for folder in _shard_dirs(self.root):
            removed += self._remove_temps(folder, cutoff)
            prefix = folder.parent.name + folder.name
            try:
                with os.scandir(folder) as it:
                    entries.extend(Path(e.path) for e in it
                                   if len(e.name) == 64 and e.name.startswith(prefix)
                                   and set(e.name) <= _HEX)
            except OSError as exc:
                log.warning("disk cache: cannot list %s: %s", folder, exc)
        if removed:
            log.info("disk cache: removed %d left-over temp files", removed)
        return entries

    @staticmethod
    def _remove_temps(folder: Path, cutoff: float) -> int:
        """Remove temp files whose writer is gone: a live writer holds an exclusive
        flock on its temp file until it is renamed, and the kernel drops the lock
        when the writer dies, so "can we lock it" tells a crashed write from one in
        progress in another process or replica on this host. Where locks are not
        supported, files older than ``cutoff`` are taken as abandoned."""
        removed = 0
        try:
            with os.scandir(folder) as it:
                temps = [e for e in it if e.name.startswith(TEMP_PREFIX)]
        except OSError as exc:
            log.warning("disk cache: cannot list %s: %s", folder, exc)
            return 0
        for e in temps:
            try:
                if _abandoned(e.path, cutoff):
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("disk cache: cannot remove %s: %s", e.path, exc)
        return removed

    def _scan_job(self, paths: list[Path], now: float) -> tuple[list[_Found], int, int]:
        """Read the header of each file: (entries, corrupt removed, expired removed)."""
        found: list[_Found] = []
        corrupt = expired = 0
        for path in paths:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("disk cache: cannot read %s: %s", path, exc)
                continue
            with f:
                st: os.stat_result | None = None
                try:
                    st = os.fstat(f.fileno())
                    key, meta, _offset = _read_meta(f, st.st_size)
                    if key_hash(key) != path.name:
                        raise _Corrupt("file name does not match its key")
                except _Corrupt as exc:
                    log.debug("disk cache: removing corrupt %s: %s", path, exc)
                    _unlink_if_same(path, st)
                    corrupt += 1
                    continue
                except _Foreign:
                    continue
                except OSError as exc:
                    log.warning("disk cache: cannot read %s: %s", path, exc)
                    continue
            if meta.expires_at + self.max_stale < now:
                _unlink_if_same(path, st)
                expired += 1
                continue
            found.append(_Found(st.st_mtime, path.name, st.st_size, key))
        return found, corrupt, expired

    def _clear_job(self) -> int:
        removed = 0
        cutoff = time.time() - self.temp_grace
        for folder in _shard_dirs(self.root):
            self._remove_temps(folder, cutoff)
            try:
                with os.scandir(folder) as it:
                    names = [e.name for e in it if len(e.name) == 64 and set(e.name) <= _HEX]
            except OSError as exc:
                log.warning("disk cache: cannot list %s: %s", folder, exc)
                continue
            for name in names:
                try:
                    os.unlink(folder / name)
                    removed += 1
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("disk cache: cannot remove %s: %s", folder / name, exc)
        return removed

    def _probe_job(self) -> bool:
        path = self._temp_path(self.root)
        try:
            with open(path, "xb") as f:
                f.write(b"ok")
            os.unlink(path)
            return True
        except OSError as exc:
            log.debug("disk cache: %s not writable: %s", self.root, exc)
            with contextlib.suppress(OSError):
                os.unlink(path)
            return False
