"""The disk cache's work on files, one executor job per logical operation.

Threads
    Every file operation runs in a dedicated ``ThreadPoolExecutor``, one job per
    logical operation (open + read + verify of a ``get`` is ONE job). That is
    why this is not built on aiofiles: it wraps each call (open, read, seek,
    close) in its own executor hop, which costs a thread round trip per syscall
    and cannot keep "open, verify, hand over the same fd" atomic from the
    caller's point of view. Jobs only touch files and return plain results; the
    LRU index is read and written on the event loop thread only, so it needs no
    lock.

Reads on the event loop
    A hit on a small file that this process has verified before and whose bytes
    are all in the page cache is read on the calling (event loop) thread by
    ``read_cached``: one ``preadv`` with ``RWF_NOWAIT``, which the kernel refuses
    (EAGAIN) rather than wait for the device. Anything else (not cached, not yet
    verified, large, expired, due for a touch, on a filesystem without
    RWF_NOWAIT) goes to the executor's ``read`` as before. A thread hop costs more
    than the read of a 15 KB picture from memory.

Verification
    A file this process has verified and that has not changed since (same
    device, inode, size and mtime) is not hashed again. The marks live only in
    memory: after a crash or restart every file is verified once before it is
    served. A job that replaces, removes or finds fault with a file drops its
    mark.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.cache.disk.files import (
    entry_names,
    entry_path,
    key_hash,
    other_namespace,
    shard_dirs,
    unlink,
    unlink_if_same,
)
from gateway.cache.disk.format import Corrupt, Foreign, hash_body, read_meta, read_meta_of
from gateway.files import atomic_writer, remove_temps, temp_path
from gateway.model import Blob, FileBlob, ObjectMeta, digest_of

log = logging.getLogger(__name__)

#: Only where the filesystem has no flock support: temp files younger than this
#: are taken to belong to a live writer (another replica sharing the folder).
DEFAULT_TEMP_GRACE: Final = 60.0
#: A hit re-touches the file's mtime (the recency hint for the next start-up
#: scan) only when the mtime is older than this, to keep hits cheap.
TOUCH_INTERVAL: Final = 300.0

#: The largest file ``read_cached`` reads on the event loop.
INLINE_READ_MAX: Final = 256 * 1024
_NOWAIT: Final = getattr(os, "RWF_NOWAIT", 0)

Signature = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


@dataclass(frozen=True, slots=True)
class Mark:
    """A file this process verified: what it was then, and what its header said
    (so a later hit on the unchanged file reads only the body)."""

    signature: Signature
    meta: ObjectMeta
    offset: int


@dataclass(slots=True)
class Read:
    status: str  # hit | missing | expired | corrupt | foreign | error
    entry: Blob | FileBlob | None = None
    file_size: int = 0
    detail: str = ""


@dataclass(slots=True)
class Refreshed:
    status: str  # ok | missing | corrupt | mismatch | error
    file_size: int = 0
    detail: str = ""


@dataclass(slots=True)
class Found:
    """An entry file the start-up scan found whole and not long expired."""

    mtime: float
    hash: str
    size: int
    key: str


class DiskJobs:
    """The executor side of one cache folder: each method but ``path`` is one job."""

    def __init__(self, root: Path, *, max_stale: float, inline_max_bytes: int,
                 temp_grace: float) -> None:
        self.root = root
        self.max_stale = max_stale
        self.inline_max_bytes = inline_max_bytes
        # Compared with file mtimes, hence wall-clock time and not the cache's clock.
        self.temp_grace = temp_grace
        # key hash -> the mark of the file last verified. Each access is a single
        # dict operation, atomic under the GIL, so the jobs share it without a lock.
        self.verified: dict[str, Mark] = {}
        #: False once the filesystem refused RWF_NOWAIT (or the platform lacks it).
        self.reads_inline = bool(_NOWAIT) and hasattr(os, "preadv")
        self._paths: dict[str, str] = {}

    def path(self, h: str) -> Path:
        return entry_path(self.root, h)

    def read_cached(self, key: str, h: str, now: float) -> Read | None:
        """``read``'s plain hit, without blocking: None whenever it cannot be sure
        (then ``read`` in the executor decides, and does the bookkeeping)."""
        if not self.reads_inline:
            return None
        mark = self.verified.get(h)
        if mark is None:
            return None
        meta = mark.meta
        if meta.size > self.inline_max_bytes or meta.expires_at + self.max_stale < now:
            return None
        try:
            fd = os.open(self._paths.get(h) or self._path_of(h), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != mark.signature
                    or time.time() - st.st_mtime > TOUCH_INTERVAL):
                return None
            body = bytearray(meta.size)
            try:
                if os.preadv(fd, [body], mark.offset, _NOWAIT) != meta.size:
                    return None
            except BlockingIOError:  # not all in the page cache: the executor waits
                return None
            except OSError:  # EOPNOTSUPP and the like: this filesystem can't say
                self.reads_inline = False
                return None
            return Read("hit", Blob(meta, bytes(body)), st.st_size)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _path_of(self, h: str) -> str:
        # Paths as strings, remembered for the hot set (pathlib joins cost
        # microseconds); emptied when full, like any cheap memo.
        if len(self._paths) >= 4096:
            self._paths.clear()
        path = self._paths[h] = str(self.path(h))
        return path

    def read(self, key: str, h: str, now: float) -> Read:
        path = self.path(h)
        try:
            f = open(path, "rb")  # noqa: SIM115 - handed to the caller inside a FileBlob
        except FileNotFoundError:
            self.verified.pop(h, None)
            return Read("missing")
        except OSError as exc:
            return Read("error", detail=str(exc))
        keep_open = False
        st: os.stat_result | None = None
        try:
            st = os.fstat(f.fileno())
            meta, offset = read_meta_of(key, f, st.st_size)
            if meta.expires_at + self.max_stale < now:
                self.verified.pop(h, None)
                unlink_if_same(path, st)
                return Read("expired")
            signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            mark = self.verified.get(h)
            verified = mark is not None and mark.signature == signature
            entry: Blob | FileBlob
            if meta.size <= self.inline_max_bytes:
                body = f.read(meta.size)
                if len(body) != meta.size:
                    raise Corrupt("body shorter than its header says")
                if not verified and digest_of(body) != meta.digest:
                    raise Corrupt("body digest mismatch")
                entry = Blob(meta, body)
            else:
                # Verified through this very fd: whatever replaces or removes
                # the path from now on, the caller sends these checked bytes.
                if not verified and hash_body(f, meta.size) != meta.digest:
                    raise Corrupt("body digest mismatch")
                f.seek(offset)
                entry = FileBlob(meta, f, offset)
                keep_open = True
            self.verified[h] = Mark(signature, meta, offset)
            if time.time() - st.st_mtime > TOUCH_INTERVAL and os.utime in os.supports_fd:
                with contextlib.suppress(OSError):
                    os.utime(f.fileno())
            return Read("hit", entry, st.st_size)
        except Corrupt as exc:
            self.verified.pop(h, None)
            unlink_if_same(path, st)
            return Read("corrupt", detail=str(exc))
        except Foreign as exc:
            return Read("foreign", detail=str(exc))
        except OSError as exc:
            return Read("error", detail=str(exc))
        finally:
            if not keep_open:
                f.close()

    def write(self, h: str, header: bytes, body: bytes) -> OSError | None:
        path = self.path(h)
        self.verified.pop(h, None)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(path) as f:
                f.write(header)
                f.write(body)
            return None
        except OSError as exc:
            return exc

    def refresh(self, key: str, h: str, header: bytes, meta: ObjectMeta) -> Refreshed:
        path = self.path(h)
        try:
            src = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            self.verified.pop(h, None)
            return Refreshed("missing")
        except OSError as exc:
            return Refreshed("error", detail=str(exc))
        with src:
            st: os.stat_result | None = None
            try:
                st = os.fstat(src.fileno())
                old, _offset = read_meta_of(key, src, st.st_size)
                if (old.digest, old.size) != (meta.digest, meta.size):
                    return Refreshed("mismatch", detail="new metadata describes other bytes")
                self.verified.pop(h, None)
                with atomic_writer(path) as dst:
                    dst.write(header)
                    # Copy and verify in one pass: never bless bad bytes with new meta.
                    if hash_body(src, meta.size, dst) != meta.digest:
                        raise Corrupt("body digest mismatch")
                return Refreshed("ok", len(header) + meta.size)
            except Corrupt as exc:
                self.verified.pop(h, None)
                unlink_if_same(path, st)
                return Refreshed("corrupt", detail=str(exc))
            except Foreign:
                return Refreshed("missing")
            except OSError as exc:
                return Refreshed("error", detail=str(exc))

    def unlink(self, hashes: list[str]) -> int:
        """Remove these entry files; returns how many existed."""
        removed = 0
        for h in hashes:
            self.verified.pop(h, None)
            removed += unlink(self.path(h))
        return removed

    def sweep(self) -> list[Path]:
        """Create root, remove dead temp files, list entry files (no stat, no open)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.listdir(self.root)  # unreadable root: fail start() now, not every request later
        cutoff = time.time() - self.temp_grace
        removed = remove_temps(self.root, cutoff)  # writable() probes
        entries: list[Path] = []
        for folder in shard_dirs(self.root):
            removed += remove_temps(folder, cutoff)
            prefix = folder.parent.name + folder.name
            entries.extend(folder / name for name in entry_names(folder)
                           if name.startswith(prefix))
        if removed:
            log.info("disk cache: removed %d left-over temp files", removed)
        return entries

    def scan(self, paths: list[Path], now: float) -> tuple[list[Found], int, int]:
        """Read the header of each file: (entries, corrupt removed, expired removed)."""
        found: list[Found] = []
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
                    key, meta, _offset = read_meta(f, st.st_size)
                    if key_hash(key) != path.name:
                        raise Corrupt("file name does not match its key")
                except Corrupt as exc:
                    log.debug("disk cache: removing corrupt %s: %s", path, exc)
                    unlink_if_same(path, st)
                    corrupt += 1
                    continue
                except Foreign:
                    continue
                except OSError as exc:
                    log.warning("disk cache: cannot read %s: %s", path, exc)
                    continue
            if meta.expires_at + self.max_stale < now:
                unlink_if_same(path, st)
                expired += 1
                continue
            found.append(Found(st.st_mtime, path.name, st.st_size, key))
        return found, corrupt, expired

    def clear(self, prefix: str = "") -> int:
        """Remove every entry, or with ``prefix`` (``{namespace}/``) every entry but
        another namespace's: deployments sharing the root clear only their own."""
        removed = 0
        cutoff = time.time() - self.temp_grace
        self.verified.clear()
        for folder in shard_dirs(self.root):
            remove_temps(folder, cutoff)
            removed += sum(unlink(folder / name) for name in entry_names(folder)
                           if not prefix or not self._others(folder / name, prefix))
        return removed

    @staticmethod
    def _others(path: Path, prefix: str) -> bool:
        """Whether the entry at ``path`` is another namespace's (an unreadable one
        is nobody's: it goes)."""
        try:
            with open(path, "rb") as f:
                key, _meta, _offset = read_meta(f, os.fstat(f.fileno()).st_size)
        except (Corrupt, Foreign, OSError):
            return False
        return other_namespace(key, prefix)


    def probe(self) -> bool:
        """Whether a small file can be created and removed under root."""
        path = temp_path(self.root)
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


def close_orphan(cf: concurrent.futures.Future[Read]) -> None:
    """A get was cancelled while its job ran: close the file nobody will send."""
    if cf.cancelled() or cf.exception() is not None:
        return
    entry = cf.result().entry
    if entry is not None:
        entry.close()
