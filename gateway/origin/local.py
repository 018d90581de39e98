"""A folder as the origin: the embedded default and a development convenience."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import stat
from pathlib import Path

import aiofiles
import aiofiles.os

from gateway.errors import NotFound, OriginError, TooLarge
from gateway.model import validate_image_id
from gateway.origin import NOT_MODIFIED, Fetched, NotModified, ObjectInfo
from gateway.origin.content import SNIFF_BYTES, checked_type
from gateway.origin.presign import SignedUrl


class LocalOrigin:
    kind = "local"

    def __init__(self, root: Path, *, max_bytes: int, allowed_types: frozenset[str]) -> None:
        self.root = root.resolve()
        self.max_bytes = max_bytes
        self.allowed_types = allowed_types

    def _path(self, image_id: str) -> Path:
        validate_image_id(image_id)  # one segment, no leading dot: cannot leave root
        path = self.root / image_id
        if path.parent != self.root:
            raise NotFound()
        return path

    @staticmethod
    def _validator(st: os.stat_result) -> str:
        return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'

    async def _stat(self, image_id: str) -> os.stat_result:
        try:
            st = await aiofiles.os.stat(self._path(image_id))
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound() from None
        except OSError as exc:
            raise OriginError(f"local origin: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound()
        return st

    async def fetch(self, image_id: str, if_none_match: str | None = None
                    ) -> Fetched | NotModified:
        st = await self._stat(image_id)
        validator = self._validator(st)
        if if_none_match is not None and if_none_match == validator:
            return NOT_MODIFIED
        if st.st_size > self.max_bytes:
            raise TooLarge(f"{st.st_size} bytes is over origin.max_bytes")
        try:
            async with aiofiles.open(self._path(image_id), "rb") as fh:
                body = await fh.read(self.max_bytes + 1)
        except FileNotFoundError:
            raise NotFound() from None
        except OSError as exc:
            raise OriginError(f"local origin: {exc.strerror}") from None
        if len(body) > self.max_bytes:
            raise TooLarge("object grew over origin.max_bytes while read")
        content_type = checked_type(body, None, self.allowed_types)
        return Fetched(body, content_type, int(st.st_mtime), validator)

    def _write(self, image_id: str, body: bytes) -> None:
        path = self._path(image_id)
        # A dot name: never an image id, so never served half-written.
        tmp = self.root / f".upload-{secrets.token_hex(8)}"
        try:
            with open(tmp, "xb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise OriginError(f"local origin: cannot store: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    async def store(self, image_id: str, body: bytes, content_type: str) -> None:
        """Atomically replace the file (the type is sniffed again when read)."""
        await asyncio.to_thread(self._write, image_id, body)

    async def probe(self, image_id: str) -> ObjectInfo:
        st = await self._stat(image_id)
        if st.st_size > self.max_bytes:
            raise TooLarge(f"{st.st_size} bytes is over origin.max_bytes")
        try:
            async with aiofiles.open(self._path(image_id), "rb") as fh:
                head = await fh.read(SNIFF_BYTES)
        except FileNotFoundError:
            raise NotFound() from None
        except OSError as exc:
            raise OriginError(f"local origin: {exc.strerror}") from None
        checked_type(head, None, self.allowed_types)
        return ObjectInfo(st.st_size, int(st.st_mtime), self._validator(st))

    async def url(self, image_id: str) -> SignedUrl | None:
        return None

    async def ping(self) -> bool:
        return bool(await aiofiles.os.path.isdir(self.root))

    async def close(self) -> None:
        return None
