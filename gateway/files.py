"""The project's one atomic file write, and the sweep of writes that died midway.

Both the disk cache and the workers' shared stats folder write files that other
processes read while they are written, so this is a leaf both import.

Writes
    A temp file (``.tmp-<random>``) in the target's folder is written, fsynced
    and ``os.replace``d over the target, then the folder is fsynced (best
    effort). Readers -- in this process or another replica sharing the folder --
    therefore see the old or the new whole file, never a mix. The writer holds
    an exclusive ``flock`` on its temp file until the rename; ``remove_temps``
    removes every temp file it can lock (its writer died), whatever its age.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

log = logging.getLogger(__name__)

#: Temp files start with a dot: never a cache entry's name, nor an object key.
TEMP_PREFIX: Final = ".tmp-"


def temp_path(folder: Path) -> Path:
    return folder / f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def lock_temp(fd: int) -> None:
    """Hold an exclusive lock while the file is written: a sweeper that can take the
    lock knows its writer died (see remove_temps)."""
    with contextlib.suppress(OSError):  # no lock support: the mtime rule covers it
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def fsync_dir(path: Path) -> None:
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


@contextlib.contextmanager
def atomic_writer(path: Path, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """A file to write ``path`` through: readers (this process or another sharing the
    folder) see the old or the new whole file, never a mix, and a failure leaves
    neither a partial ``path`` nor a temp file.

    The temp file lives in the same folder (one file system, so the rename is
    atomic) and is locked until it is renamed, which happens while it is still open:
    a sweeper never sees it unlocked. ``durable`` adds the fsyncs that make the new
    file survive a power cut.
    """
    tmp = temp_path(path.parent)
    renamed = False
    try:
        with open(tmp, "xb") as f:
            lock_temp(f.fileno())
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            renamed = True
        if durable:
            fsync_dir(path.parent)
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    with atomic_writer(path, durable=durable) as f:
        f.write(data)


def remove_temps(folder: Path, cutoff: float) -> int:
    """Remove temp files whose writer is gone: a live writer holds an exclusive
    flock on its temp file until it is renamed, and the kernel drops the lock
    when the writer dies, so "can we lock it" tells a crashed write from one in
    progress in another process or replica on this host. Where locks are not
    supported, files older than ``cutoff`` are taken as abandoned."""
    try:
        with os.scandir(folder) as it:
            temps = [e.path for e in it if e.name.startswith(TEMP_PREFIX)]
    except OSError as exc:
        log.warning("cannot list %s: %s", folder, exc)
        return 0
    removed = 0
    for path in temps:
        try:
            if _abandoned(path, cutoff):
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)
    return removed


def _abandoned(path: str, cutoff: float) -> bool:
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            return os.fstat(f.fileno()).st_mtime < cutoff
        return True
