"""File-system helpers of the disk cache (its writes are gateway/files.py's).

Layout
    ``root/h[0:2]/h[2:4]/h`` with ``h = sha256(key)``. The key itself never
    becomes part of a path, so nothing a client can influence names a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from gateway.cache.disk.format import HEX

log = logging.getLogger(__name__)


def key_hash(key: str) -> str:
    """The file name of ``key``: sha256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def other_namespace(key: str, prefix: str) -> bool:
    """Whether the stored ``key`` belongs to a namespace other than ``prefix``'s
    (``{namespace}/``; "" owns every entry). Keys of the layout before namespaces
    (``{version}:...``, a ':' before any '/') belong to every namespace."""
    namespace, slash, _rest = key.partition("/")
    return bool(prefix and slash) and ":" not in namespace and not key.startswith(prefix)


def entry_path(root: Path, h: str) -> Path:
    return root / h[0:2] / h[2:4] / h


def unlink_if_same(path: Path, st: os.stat_result | None) -> None:
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


def unlink(path: Path) -> bool:
    """Remove ``path``; whether it was there. Failures are logged, not raised."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False  # another replica got there first
    except OSError as exc:
        log.warning("disk cache: cannot remove %s: %s", path, exc)
        return False


def shard_dirs(root: Path) -> Iterator[Path]:
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


def entry_names(folder: Path) -> list[str]:
    """Names in ``folder`` that look like a key hash; none if it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if len(e.name) == 64 and set(e.name) <= HEX]
    except OSError as exc:
        log.warning("disk cache: cannot list %s: %s", folder, exc)
        return []


def _is_shard(name: str) -> bool:
    return len(name) == 2 and set(name) <= HEX

