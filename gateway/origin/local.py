"""A folder as the origin: the embedded default and a development convenience."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

import aiofiles.os

from gateway.errors import NotFound, OriginError, TooLarge
from gateway.model import validate_key
from gateway.origin import NOT_MODIFIED, Fetched, NotModified, ObjectInfo
from gateway.origin.content import SNIFF_BYTES, checked_type
from gateway.origin.headers import epoch
from gateway.origin.presign import SignedUrl

# Nothing of these names exists as a regular file inside the root: the key is missing.
_MISSING = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG,
                      errno.EISDIR})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# NONBLOCK: opening a FIFO someone left there must not hang the thread.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LocalOrigin:
    """Keys map to files below ``root``: ``a/b/c.png`` is ``root/a/b/c.png``.

    The path is walked one component at a time from an open handle on the root,
    each opened with O_NOFOLLOW: a symlink anywhere below the root (pointing out of
    it or not) is never followed, and validated keys have no '..' to climb with, so
    no key reaches a file outside the root whatever the folder holds.
    """

    kind = "local"

    def __init__(self, root: Path, *, max_bytes: int, allowed_types: frozenset[str]) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.allowed_types = allowed_types

    @staticmethod
    def _validator(st: os.stat_result) -> str:
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'

    def _open_dir(self, parts: list[str], create: bool = False) -> int:
        """A handle on the folder ``root/parts...`` (made when ``create``)."""
        fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open(self, key: str) -> tuple[int, os.stat_result]:
        """An open regular file of ``key`` and its stat; NotFound if there is none."""
        *folders, name = validate_key(key).split("/")
        try:
            parent = self._open_dir(folders)
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=parent)
            finally:
                os.close(parent)
        except OSError as exc:
            if exc.errno in _MISSING:
                raise NotFound() from None
            raise OriginError(f"local origin: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotFound()
        return fd, st

    def _read(self, key: str, if_none_match: str | None) -> Fetched | NotModified:
        fd, st = self._open(key)
        with os.fdopen(fd, "rb") as fh:
            validator = self._validator(st)
            if if_none_match is not None and if_none_match == validator:
                return NOT_MODIFIED
            if st.st_size > self.max_bytes:
                raise TooLarge(f"{st.st_size} bytes is over origin.max_bytes")
            try:
                body = fh.read(self.max_bytes + 1)
            except OSError as exc:
                raise OriginError(f"local origin: {exc.strerror}") from None
        if len(body) > self.max_bytes:
            raise TooLarge("object grew over origin.max_bytes while read")
        content_type = checked_type(body, None, self.allowed_types)
        return Fetched(body, content_type, epoch(st.st_mtime), validator)

    def _probe(self, key: str) -> ObjectInfo:
        """What _read would refuse, from the size and the first bytes only."""
        fd, st = self._open(key)
        with os.fdopen(fd, "rb") as fh:
            if st.st_size > self.max_bytes:
                raise TooLarge(f"{st.st_size} bytes is over origin.max_bytes")
            try:
                head = fh.read(SNIFF_BYTES)
            except OSError as exc:
                raise OriginError(f"local origin: {exc.strerror}") from None
        checked_type(head, None, self.allowed_types)
        return ObjectInfo(st.st_size, epoch(st.st_mtime), self._validator(st))

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        return await asyncio.to_thread(self._read, image_id, if_none_match)

    def _write(self, key: str, body: bytes) -> None:
        *folders, name = validate_key(key).split("/")
        # A random name in the target's folder (a rename never crosses file systems),
        # holding a control character (DEL) that no valid key has: no request can
        # name it, half-written or left behind by a crash. (".upload-x" is a key.)
        tmp = f".upload\x7f{secrets.token_hex(8)}"
        parent = -1
        try:
            parent = self._open_dir(folders, create=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666, dir_fd=parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError as exc:
            raise OriginError(f"local origin: cannot store: {exc.strerror}") from None
        finally:
            if parent >= 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=parent)
                os.close(parent)

    async def store(self, image_id: str, body: bytes, content_type: str) -> None:
        """Atomically replace the file (the type is sniffed again when read)."""
        await asyncio.to_thread(self._write, image_id, body)

    async def probe(self, image_id: str) -> ObjectInfo:
        return await asyncio.to_thread(self._probe, image_id)

    async def url(self, image_id: str) -> SignedUrl | None:
        return None

    async def ping(self) -> bool:
        return bool(await aiofiles.os.path.isdir(self.root))

    async def close(self) -> None:
        return None
